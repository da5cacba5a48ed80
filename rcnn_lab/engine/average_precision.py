"""Average precision from scratch: match, trace the precision-recall curve, integrate it.

A detector is scored class by class. Its detections, sorted by score over the whole dataset,
are matched greedily to the ground truth (Everingham et al. 2010, PASCAL VOC, Sec. 4.2; Lin et
al. 2014, COCO, and cocoapi's ``cocoeval.py``); each prefix of that ranking gives one point of the
precision-recall curve, and the area under its monotone envelope is the average precision (AP).
Two ways of taking that area are given here: VOC's all-point interpolation and COCO's
101-point one. With the same matching rules as ``pycocotools`` they reproduce ``COCOeval``'s
per-class numbers (to ~1e-15; ``tests/test_evaluate.py`` checks it).

Shapes: D detections, G ground-truth boxes, R recall thresholds.
Boxes are (x1, y1, x2, y2) in pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rcnn_lab.ops import box_area, box_iou

#: COCOeval's IoU thresholds 0.50, 0.55, ..., 0.95, built by the very expression pycocotools uses.
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(
    np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True).tolist()
)
#: COCOeval's 101 recall thresholds 0.00, 0.01, ..., 1.00 (same expression as pycocotools).
COCO_RECALL_THRESHOLDS: tuple[float, ...] = tuple(
    np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True).tolist()
)
#: Index in the result of :func:`match_detections` for a detection that matched nothing.
UNMATCHED = -1
# COCOeval caps every IoU threshold at 1 - 1e-10 so that a perfect box still passes a threshold of 1
_MAX_THRESHOLD = 1 - 1e-10


class PrecisionRecall(NamedTuple):
    """The precision-recall curve of one class, one point per ranked detection.

    Detections that fell on a crowd region are left out (they count neither way).

    Attributes:
        recall: [D] float64, true positives so far / ``num_gt``; NaN when ``num_gt`` is 0.
        precision: [D] float64, true positives so far / detections so far.
        scores: [D] the detection scores, highest first.
        true_positive: [D] bool, whether each ranked detection matched a ground-truth box.
        num_gt: number of ground-truth boxes of the class (crowd regions not counted).
    """

    recall: Tensor
    precision: Tensor
    scores: Tensor
    true_positive: Tensor
    num_gt: int


def _overlaps(boxes: Tensor, gt_boxes: Tensor, gt_iscrowd: Tensor) -> Tensor:
    """[D, G] IoU, except intersection / detection area for crowd regions (as COCOeval)."""
    overlaps = box_iou(boxes, gt_boxes)  # [D, G]
    if gt_iscrowd.any():
        crowd = gt_boxes[gt_iscrowd]  # [G_crowd, 4]
        top_left = torch.max(boxes[:, None, :2], crowd[None, :, :2])  # [D, G_crowd, 2]
        bottom_right = torch.min(boxes[:, None, 2:], crowd[None, :, 2:])  # [D, G_crowd, 2]
        inter = (bottom_right - top_left).clamp(min=0).prod(-1)  # [D, G_crowd]
        # a crowd region covers many objects: a detection inside it is "on" it whatever its size
        overlaps[:, gt_iscrowd] = inter / box_area(boxes)[:, None]
    return overlaps


def match_detections(
    boxes: Tensor, gt_boxes: Tensor, iou_threshold: float, gt_iscrowd: Tensor | None = None
) -> Tensor:
    """Greedy matching of one image's detections of one class, exactly as COCOeval does.

    In rank order, each detection takes the still unmatched ground-truth box it overlaps most,
    if that IoU is >= ``iou_threshold`` (ties go to the later box, as in COCOeval). Only when no
    regular box qualifies may it fall on a crowd region (overlap = intersection / detection
    area), which can absorb any number of detections. A detection left without a box is a false
    positive; a second detection of an already matched object therefore is one too.

    Args:
        boxes: [D, 4] detections, already sorted by decreasing score.
        gt_boxes: [G, 4] ground-truth boxes of the same image and class.
        iou_threshold: the smallest IoU that counts as a hit (0.5 for AP50).
        gt_iscrowd: [G] bool or 0/1, crowd regions; None means no crowd.

    Returns:
        [D] int64: the index of the matched ground-truth box, or :data:`UNMATCHED` (-1).
    """
    matches = torch.full((len(boxes),), UNMATCHED, dtype=torch.int64, device=boxes.device)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return matches
    crowd = _as_crowd(gt_iscrowd, len(gt_boxes), gt_boxes.device)
    overlaps = _overlaps(boxes, gt_boxes, crowd)  # [D, G]
    candidates = overlaps >= min(iou_threshold, _MAX_THRESHOLD)  # [D, G]; NaN never passes
    taken = torch.zeros_like(crowd)
    # the greedy pass is sequential (a box taken by one detection is gone for the next), but
    # only detections with at least one candidate need a turn
    for d in candidates.any(dim=1).nonzero().flatten().tolist():
        pool = candidates[d] & ~crowd & ~taken
        if not pool.any():
            pool = candidates[d] & crowd
            if not pool.any():
                continue
        best = torch.where(pool, overlaps[d], -1.0)  # [G]
        g = len(best) - 1 - int(best.flip(0).argmax())  # the last of equal maxima
        matches[d] = g
        taken[g] = ~crowd[g]
    return matches


def _as_crowd(gt_iscrowd: Tensor | None, num_gt: int, device: torch.device) -> Tensor:
    """[G] bool crowd flags (all False when ``gt_iscrowd`` is None)."""
    if gt_iscrowd is None:
        return torch.zeros(num_gt, dtype=torch.bool, device=device)
    return torch.as_tensor(gt_iscrowd, device=device).bool().reshape(num_gt)


def _ranked(scores: Tensor, max_detections: int | None) -> Tensor:
    """Indices of the ``max_detections`` best scores, highest first, ties in input order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order if max_detections is None else order[:max_detections]


