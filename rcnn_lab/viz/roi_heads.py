"""Helpers for chapters 7 (RoI heads and the four losses) and 9 (assembling Faster R-CNN).

The FasterRCNN argument table, RoI drawing and the detection explorer; the random-weight model
helpers live in :mod:`rcnn_lab.testing` and are re-exported here for the chapters.
"""

from __future__ import annotations

import inspect
import re

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from rcnn_lab.testing import (  # re-exported: the chapters build their random models with them
    HEAD_OUTPUT_STD,
    build_in_float64,
    calibrate_batchnorm,
    spread_head_weights,
)
from rcnn_lab.viz.draw import draw_boxes, show_image

__all__ = [
    "HEAD_OUTPUT_STD",
    "build_in_float64",
    "calibrate_batchnorm",
    "spread_head_weights",
    "argument_table",
    "draw_detections",
    "draw_sampled_rois",
    "detection_explorer",
]


def argument_table(cls: type) -> str:
    """A Markdown table of ``cls.__init__``'s arguments: name, default, meaning (docstring)."""
    meanings = _docstring_args(inspect.getdoc(cls) or "")
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        name = f"**{param.name}" if param.kind is param.VAR_KEYWORD else param.name
        if param.kind is param.VAR_KEYWORD:
            default = ""
        elif param.default is inspect.Parameter.empty:
            default = "(required)"
        else:
            default = f"`{param.default!r}`"
        meaning = meanings.get(param.name, "").replace("|", "\\|")
        rows.append(f"| `{name}` | {default} | {meaning} |")
    return "\n".join(rows)


def _docstring_args(doc: str) -> dict[str, str]:
    """``{name: meaning}`` from a Google-style "Args:" section (continuation lines joined)."""
    section = doc.split("Args:", 1)[-1]
    meanings: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^\s{4}\**(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            meanings[current] = match.group(2).strip()
        elif current and line.startswith(" " * 8):
            meanings[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return meanings


def draw_detections(
    ax: Axes, image: Tensor, detections: dict[str, Tensor], class_names, title: str = ""
) -> Axes:
    """An image with its detections, each labelled "class score"."""
    show_image(image, ax=ax, title=title)
    names = [
        f"{class_names[int(c)] if int(c) < len(class_names) else int(c)} {float(s):.2f}"
        for c, s in zip(detections["labels"], detections["scores"], strict=True)
    ]
    draw_boxes(ax, detections["boxes"], color="tab:orange", labels=names)
    return ax


def draw_sampled_rois(
    ax: Axes, image: Tensor, rois: Tensor, labels: Tensor, gt_boxes: Tensor, title: str = ""
) -> Axes:
    """Sampled RoIs coloured by role: foreground (blue), background (grey); GT in green."""
    show_image(image, ax=ax, title=title)
    background = labels == 0
    draw_boxes(ax, rois[background], color="0.6", linewidth=0.6, alpha=0.6)
    draw_boxes(ax, rois[~background], color="tab:blue", linewidth=1.0)
    draw_boxes(ax, gt_boxes, color="tab:green", linewidth=2.0)
    return ax


def detection_explorer(model: nn.Module, image: Tensor, class_names):
    """ipywidgets explorer: score threshold, NMS threshold and detections per image."""
    import ipywidgets as widgets

    heads = model.roi_heads

    def show(score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100):
        saved = heads.score_thresh, heads.nms_thresh, heads.detections_per_img
        heads.score_thresh, heads.nms_thresh = score_thresh, nms_thresh
        heads.detections_per_img = detections_per_img
        try:
            with torch.no_grad():
                detections = model.eval()([image])[0]
        finally:
            heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved
        _, ax = plt.subplots(figsize=(6, 4.5))
        title = f"{len(detections['boxes'])} detections"
        draw_detections(ax, image, detections, class_names, title=title)
        plt.show()

    return widgets.interact(
        show,
        score_thresh=widgets.FloatSlider(value=0.05, min=0.0, max=0.95, step=0.05),
        nms_thresh=widgets.FloatSlider(value=0.5, min=0.05, max=1.0, step=0.05),
        detections_per_img=widgets.IntSlider(value=100, min=1, max=100),
    )
