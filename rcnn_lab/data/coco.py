"""Your own data in COCO format, read by torchvision's ``CocoDetection`` (pycocotools).

``torchvision.datasets.CocoDetection`` reads the JSON and the images; torchvision's
``wrap_dataset_for_transforms_v2`` turns its annotations into ``BoundingBoxes``. This module
adds what a detector needs on top: contiguous labels 1..C-1 (0 = background) with the map back
to category ids, crowd boxes left out of the targets, and checks with clear errors.

Checked eagerly when the dataset is built: the JSON parses and has images/annotations/categories;
each image has an id, a file name, a positive size and an existing file; each annotation has a
known image and category and a box of 4 finite numbers with x2 > x1, y2 > y1, inside the image
(``BOX_TOLERANCE_PX`` of slack, then clamped). Checked lazily when an image is read: it decodes
and has the annotated size. Crowd annotations are checked like the others.

Shapes: N boxes of an image; C classes, background included; H x W pixels.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
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

_TARGET_KEYS = {"image_id", "boxes", "labels", "area", "iscrowd"}


def _read(root, ann_file) -> CocoDetection:
    """torchvision's reader, with any failure to read the JSON named after the file."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return CocoDetection(str(root), str(ann_file))
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise AnnotationError(ann_file, None, f"cannot read COCO annotations: {e!r}") from e


