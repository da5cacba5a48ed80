"""COCO export and CocoDetectionDataset: round trip, label map, crowds, and every bad annotation."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import pytest
import torch
from PIL import Image
from torchvision.datasets import CocoDetection

from rcnn_lab.data import AnnotationError, CocoDetectionDataset, ShapesDataset, export_coco

# val image 9 of seed 0 is empty (checked below): the round trip covers images without objects
INDICES = [0, 1, 2, 9]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ShapesDataset("val") items INDICES written as COCO: (dataset, out_dir, annotations path)."""
    ds = ShapesDataset("val", size=10)
    out = tmp_path_factory.mktemp("coco")
    return ds, out, export_coco(ds, out, indices=INDICES)


def _write(tmp_path, images=None, annotations=None, categories=None, sizes=None):
    """A tiny COCO folder: images 1 (32x24) and 2 (20x20) as PNGs, plus the given JSON lists."""
    sizes = sizes or {1: (32, 24), 2: (20, 20)}
    for image_id, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (image_id * 60, 0, 0)).save(tmp_path / f"{image_id}.png")
    data = {
        "images": images
        if images is not None
        else [
            {"id": i, "file_name": f"{i}.png", "width": w, "height": h}
            for i, (w, h) in sizes.items()
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 32, 24], "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5, 5, 4, 4], "iscrowd": 0},
        ],
        "categories": categories
        if categories is not None
        else [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    for ann in data["annotations"]:
        ann.setdefault("area", 1.0)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_export_writes_pngs_and_coco_json(exported):
    ds, out, ann_path = exported
    assert ann_path == out / "annotations.json"
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"{i:06d}.png" for i in range(len(INDICES))
    ]
    data = json.loads(ann_path.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == list(enumerate(ds.CLASSES))[1:]
    assert [img["id"] for img in data["images"]] == INDICES
    assert {(img["width"], img["height"]) for img in data["images"]} == {(160, 160)}


def test_round_trip_through_torchvision_coco_detection(exported):
    ds, out, ann_path = exported
    with contextlib.redirect_stdout(io.StringIO()):
        reader = CocoDetection(str(out / "images"), str(ann_path))
    assert reader.ids == INDICES
    for position, index in enumerate(INDICES):
        _, anns = reader[position]
        _, target = ds[index]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        torch.testing.assert_close(xyxy, target["boxes"], rtol=0, atol=1e-4)
        assert [a["category_id"] for a in anns] == target["labels"].tolist()


def test_round_trip_through_coco_detection_dataset(exported):
    ds, out, ann_path = exported
    coco = CocoDetectionDataset(out / "images", ann_path)
    assert coco.class_names == list(ds.CLASSES) and coco.num_classes == 7
    assert coco.label_to_category_id == {k: k for k in range(1, 7)}
    assert len(coco) == len(INDICES)
    empty = 0
    for position, index in enumerate(INDICES):
        image, target = coco[position]
        original, expected = ds[index]
        assert image.dtype == torch.float32 and image.shape == original.shape
        assert (image - original).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG rounding
        torch.testing.assert_close(target["boxes"], expected["boxes"], rtol=0, atol=1e-4)
        assert torch.equal(target["labels"], expected["labels"])
        torch.testing.assert_close(target["area"], expected["area"])
        assert target["image_id"] == expected["image_id"]
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        empty += len(target["labels"]) == 0
    assert empty >= 1  # an image without annotations reads back as empty targets


def test_label_map_is_contiguous_and_crowds_are_left_out(tmp_path):
    ds = CocoDetectionDataset(tmp_path, _write(tmp_path))
    assert ds.class_names == ["__background__", "dog", "cat"]  # category-id order: 3, 7
    assert ds.label_to_category_id == {1: 3, 2: 7}
    assert ds.category_id_to_label == {3: 1, 7: 2}
    image, target = ds[0]
    assert image.shape == (3, 24, 32)
    assert target["labels"].tolist() == [2]  # the crowd box (dog) is not a training target
    assert target["boxes"].tolist() == [[2.0, 3.0, 12.0, 11.0]]
    assert target["iscrowd"].tolist() == [0]
    assert len(ds.coco.getAnnIds(imgIds=[1])) == 2  # COCOeval still sees the crowd


def test_boxes_within_tolerance_are_clamped(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [-0.5, 2, 32.8, 5], "iscrowd": 0}]
    ds = CocoDetectionDataset(tmp_path, _write(tmp_path, annotations=anns))
    assert ds[0][1]["boxes"].tolist() == [[0.0, 2.0, 32.0, 7.0]]


