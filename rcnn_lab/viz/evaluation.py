"""Helpers for chapter 12 (evaluation): error kinds, precision-recall plots, threshold explorer.

They draw what :mod:`rcnn_lab.engine` computes: the matching of detections to ground truth is
:func:`~rcnn_lab.engine.match_detections` (COCOeval's greedy rule), the curves are
:class:`~rcnn_lab.engine.average_precision.PrecisionRecall` tuples. The error kinds follow
Hoiem et al. (2012), "Diagnosing error in object detectors", Sec. 2.

Shapes: D detections and G ground-truth boxes of one image; boxes are (x1, y1, x2, y2) pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from rcnn_lab.engine.average_precision import (
    COCO_RECALL_THRESHOLDS,
    UNMATCHED,
    PrecisionRecall,
    average_precision,
    interpolated_precision,
    match_detections,
)
from rcnn_lab.ops import box_iou
from rcnn_lab.viz.draw import draw_boxes, show_image

#: What a detection can be, best first (see :func:`classify_detections`).
DETECTION_KINDS = ("correct", "duplicate", "mislocalised", "wrong class", "background")
#: The kind of a ground-truth box that no detection matched.
MISSED = "missed"
#: One colour per kind, shared by every figure of the chapter.
KIND_COLOURS = {
    "correct": "tab:green",
    "duplicate": "tab:orange",
    "mislocalised": "tab:purple",
    "wrong class": "tab:red",
    "background": "tab:gray",
    MISSED: "gold",
}
#: Hoiem et al.'s "near an object", an IoU of 0.1 or more (below it, the box is on background).
NEAR_IOU = 0.1


def classify_detections(
    detections: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    iou_threshold: float = 0.5,
    near_iou: float = NEAR_IOU,
) -> tuple[list[str], Tensor]:
    """The kind of every detection of one image, and which ground-truth boxes were missed.

    Detections are matched class by class with :func:`~rcnn_lab.engine.match_detections`
    (by decreasing score, each takes the best still free box of its class with IoU >=
    ``iou_threshold``). A matched detection is ``"correct"``; an unmatched one is, by priority:

    - ``"duplicate"``: it overlaps a box of its class enough, but a higher-scored detection
      took that box;
    - ``"mislocalised"`` / ``"wrong class"``: the box it overlaps most (IoU >= ``near_iou``)
      is of its class / of another class;
    - ``"background"``: it overlaps no box by ``near_iou``.

    Args:
        detections: ``boxes`` [D, 4], ``labels`` [D], ``scores`` [D] (filter by score first to
            study one operating point).
        target: ``boxes`` [G, 4] and ``labels`` [G].
        iou_threshold: the IoU of a hit (0.5 for AP50).
        near_iou: the least IoU that puts a detection "on" an object.

    Returns:
        (kinds, missed): ``kinds[d]`` one of :data:`DETECTION_KINDS`, in the input order;
        ``missed`` [G] bool, the boxes no detection matched.
    """
    boxes, labels, scores = detections["boxes"], detections["labels"], detections["scores"]
    gt_boxes, gt_labels = target["boxes"], target["labels"]
    matched = torch.full((len(boxes),), UNMATCHED, dtype=torch.int64)  # [D] gt index
    order = torch.sort(scores, descending=True, stable=True).indices  # [D]
    for label in labels.unique().tolist():
        ranked = order[labels[order] == label]  # this class's detections, best first
        candidates = (gt_labels == label).nonzero().flatten()  # [G_label]
        hits = match_detections(
            boxes[ranked].double(), gt_boxes[candidates].double(), iou_threshold
        )
        found = hits != UNMATCHED
        matched[ranked[found]] = candidates[hits[found]]
    overlaps = box_iou(boxes.double(), gt_boxes.double())  # [D, G]
    same_class = labels[:, None] == gt_labels[None, :]  # [D, G]
    kinds = []
    for d in range(len(boxes)):
        if matched[d] != UNMATCHED:
            kinds.append("correct")
        elif same_class[d].any() and overlaps[d][same_class[d]].max() >= iou_threshold:
            kinds.append("duplicate")
        elif len(gt_boxes) and overlaps[d].max() >= near_iou:
            best = int(overlaps[d].argmax())
            kinds.append("mislocalised" if same_class[d, best] else "wrong class")
        else:
            kinds.append("background")
    missed = torch.ones(len(gt_boxes), dtype=torch.bool)
    missed[matched[matched != UNMATCHED]] = False
    return kinds, missed


def above_threshold(detections: Mapping[str, Tensor], score_threshold: float) -> dict:
    """The detections whose score is >= ``score_threshold`` (every key filtered alike)."""
    keep = detections["scores"] >= score_threshold  # [D]
    return {key: value[keep] for key, value in detections.items()}


def box_at_iou(box: Tensor, iou: float) -> Tensor:
    """``box`` [4] shifted to the right until its IoU with the original is exactly ``iou``.

    A w x h box shifted by dx keeps (w - dx) h of itself and covers (w + dx) h together with
    the original, so IoU = (w - dx) / (w + dx) and dx = w (1 - IoU) / (1 + IoU).
    """
    width = box[2] - box[0]
    shift = width * (1 - iou) / (1 + iou)
    return box + torch.stack([shift, torch.zeros_like(shift), shift, torch.zeros_like(shift)])


def draw_iou_thresholds(axes: Sequence[Axes], box: Tensor, ious: Sequence[float]) -> None:
    """One panel per IoU: the ground truth (green) and a detection shifted to that IoU."""
    size = float((box[2:] - box[:2]).max())
    for ax, iou in zip(axes, ious, strict=True):
        shifted = box_at_iou(box, iou)
        draw_boxes(ax, box, color=KIND_COLOURS["correct"], linewidth=2.5)
        draw_boxes(ax, shifted, color="tab:blue", linewidth=2.0, linestyle="--")
        ax.set_xlim(float(box[0]) - 0.3 * size, float(box[2]) + 1.0 * size)
        ax.set_ylim(float(box[3]) + 0.3 * size, float(box[1]) - 0.3 * size)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        shift = float(shifted[0] - box[0]) / float(box[2] - box[0])
        ax.set_title(f"IoU {iou:.2f}: shifted by {shift:.0%} of its width", fontsize=9)


def draw_errors(
    ax: Axes,
    image: Tensor,
    detections: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    title: str = "",
    legend: bool = True,
) -> list[str]:
    """An image with its detections coloured by kind and its missed objects dashed in gold.

    Every detection passed is drawn (filter by score first). Returns the kinds, as
    :func:`classify_detections` gives them.
    """
    kinds, missed = classify_detections(detections, target, iou_threshold)
    show_image(image, ax=ax, title=title)
    draw_boxes(
        ax, target["boxes"][missed], color=KIND_COLOURS[MISSED], linewidth=2.0, linestyle="--"
    )
    labels = [
        f"{class_names[int(c)]} {float(s):.2f}"
        for c, s in zip(detections["labels"], detections["scores"], strict=True)
    ]
    colours = [KIND_COLOURS[kind] for kind in kinds]
    draw_boxes(ax, detections["boxes"], color=colours, labels=labels, linewidth=1.5)
    if legend:
        shown = [
            kind
            for kind in (*DETECTION_KINDS, MISSED)
            if kind in kinds or (kind == MISSED and bool(missed.any()))
        ]
        handles = [Patch(facecolor="none", edgecolor=KIND_COLOURS[k], label=k) for k in shown]
        if handles:
            ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return kinds


def add_kind_legend(fig: Figure, kinds: Sequence[str] = (*DETECTION_KINDS, MISSED)) -> None:
    """One legend for a whole figure of :func:`draw_errors` panels, below them."""
    handles = [Patch(facecolor="none", edgecolor=KIND_COLOURS[k], label=k) for k in kinds]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)


class OperatingPoint(NamedTuple):
    """Precision and recall of the detections scoring >= a threshold (one class or pooled)."""

    precision: float  # true positives / detections kept (NaN when none is kept)
    recall: float  # true positives / ground-truth boxes
    true_positives: int
    detections: int
    num_gt: int


def operating_point(curve: PrecisionRecall, score_threshold: float) -> OperatingPoint:
    """Where the detections with score >= ``score_threshold`` put one class on its curve."""
    kept = int((curve.scores >= score_threshold).sum())  # a prefix: the curve is ranked
    hits = int(curve.true_positive[:kept].sum())
    precision = hits / kept if kept else float("nan")
    return OperatingPoint(precision, hits / curve.num_gt, hits, kept, curve.num_gt)


def pooled_operating_point(
    curves: Mapping[str, PrecisionRecall], score_threshold: float
) -> OperatingPoint:
    """:func:`operating_point` summed over classes (micro-averaged precision and recall)."""
    points = [operating_point(curve, score_threshold) for curve in curves.values()]
    hits, kept = sum(p.true_positives for p in points), sum(p.detections for p in points)
    num_gt = sum(p.num_gt for p in points)
    return OperatingPoint(hits / kept if kept else float("nan"), hits / num_gt, hits, kept, num_gt)


def plot_pr_curves(
    ax: Axes,
    curves: Mapping[str, PrecisionRecall],
    mark_thresholds: Sequence[float] = (),
    title: str = "",
) -> Axes:
    """Each class's precision-recall curve, labelled with its VOC AP, with optional markers.

    ``mark_thresholds`` puts a marker on every curve where the detections scoring >= that
    threshold bring it (one marker style per threshold).
    """
    markers = "o^sDv"
    for index, (name, curve) in enumerate(curves.items()):
        colour = f"C{index}"
        ap = average_precision(curve.recall, curve.precision)
        ax.plot(
            curve.recall, curve.precision, color=colour, linewidth=1.2, label=f"{name} {ap:.2f}"
        )
        for threshold, marker in zip(mark_thresholds, markers):
            point = operating_point(curve, threshold)
            if point.detections:
                ax.plot(point.recall, point.precision, marker, color=colour, markersize=6)
    for threshold, marker in zip(mark_thresholds, markers):
        ax.plot([], [], marker, color="black", label=f"score >= {threshold:g}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", title="class, VOC AP", title_fontsize=7)
    if title:
        ax.set_title(title)
    return ax


def plot_interpolation(
    ax: Axes,
    recall: Tensor,
    precision: Tensor,
    recall_thresholds: Sequence[float] = COCO_RECALL_THRESHOLDS,
    title: str = "",
) -> Axes:
    """One curve three ways: raw, its envelope with VOC's area shaded, COCO's 101 samples."""
    envelope = interpolated_precision(precision)  # [D]
    steps_x = torch.cat([recall.new_zeros(1), recall])  # [D + 1], from recall 0
    steps_y = torch.cat([envelope[:1], envelope])  # p_interp(k) holds on (r_{k-1}, r_k]
    ax.fill_between(steps_x, steps_y, step="pre", color="tab:blue", alpha=0.15, label="VOC area")
    ax.plot(recall, precision, color="0.5", linewidth=0.8, label="precision")
    ax.step(steps_x, steps_y, where="pre", color="tab:blue", linewidth=1.2, label="envelope")
    levels = torch.tensor(recall_thresholds, dtype=recall.dtype)  # [R]
    first = torch.searchsorted(recall.contiguous(), levels, side="left")  # [R]
    reached = first < len(recall)
    sampled = torch.zeros_like(levels)
    sampled[reached] = envelope[first[reached]]
    ax.plot(levels, sampled, ".", color="tab:red", markersize=3, label="COCO's 101 samples")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=7, loc="lower left")
    if title:
        ax.set_title(title)
    return ax


def threshold_view(
    curves: Mapping[str, PrecisionRecall],
    image: Tensor,
    detections: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    class_names: Sequence[str],
    score_threshold: float,
    iou_threshold: float = 0.5,
    title: str = "",
) -> Figure:
    """One operating point: the PR curves with its markers, and one image at that threshold.

    Left, the curves (computed at ``iou_threshold``) with the pooled precision and recall in
    the title; right, ``image`` with the detections scoring >= ``score_threshold``, coloured
    by kind (see :func:`draw_errors`). The figure is not registered with pyplot, so it is
    never shown by itself: display it, or save it.
    """
    fig = Figure(figsize=(11, 4.8))
    left, right = fig.subplots(1, 2)
    point = pooled_operating_point(curves, score_threshold)
    plot_pr_curves(
        left,
        curves,
        mark_thresholds=[score_threshold],
        title=f"all classes: precision {point.precision:.2f}, recall {point.recall:.2f}",
    )
    kept = above_threshold(detections, score_threshold)
    title = f"{title}: {len(kept['scores'])} detections" if title else ""
    draw_errors(right, image, kept, target, class_names, iou_threshold, title=title)
    fig.tight_layout()
    return fig


def threshold_explorer(
    curves: Mapping[str, PrecisionRecall],
    images: Sequence[Tensor],
    detections: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    first_image: int = 0,
):
    """ipywidgets explorer: a score threshold moves every class along its PR curve.

    Two sliders (score threshold, image) redraw :func:`threshold_view` into an ``Image``
    widget. (Not ``interact``: nbclient, which executes the chapters, mirrors every output of
    an ``Output`` widget back to the kernel on the shell channel, and a large figure sent that
    way can stall its wait for the cell's reply; see jupyter/nbclient#312.)

    Returns:
        A ``VBox`` of the two sliders and the picture; ``first_image`` is shown first.
    """
    from ipywidgets import FloatSlider, HBox, Image, IntSlider, VBox

    threshold = FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="score >=")
    image = IntSlider(value=first_image, min=0, max=len(images) - 1, description="scene")
    picture = Image(format="png")

    def redraw(change=None) -> None:
        i = image.value
        fig = threshold_view(
            curves,
            images[i],
            detections[i],
            targets[i],
            class_names,
            threshold.value,
            iou_threshold,
            title=f"test scene {i}",
        )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        picture.value = buffer.getvalue()

    threshold.observe(redraw, names="value")
    image.observe(redraw, names="value")
    redraw()
    return VBox([HBox([threshold, image]), picture])


def threshold_frames(
    curves: Mapping[str, PrecisionRecall],
    images: Sequence[Tensor],
    detections: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    class_names: Sequence[str],
    settings: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    image_format: str = "jpeg",
    pixel_ratio: float = 1.0,
):
    """:func:`threshold_explorer`'s figure pre-drawn for the static book.

    Args:
        settings: one ``{"score": threshold, "scene": index}`` per frame.
        image_format: ``"jpeg"`` (several times smaller: the scene is photo-like) or ``"png"``.
        pixel_ratio: resolution multiplier (1: each frame is already 1100 px wide).

    Returns:
        An ``IPython.display.HTML`` frame switcher (see :mod:`rcnn_lab.viz.frames`).
    """
    from rcnn_lab.viz.frames import figure_frames

    def view(score: float, scene: int) -> Figure:
        if not 0 <= scene < len(images):
            raise ValueError(f"scene: expected 0 <= scene < {len(images)}, got {scene}")
        return threshold_view(
            curves,
            images[scene],
            detections[scene],
            targets[scene],
            class_names,
            score,
            iou_threshold,
            title=f"test scene {scene}",
        )

    return figure_frames(view, settings, image_format=image_format, pixel_ratio=pixel_ratio)