def precision_recall(
    detections: Sequence[Mapping[str, Tensor]],
    ground_truth: Sequence[Mapping[str, Tensor]],
    iou_threshold: float = 0.5,
    *,
    label: int | None = None,
    max_detections: int | None = None,
) -> PrecisionRecall:
    """The precision-recall curve of one class over a dataset, with COCOeval's matching rules.

    Args:
        detections: per image, a dict with ``boxes`` [D_i, 4] and ``scores`` [D_i] (and
            ``labels`` [D_i] when ``label`` is given).
        ground_truth: per image (same order), a dict with ``boxes`` [G_i, 4], optional
            ``iscrowd`` [G_i] (crowd regions are neither hits nor misses) and ``labels`` [G_i]
            when ``label`` is given.
        iou_threshold: the smallest IoU that counts as a hit, see :func:`match_detections`.
        label: keep only the detections and boxes of this class; None keeps all of them.
        max_detections: keep only this many best detections per image (COCOeval's ``maxDets``,
            which it applies per image AND per class); None keeps all.

    Ties in score are ranked by image order, then by order within the image, as COCOeval does
    when the images are listed by increasing ``image_id``.

    Returns:
        The curve, see :class:`PrecisionRecall`; feed its ``recall`` and ``precision`` to
        :func:`average_precision` or :func:`coco_interpolated_ap`.

    Raises:
        ValueError: no images, or ``detections`` and ``ground_truth`` differ in length.
    """
    if len(detections) == 0:
        raise ValueError("precision_recall needs at least one image, got none")
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"detections and ground_truth must list the same images, got {len(detections)} "
            f"and {len(ground_truth)}"
        )
    scores, hits, num_gt = [], [], 0
    for dets, gts in zip(detections, ground_truth):
        boxes, det_scores, gt_boxes = dets["boxes"], dets["scores"], gts["boxes"]
        crowd = _as_crowd(gts.get("iscrowd"), len(gt_boxes), gt_boxes.device)
        if label is not None:
            boxes, det_scores = boxes[dets["labels"] == label], det_scores[dets["labels"] == label]
            gt_boxes, crowd = gt_boxes[gts["labels"] == label], crowd[gts["labels"] == label]
        order = _ranked(det_scores, max_detections)
        matches = match_detections(boxes[order].double(), gt_boxes.double(), iou_threshold, crowd)
        matched = matches != UNMATCHED  # [D_i]
        on_crowd = torch.zeros_like(matched)
        on_crowd[matched] = crowd[matches[matched]]
        scores.append(det_scores[order][~on_crowd])
        hits.append(matched[~on_crowd])
        num_gt += int((~crowd).sum())
    scores, hits = torch.cat(scores), torch.cat(hits)  # [D], [D]
    order = _ranked(scores, None)
    scores, hits = scores[order], hits[order]
    true_positives = hits.double().cumsum(0)  # [D]
    false_positives = (~hits).double().cumsum(0)  # [D]
    recall = true_positives / num_gt if num_gt else torch.full_like(true_positives, float("nan"))
    precision = true_positives / (true_positives + false_positives)
    return PrecisionRecall(recall, precision, scores, hits, num_gt)


