"""COCO bbox evaluation with pycocotools, built in memory from a dataset's targets.

The ground truth becomes a COCO dataset dict (``images``, ``categories``, ``annotations`` with
``bbox`` in (x, y, w, h)), the detections a ``loadRes`` result list, and ``COCOeval`` computes
the 12 standard numbers (Lin et al. 2014, and cocoapi's ``cocoeval.py``). pycocotools prints
progress on stdout; it is captured here, and its summary table is returned as text.

Shapes: N boxes of one image.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from rcnn_lab.ops import box_area, box_convert

#: Keys of the 12 COCO bbox metrics, in the order of ``COCOeval.stats``.
COCO_METRIC_NAMES: tuple[str, ...] = (
    "ap",  # AP @ IoU 0.50:0.95, all areas, 100 detections per image (and class)
    "ap50",  # AP @ IoU 0.50
    "ap75",  # AP @ IoU 0.75
    "ap_small",  # AP @ 0.50:0.95 for objects of area < 32^2
    "ap_medium",  # 32^2 <= area < 96^2
    "ap_large",  # area >= 96^2
    "ar_1",  # AR @ 0.50:0.95, at most 1 detection per image and class
    "ar_10",  # at most 10
    "ar_100",  # at most 100
    "ar_small",  # AR @ 100 detections for small, medium and large objects
    "ar_medium",
    "ar_large",
)
# COCOeval's marker for "no ground truth to score against" in precision, recall and stats
_ABSENT = -1
# COCOeval.params.areaRng[0] is "all"; maxDets[-1] is the largest (100)
_ALL_AREAS, _MOST_DETECTIONS = 0, -1
# pycocotools treats annotation id 0 as "no match" (dtMatches == 0): ids must start at 1
_FIRST_ANNOTATION_ID = 1


def category_ids(
    labels: Sequence[int], label_to_category_id: Mapping[int, int] | None
) -> dict[int, int]:
    """The COCO category id of each label (identity when no map is given).

    Raises:
        ValueError: a label is background (0) or missing from ``label_to_category_id``, or two
            labels share a category id.
    """
    labels = sorted(set(labels))
    if labels and labels[0] < 1:
        raise ValueError(f"labels must be >= 1 (0 is background), got {labels[0]}")
    if label_to_category_id is None:
        return {label: label for label in labels}
    missing = [label for label in labels if label not in label_to_category_id]
    if missing:
        raise ValueError(f"labels {missing} are missing from label_to_category_id")
    mapping = {label: int(label_to_category_id[label]) for label in labels}
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"label_to_category_id maps two labels to one category: {mapping}")
    return mapping


def coco_ground_truth(
    targets: Sequence[Mapping[str, Tensor | int]],
    image_ids: Sequence[int],
    label_to_category: Mapping[int, int],
    names: Mapping[int, str] | None = None,
) -> dict:
    """A COCO dataset dict of the ground truth, ready for ``COCO()``.

    Args:
        targets: per image, ``boxes`` [N, 4] (x1, y1, x2, y2), ``labels`` [N], optional
            ``iscrowd`` [N] and ``area`` [N] (the box area when absent; COCO's own files give
            the mask area, which is what its small/medium/large ranges then use).
        image_ids: the COCO image id of each target.
        label_to_category: category id of every label, see :func:`category_ids`; each becomes a
            category, with or without boxes.
        names: category name per label; the category id as text when absent.
    """
    names = names or {}
    annotations = []
    for target, image_id in zip(targets, image_ids):
        boxes = target["boxes"].double().reshape(-1, 4)  # [N, 4]
        count = len(boxes)
        areas = target.get("area")
        areas = box_area(boxes) if areas is None else areas.double().reshape(count)  # [N]
        crowd = target.get("iscrowd")
        crowd = [0] * count if crowd is None else crowd.reshape(count).int().tolist()
        labels = target["labels"].reshape(count).tolist()
        for box, label, area, is_crowd in zip(
            box_convert(boxes, "xyxy", "xywh").tolist(), labels, areas.tolist(), crowd
        ):
            annotations.append(
                {
                    "id": _FIRST_ANNOTATION_ID + len(annotations),
                    "image_id": image_id,
                    "category_id": label_to_category[label],
                    "bbox": box,
                    "area": area,
                    "iscrowd": is_crowd,
                }
            )
    categories = [
        {"id": category, "name": names.get(label, str(category))}
        for label, category in sorted(label_to_category.items())
    ]
    images = [{"id": image_id} for image_id in image_ids]
    return {"images": images, "categories": categories, "annotations": annotations}


def coco_results(
    detections: Sequence[Mapping[str, Tensor]],
    image_ids: Sequence[int],
    label_to_category: Mapping[int, int],
) -> list[dict]:
    """Detections as ``COCO.loadRes`` reads them: image_id, category_id, bbox (x, y, w, h), score.

    Args:
        detections: per image, ``boxes`` [N, 4] (x1, y1, x2, y2), ``labels`` [N], ``scores`` [N].
        image_ids: the COCO image id of each image.
        label_to_category: category id of every label, see :func:`category_ids`.
    """
    results = []
    for dets, image_id in zip(detections, image_ids):
        boxes = box_convert(dets["boxes"].double().reshape(-1, 4), "xyxy", "xywh")  # [N, 4]
        for box, label, score in zip(
            boxes.tolist(), dets["labels"].tolist(), dets["scores"].tolist()
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": label_to_category[label],
                    "bbox": box,
                    "score": score,
                }
            )
    return results


def _quiet_coco(dataset: dict) -> COCO:
    """``COCO()`` over an in-memory dataset dict, without its "creating index..." line."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_evaluate(ground_truth: dict, results: list[dict]) -> tuple[COCOeval, str]:
    """Run ``COCOeval`` (bbox, default parameters) and return it with its summary table.

    Args:
        ground_truth: a COCO dataset dict, see :func:`coco_ground_truth`.
        results: detections, see :func:`coco_results` (may be empty: ``loadRes`` would fail on
            an empty list, so an empty result set is built directly).

    Returns:
        The evaluated ``COCOeval`` (``.stats``, ``.eval["precision"]`` [T, R, K, A, M]) and the
        text that ``summarize()`` prints.
    """
    coco_gt = _quiet_coco(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            empty = {key: ground_truth[key] for key in ("images", "categories")}
            coco_dt = _quiet_coco({**empty, "annotations": []})
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    return coco_eval, summary.getvalue()


def _mean_present(values: np.ndarray) -> float:
    """Mean of the entries COCOeval filled in (> -1), NaN when there are none."""
    present = values[values > _ABSENT]
    return float(present.mean()) if present.size else math.nan


def coco_stats(coco_eval: COCOeval) -> dict[str, float]:
    """The 12 summary numbers keyed by :data:`COCO_METRIC_NAMES`, NaN where COCOeval says -1."""
    return {
        name: math.nan if value == _ABSENT else float(value)
        for name, value in zip(COCO_METRIC_NAMES, coco_eval.stats)
    }


def coco_per_category_ap(coco_eval: COCOeval) -> dict[int, tuple[float, float]]:
    """(AP@[.5:.95], AP50) of each category id, over all areas with 100 detections.

    A category without ground truth gets (NaN, NaN): COCOeval leaves its precision at -1 and
    its means skip it, so its detections (false positives all) change no number.
    """
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
    per_category = {}
    for k, category in enumerate(coco_eval.params.catIds):
        curves = precision[:, :, k, _ALL_AREAS, _MOST_DETECTIONS]  # [T, R]
        per_category[int(category)] = (_mean_present(curves), _mean_present(curves[0]))
    return per_category
