"""VOCDetectionDataset on a tiny VOC-layout folder written by the test."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from rcnn_lab.data import VOC_CLASSES, AnnotationError, VOCDetectionDataset

_XML = """<annotation>
  <filename>{name}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
_OBJECT = """<object><name>{cls}</name><difficult>{difficult}</difficult>
  <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""

# name -> (width, height, [(class, difficult, x1, y1, x2, y2)])
FIXTURE = {
    "000001": (40, 30, [("dog", 0, 2, 3, 20, 25), ("person", 0, 10, 1, 39, 29)]),
    "000002": (24, 24, [("cat", 0, 1, 1, 10, 12), ("cat", 1, 12, 12, 23, 23)]),
    "000003": (16, 20, []),  # no objects: a background-only image
}


def _write_voc(root, fixture=FIXTURE, image_set="train"):
    """Write JPEGImages/, Annotations/*.xml, ImageSets/Main/<image_set>.txt under root."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name, (w, h, objects) in fixture.items():
        Image.new("RGB", (w, h), (90, 120, 150)).save(base / "JPEGImages" / f"{name}.jpg")
        xml_objects = "\n  ".join(
            _OBJECT.format(cls=c, difficult=d, x1=x1, y1=y1, x2=x2, y2=y2)
            for c, d, x1, y1, x2, y2 in objects
        )
        xml = _XML.format(name=name, w=w, h=h, objects=xml_objects)
        (base / "Annotations" / f"{name}.xml").write_text(xml)
    (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(fixture) + "\n")
    return base


def test_reads_boxes_labels_and_leaves_difficult_objects_out(tmp_path):
    _write_voc(tmp_path)
    ds = VOCDetectionDataset(tmp_path, year="2012", image_set="train")
    assert len(ds) == 3 and ds.image_names == ["000001", "000002", "000003"]
    assert ds.class_names == list(VOC_CLASSES) and ds.num_classes == 21
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [[2.0, 3.0, 20.0, 25.0], [10.0, 1.0, 39.0, 29.0]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert target["image_id"] == 0 and target["area"].tolist() == [18.0 * 22.0, 29.0 * 28.0]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    _, target = ds[1]
    assert target["labels"].tolist() == [VOC_CLASSES.index("cat")]  # the difficult cat is out
    image, target = ds[2]
    assert image.shape == (3, 20, 16) and target["boxes"].shape == (0, 4)
    assert target["labels"].shape == (0,) and target["image_id"] == 2


def test_keep_difficult_and_custom_classes(tmp_path):
    _write_voc(tmp_path)
    ds = VOCDetectionDataset(tmp_path, keep_difficult=True)
    assert ds[1][1]["labels"].tolist() == [VOC_CLASSES.index("cat")] * 2
    mine = ("__background__", "cat", "dog", "person")
    ds = VOCDetectionDataset(tmp_path, classes=mine)
    assert ds[0][1]["labels"].tolist() == [2, 3] and ds.label_to_category_id == {1: 1, 2: 2, 3: 3}


def _broken(change):
    fixture = {k: (w, h, list(objects)) for k, (w, h, objects) in FIXTURE.items()}
    if change == "unknown_class":
        fixture["000002"][2][0] = ("unicorn", 0, 1, 1, 10, 12)
    elif change == "x2_le_x1":
        fixture["000002"][2][0] = ("cat", 0, 10, 1, 10, 12)
    elif change == "outside":
        fixture["000002"][2][0] = ("cat", 0, 1, 1, 30, 12)
    return fixture


@pytest.mark.parametrize(
    ("change", "file_part", "problem"),
    [
        ("unknown_class", "Annotations/000002.xml", "object 0 ('unicorn') has an unknown class"),
        ("x2_le_x1", "Annotations/000002.xml", "has x2 <= x1"),
        ("outside", "Annotations/000002.xml", "lies outside the 24x24 image"),
        ("bad_xml", "Annotations/000002.xml", "cannot parse the XML"),
        ("missing_image", "JPEGImages/000002.jpg", "the image file is missing"),
    ],
)
def test_bad_annotations_name_file_image_and_problem(tmp_path, caplog, change, file_part, problem):
    base = _write_voc(tmp_path, _broken(change))
    if change == "bad_xml":
        (base / "Annotations" / "000002.xml").write_text("<annotation><size>")
    elif change == "missing_image":
        (base / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(AnnotationError) as info:
        VOCDetectionDataset(tmp_path)
    message = str(info.value)
    assert file_part in message and "image id '000002'" in message and problem in message

    with caplog.at_level(logging.WARNING, logger="rcnn_lab.data"):
        ds = VOCDetectionDataset(tmp_path, skip_bad=True)
    assert problem in caplog.text and "000002" in caplog.text
    assert ds.image_names == ["000001", "000003"] and ds.ids == [0, 2]
    assert ds[1][1]["image_id"] == 2


def test_missing_folder_or_image_set_is_named(tmp_path):
    with pytest.raises(AnnotationError, match="VOC2012: no VOC folder here"):
        VOCDetectionDataset(tmp_path)
    _write_voc(tmp_path)
    with pytest.raises(AnnotationError, match=r"Main/val\.txt: cannot read the image set"):
        VOCDetectionDataset(tmp_path, image_set="val")


def test_resized_image_fails_when_read(tmp_path):
    base = _write_voc(tmp_path)
    ds = VOCDetectionDataset(tmp_path)
    Image.new("RGB", (41, 30)).save(base / "JPEGImages" / "000001.jpg")
    with pytest.raises(AnnotationError, match="image id '000001': the image is 41x30 but its XML"):
        ds[0]
