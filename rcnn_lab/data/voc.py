"""Your own data in Pascal VOC layout, read by torchvision's ``VOCDetection``.

The layout under ``root`` is ``VOCdevkit/VOC<year>/`` with ``JPEGImages/<id>.jpg``,
``Annotations/<id>.xml`` and ``ImageSets/Main/<image_set>.txt`` (one id a line); torchvision
reads it (``download=False``: nothing is fetched) and ``wrap_dataset_for_transforms_v2`` turns
its boxes into ``BoundingBoxes``. Box coordinates are used as written in the XML, as torchvision
does (VOC's are 1-based pixel indices).

Checked eagerly, for every XML file: it parses, gives a positive image size, and each object
has a known class name and a box of integers with x2 > x1, y2 > y1, inside the image
(``BOX_TOLERANCE_PX`` of slack); the image file exists. Checked lazily: the image decodes and
has the annotated size. Objects marked ``difficult`` are left out of the targets by default, as
crowd boxes are for COCO.

Shapes: N boxes of an image; C classes, background included; H x W pixels.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import VOCDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms.v2 import functional as F

from rcnn_lab.data.transforms import to_model_format
from rcnn_lab.data.validation import (
    AnnotationError,
    Problem,
    box_problem,
    clamp_to_image,
    resolve,
    size_problem,
)

#: Pascal VOC's 20 classes in torchvision's order; index 0 is the background.
VOC_CLASSES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
    "sofa", "train", "tvmonitor",
)  # fmt: skip


def _read(root, year: str, image_set: str) -> VOCDetection:
    """torchvision's reader, with a missing folder or image-set file named in the error."""
    split_file = os.path.join(
        root, "VOCdevkit", f"VOC{year}", "ImageSets", "Main", f"{image_set}.txt"
    )
    try:
        return VOCDetection(str(root), year=year, image_set=image_set, download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        folder = os.path.join(root, "VOCdevkit", f"VOC{year}")
        raise AnnotationError(folder, None, f"no VOC folder here ({e})") from e
    except OSError as e:
        raise AnnotationError(split_file, None, f"cannot read the image set: {e}") from e


def _parse(xml_path: str, name: str, classes: dict[str, int]):
    """(objects [(label, difficult)], (width, height), problems) of one VOC XML file."""
    try:
        annotation = VOCDetection.parse_voc_xml(ET.parse(xml_path).getroot()).get("annotation")
    except (OSError, ET.ParseError) as e:
        return [], None, [Problem(xml_path, name, f"cannot parse the XML: {e}")]
    if not isinstance(annotation, dict):
        return [], None, [Problem(xml_path, name, "the root element is not <annotation>")]
    size = annotation.get("size") or {}
    try:
        width, height = int(size.get("width")), int(size.get("height"))
    except (TypeError, ValueError):
        width = height = None
    problem = size_problem(width, height)
    if problem:
        return [], None, [Problem(xml_path, name, f"<size>: {problem}")]
    objects, problems = [], []
    for k, obj in enumerate(annotation.get("object", [])):
        where = f"object {k} ({obj.get('name')!r})"
        if obj.get("name") not in classes:
            problems.append(Problem(xml_path, name, f"{where} has an unknown class name"))
            continue
        box = obj.get("bndbox") or {}
        try:  # torchvision's wrapper reads the corners with int()
            corners = [int(box[c]) for c in ("xmin", "ymin", "xmax", "ymax")]
        except (KeyError, TypeError, ValueError):
            problems.append(Problem(xml_path, name, f"{where} needs integer xmin/ymin/xmax/ymax"))
            continue
        problem = box_problem(*corners, width, height)
        if problem:
            problems.append(Problem(xml_path, name, f"{where} {problem}"))
        objects.append((classes[obj["name"]], str(obj.get("difficult", "0")).strip() == "1"))
    return objects, (width, height), problems


class VOCDetectionDataset(Dataset):
    """A Pascal-VOC-layout detection dataset in the detectors' target format.

    Args:
        root: the folder holding ``VOCdevkit/``.
        year: ``"2007"`` .. ``"2012"`` (torchvision's names).
        image_set: ``"train"``, ``"trainval"``, ``"val"`` (or ``"test"`` for 2007).
        transforms: called as ``transforms(image, target)`` with a ``tv_tensors.Image``
            [3, H, W] float32 in [0, 1] and ``target["boxes"]`` a ``tv_tensors.BoundingBoxes``.
        skip_bad: leave out (and log) the images with a bad XML, box or class, or a missing
            image file, instead of raising :class:`AnnotationError`.
        classes: class names, index 0 the background (default: VOC's 20 classes).
        keep_difficult: keep the objects marked ``difficult`` (default: leave them out).

    Items are ``(image [3, H, W] float32 in [0, 1], target)``: ``boxes`` [N, 4] float32 (x1, y1,
    x2, y2) pixels, ``labels`` [N] int64 in 1..C-1, ``image_id`` (int: the line of the image in
    the image-set file, counting from 0), ``area`` [N] float32 (box area), ``iscrowd`` [N] zeros.

    Attributes:
        class_names: ``classes`` as a list; ``label_to_category_id``: label -> label (VOC has no
            category ids; COCO export uses the labels); ``image_names``: the VOC ids of the items.
    """

    def __init__(
        self,
        root,
        year: str = "2012",
        image_set: str = "train",
        transforms: Callable | None = None,
        skip_bad: bool = False,
        classes: Sequence[str] = VOC_CLASSES,
        keep_difficult: bool = False,
    ):
        self.root, self.transforms, self.keep_difficult = str(root), transforms, keep_difficult
        self.class_names = list(classes)
        self.label_to_category_id = {k: k for k in range(1, len(self.class_names))}
        reader = _read(root, year, image_set)
        lookup = {c: k for k, c in enumerate(self.class_names) if k > 0}
        names = [os.path.splitext(os.path.basename(p))[0] for p in reader.images]
        parsed, problems = [], []
        for name, xml_path, image_path in zip(names, reader.annotations, reader.images):
            objects, size, found = _parse(xml_path, name, lookup)
            if not os.path.isfile(image_path):
                found.append(Problem(image_path, name, "the image file is missing"))
            parsed.append((objects, size))
            problems += found
        bad = resolve(problems, skip_bad)
        kept = [k for k, name in enumerate(names) if name not in bad]
        reader.images = [reader.images[k] for k in kept]
        reader.targets = [reader.targets[k] for k in kept]
        self.ids, self.image_names = kept, [names[k] for k in kept]
        self._objects = [parsed[k] for k in kept]
        self._plain = reader  # reads images without objects, which the v2 wrapper cannot
        self._reader = wrap_dataset_for_transforms_v2(reader, target_keys={"boxes"})

    @property
    def num_classes(self) -> int:
        """C, the number of classes including the background."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        """``(image, target)`` of item ``index`` (see the class docstring)."""
        index = range(len(self))[index]  # IndexError when out of range; negatives allowed
        (objects, size), name = self._objects[index], self.image_names[index]
        path = self._plain.images[index]
        try:
            if objects:
                image, target = self._reader[index]
                boxes = target["boxes"].as_subclass(Tensor).to(torch.float32)
            else:
                image, boxes = self._plain[index][0], torch.zeros(0, 4)
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError
            raise AnnotationError(path, name, f"cannot read the image: {e}") from e
        if (image.width, image.height) != size:
            problem = (
                f"the image is {image.width}x{image.height} but its XML says {size[0]}x{size[1]}"
            )
            raise AnnotationError(path, name, problem)
        labels = torch.tensor([label for label, _ in objects], dtype=torch.int64).reshape(-1)
        keep = torch.tensor([self.keep_difficult or not d for _, d in objects], dtype=torch.bool)
        boxes = clamp_to_image(boxes, size[1], size[0])[keep]  # within-tolerance overshoots
        target = {
            "boxes": boxes,
            "labels": labels[keep],
            "image_id": self.ids[index],
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.zeros(boxes.shape[0], dtype=torch.int64),
        }
        image = F.to_dtype(F.to_image(image), torch.float32, scale=True)
        return to_model_format(image, target, self.transforms)
