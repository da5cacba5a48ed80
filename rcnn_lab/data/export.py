"""Write a detection dataset to disk in COCO format: a PNG folder and one JSON file.

The result reads back with ``torchvision.datasets.CocoDetection(out_dir / "images",
out_dir / "annotations.json")``, with :class:`CocoDetectionDataset`, and with pycocotools (for
evaluation with ``COCOeval``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image


def _categories(dataset) -> tuple[list[dict], dict[int, int]]:
    """COCO categories of a dataset and its label -> category id map."""
    names = list(getattr(dataset, "class_names", None) or dataset.CLASSES)
    label_to_id = getattr(dataset, "label_to_category_id", None) or {
        label: label for label in range(1, len(names))
    }
    categories = [
        {"id": int(label_to_id[label]), "name": names[label], "supercategory": "object"}
        for label in range(1, len(names))
    ]
    return categories, label_to_id


def _png(image: torch.Tensor, path: Path) -> None:
    """Save a [3, H, W] float image in [0, 1] as an 8-bit RGB PNG."""
    pixels = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8)
    Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy()).save(path)  # [H, W, 3]


def export_coco(dataset, out_dir, indices: Iterable[int] | None = None) -> Path:
    """Write ``dataset`` (or the items at ``indices``) as ``images/000000.png ...`` + annotations.

    Args:
        dataset: yields ``(image [3, H, W] float in [0, 1], target)`` with ``boxes`` [N, 4]
            (x1, y1, x2, y2, pixels), ``labels`` [N] in 1..C-1, ``image_id`` and optionally
            ``area`` [N], ``iscrowd`` [N]; it names its classes with ``class_names`` or
            ``CLASSES`` (index 0 the background) and may map labels to category ids with
            ``label_to_category_id`` (default: category id = label).
        out_dir: folder to create or fill.
        indices: which items to write (default: all, in order).

    Returns:
        The path of ``annotations.json``: COCO bboxes (x, y, width, height) in pixels, image
        ids from the targets, annotation ids 1, 2, ..., categories with their names.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    categories, label_to_id = _categories(dataset)
    images, annotations, seen = [], [], set()
    for position, index in enumerate(range(len(dataset)) if indices is None else indices):
        image, target = dataset[index]
        image_id = int(target["image_id"])
        if image_id in seen:
            raise ValueError(f"item {index} repeats image id {image_id}: COCO needs unique ids")
        seen.add(image_id)
        file_name = f"{position:06d}.png"
        _png(image, out_dir / "images" / file_name)
        height, width = image.shape[-2:]
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        boxes = target["boxes"].tolist()
        areas = target["area"].tolist() if "area" in target else [None] * len(boxes)
        crowd = target["iscrowd"].tolist() if "iscrowd" in target else [0] * len(boxes)
        for (x1, y1, x2, y2), label, area, iscrowd in zip(
            boxes, target["labels"].tolist(), areas, crowd
        ):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label_to_id[label]),
                    "bbox": [x1, y1, w, h],
                    "area": w * h if area is None else area,
                    "iscrowd": int(iscrowd),
                }
            )
    path = out_dir / "annotations.json"
    coco = {
        "info": {"description": f"exported by rcnn_lab from {dataset!r}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path.write_text(json.dumps(coco))
    return path