@pytest.mark.parametrize(
    ("change", "file_part", "image_id", "problem"),
    [
        ("missing_file", "2.png", 2, "the image file is missing"),
        ("outside", "ann.json", 1, "lies outside the 32x24 image"),
        ("x2_le_x1", "ann.json", 1, "has x2 <= x1"),
        ("unknown_category", "ann.json", 2, "unknown category_id 99"),
        ("unknown_image", "ann.json", 5, "refers to an unknown image"),
        ("text_bbox", "ann.json", 2, "is not [x, y, width, height] in numbers"),
        ("nan_bbox", "ann.json", 2, "is not finite"),
    ],
)
def test_bad_annotations_name_file_image_and_problem(
    tmp_path, caplog, change, file_part, image_id, problem
):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 8], "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [5, 5, 4, 4], "iscrowd": 0},
    ]
    if change == "outside":
        anns[0]["bbox"] = [20, 3, 30, 8]
    elif change == "x2_le_x1":
        anns[0]["bbox"] = [20, 3, 0, 8]
    elif change == "unknown_category":
        anns[1]["category_id"] = 99
    elif change == "text_bbox":
        anns[1]["bbox"] = ["5", "5", "4", "4"]
    elif change == "nan_bbox":
        anns[1]["bbox"] = [5, 5, float("nan"), 4]
    elif change == "unknown_image":
        anns.append({"id": 3, "image_id": 5, "category_id": 3, "bbox": [1, 1, 2, 2]})
    path = _write(tmp_path, annotations=anns)
    if change == "missing_file":
        (tmp_path / "2.png").unlink()
    with pytest.raises(AnnotationError) as info:
        CocoDetectionDataset(tmp_path, path)
    message = str(info.value)
    assert file_part in message and f"image id {image_id}" in message and problem in message
    assert info.value.image_id == image_id and file_part in info.value.file

    with caplog.at_level(logging.WARNING, logger="rcnn_lab.data"):
        ds = CocoDetectionDataset(tmp_path, path, skip_bad=True)
    assert problem in caplog.text and f"image id {image_id}" in caplog.text
    assert ds.ids == [i for i in (1, 2) if i != image_id]
    for i in range(len(ds)):
        ds[i]  # the images left are readable


def test_unreadable_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    for skip_bad in (False, True):  # a file that cannot be read cannot be skipped
        with pytest.raises(AnnotationError, match=r"broken\.json: cannot read COCO annotations"):
            CocoDetectionDataset(tmp_path, path, skip_bad=skip_bad)
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(AnnotationError, match="broken.json: the JSON has no list 'categories'"):
        CocoDetectionDataset(tmp_path, path)


def test_corrupt_or_resized_image_fails_when_read(tmp_path):
    path = _write(tmp_path)
    (tmp_path / "2.png").write_bytes(b"not a png")
    ds = CocoDetectionDataset(tmp_path, path)  # the file exists: the check is lazy
    with pytest.raises(AnnotationError, match=r"2\.png: image id 2: cannot read the image"):
        ds[1]
    Image.new("RGB", (21, 20)).save(tmp_path / "2.png")
    with pytest.raises(AnnotationError, match="image id 2: the image is 21x20 but the annotations"):
        ds[1]