def _check_structure(data, ann_file) -> None:
    """Raise unless the JSON is a dict with lists of images, annotations and categories."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(ann_file, None, f"the JSON has no list {key!r}")
    for c in data["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            raise AnnotationError(ann_file, None, f"category {c!r} needs an integer id and a name")
    ids = [c["id"] for c in data["categories"]]
    if len(set(ids)) != len(ids):
        raise AnnotationError(ann_file, None, f"category ids repeat: {sorted(ids)}")


def _image_problems(images: list, root, ann_file) -> list[Problem]:
    """Problems of the image records: ids, file names, sizes, files on disk."""
    problems, seen = [], set()
    for img in images:
        image_id = img.get("id")
        if image_id in seen:
            problems.append(Problem(ann_file, image_id, "the image id repeats"))
        seen.add(image_id)
        name = img.get("file_name")
        if not isinstance(name, str):
            problems.append(Problem(ann_file, image_id, f"file_name {name!r} is not a string"))
            continue
        problem = size_problem(img.get("width"), img.get("height"))
        if problem:
            problems.append(Problem(ann_file, image_id, f"({name}) {problem}"))
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            problems.append(Problem(path, image_id, "the image file is missing"))
    return problems


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _annotation_problems(data: dict, ann_file) -> list[Problem]:
    """Problems of the annotation records: image, category and box."""
    images = {img.get("id"): img for img in data["images"]}
    category_ids = {c["id"] for c in data["categories"]}
    problems = []
    for ann in data["annotations"]:
        image_id, where = ann.get("image_id"), f"annotation {ann.get('id')!r}"
        img = images.get(image_id)
        if img is None:
            problems.append(Problem(ann_file, image_id, f"{where} refers to an unknown image"))
            continue
        where = f"({img.get('file_name')}) {where}"
        if ann.get("category_id") not in category_ids:
            problem = f"{where} has an unknown category_id {ann.get('category_id')!r}"
            problems.append(Problem(ann_file, image_id, problem))
        bbox = ann.get("bbox")
        numbers = isinstance(bbox, list) and len(bbox) == 4
        if not numbers or not all(_is_number(v) for v in bbox):
            problem = f"{where} bbox {bbox!r} is not [x, y, width, height] in numbers"
            problems.append(Problem(ann_file, image_id, problem))
            continue
        x, y, w, h = bbox
        problem = box_problem(x, y, x + w, y + h, img.get("width") or 0, img.get("height") or 0)
        if problem:
            problems.append(Problem(ann_file, image_id, f"{where} {problem}"))
    return problems


class CocoDetectionDataset(Dataset):
    """A COCO-format detection dataset (JSON + image folder) in the detectors' target format.

    Args:
        root: folder the images' ``file_name`` s are relative to.
        ann_file: the COCO JSON file.
        transforms: called as ``transforms(image, target)`` with a ``tv_tensors.Image``
            [3, H, W] float32 in [0, 1] and ``target["boxes"]`` a ``tv_tensors.BoundingBoxes``.
        skip_bad: leave out (and log) the images with a bad annotation or a missing file,
            instead of raising :class:`AnnotationError`. A JSON that cannot be read always raises.

    Items are ``(image [3, H, W] float32 in [0, 1], target)``: ``boxes`` [N, 4] float32 (x1, y1,
    x2, y2) pixels, ``labels`` [N] int64 in 1..C-1, ``image_id`` (the COCO image id), ``area``
    [N] float32 (from the JSON), ``iscrowd`` [N] int64 (all 0: crowd boxes are left out).

    Attributes:
        coco: the pycocotools ``COCO`` object (all annotations, crowds included: use it as the
            ground truth of ``COCOeval``).
        class_names: ``["__background__", <category names in category-id order>]``.
        label_to_category_id, category_id_to_label: the label map, both ways.
        ids: the COCO image ids of the items, in order.
    """

    def __init__(self, root, ann_file, transforms: Callable | None = None, skip_bad: bool = False):
        self.root, self.ann_file, self.transforms = str(root), str(ann_file), transforms
        reader = _read(root, ann_file)
        data = reader.coco.dataset
        _check_structure(data, self.ann_file)
        problems = _image_problems(data["images"], self.root, self.ann_file)
        problems += _annotation_problems(data, self.ann_file)
        bad = resolve(problems, skip_bad)
        reader.ids = [i for i in reader.ids if i not in bad]
        self.coco, self.ids = reader.coco, list(reader.ids)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = ["__background__"] + [str(c["name"]) for c in categories]
        self.label_to_category_id = {k + 1: c["id"] for k, c in enumerate(categories)}
        self.category_id_to_label = {cid: k for k, cid in self.label_to_category_id.items()}
        self._reader = wrap_dataset_for_transforms_v2(reader, target_keys=_TARGET_KEYS)

    @property
    def num_classes(self) -> int:
        """C, the number of classes including the background."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def _image_error(self, image_id, problem: str) -> AnnotationError:
        name = self.coco.imgs[image_id]["file_name"]
        return AnnotationError(os.path.join(self.root, name), image_id, problem)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        """``(image, target)`` of item ``index`` (see the class docstring)."""
        image_id = self.ids[index]
        try:
            image, target = self._reader[int(index) % len(self)]
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError
            raise self._image_error(image_id, f"cannot read the image: {e}") from e
        info = self.coco.imgs[image_id]
        if (image.width, image.height) != (info["width"], info["height"]):
            size = f"{image.width}x{image.height}"
            raise self._image_error(
                image_id,
                f"the image is {size} but the annotations say {info['width']}x{info['height']}",
            )
        if "boxes" not in target:  # an image without annotations
            empty = torch.zeros(0, 4)
            target = {"boxes": empty, "labels": [], "area": [], "iscrowd": []}
        keep = torch.as_tensor(target["iscrowd"], dtype=torch.int64).reshape(-1) == 0
        labels = [self.category_id_to_label[int(c)] for c in target["labels"]]
        target = {
            # within-tolerance overshoots are clamped to the image
            "boxes": clamp_to_image(target["boxes"], image.height, image.width)[keep],
            "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1)[keep],
            "image_id": image_id,
            "area": torch.as_tensor(target["area"], dtype=torch.float32).reshape(-1)[keep],
            "iscrowd": torch.zeros(int(keep.sum()), dtype=torch.int64),
        }
        image = F.to_dtype(F.to_image(image), torch.float32, scale=True)
        return to_model_format(image, target, self.transforms)