def interpolated_precision(precision: Tensor) -> Tensor:
    """[D] the monotone envelope of a precision curve: the best precision at this recall or more.

    p_interp(k) = max_{j >= k} p(j), so a later, higher precision lifts the dips before it.
    """
    return precision.flip(0).cummax(0).values.flip(0)


def average_precision(recall: Tensor, precision: Tensor) -> float:
    """Area under the all-point interpolated precision-recall curve (PASCAL VOC 2010 onwards).

    AP = sum_k (r_k - r_{k-1}) * p_interp(k), with r_0 = 0: each gain in recall is weighted by
    the envelope precision where it is reached; recall never reached contributes 0.

    Args:
        recall: [D] non-decreasing recall after each ranked detection.
        precision: [D] precision after each ranked detection.

    Returns:
        The AP in [0, 1]; 0 for an empty curve (no detections); NaN when recall is NaN (the class
        has no ground truth: check :attr:`PrecisionRecall.num_gt` first, COCOeval skips it).
    """
    if len(recall) == 0:
        return 0.0
    if recall.isnan().any():
        return float("nan")
    gains = torch.diff(recall, prepend=recall.new_zeros(1))  # [D]
    return float((gains * interpolated_precision(precision)).sum())


def coco_interpolated_ap(
    recall: Tensor, precision: Tensor, recall_thresholds: Sequence[float] = COCO_RECALL_THRESHOLDS
) -> float:
    """COCO's AP: the envelope precision averaged over 101 recall levels 0, 0.01, ..., 1.

    At each level r it reads p_interp at the first detection whose recall is >= r, and 0 when
    recall r is never reached; COCOeval does exactly this (``np.searchsorted(..., 'left')``).
    Averaged over :data:`COCO_IOU_THRESHOLDS` it gives the COCO AP@[.5:.95] of one class.

    Args:
        recall: [D] non-decreasing recall after each ranked detection.
        precision: [D] precision after each ranked detection.
        recall_thresholds: [R] increasing recall levels.

    Returns:
        The AP; 0 for an empty curve; NaN when recall is NaN (no ground truth).
    """
    if recall.isnan().any():
        return float("nan")
    levels = torch.tensor(recall_thresholds, dtype=recall.dtype, device=recall.device)  # [R]
    first = torch.searchsorted(recall.contiguous(), levels, side="left")  # [R]
    reached = first < len(recall)  # [R]
    sampled = torch.zeros_like(levels)  # [R]
    sampled[reached] = interpolated_precision(precision)[first[reached]]
    return float(sampled.mean())
