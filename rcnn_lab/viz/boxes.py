"""Drawing helpers and the ipywidgets explorer of the boxes chapter (book/01_boxes_iou_nms.ipynb).

Shapes: N boxes, (x1, y1, x2, y2) in image pixels; scores [N].
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor

from rcnn_lab.ops.boxes import box_iou, nms
from rcnn_lab.viz.draw import draw_boxes, show_image

KEPT_COLOUR, SUPPRESSED_COLOUR = "tab:green", "tab:gray"


def draw_box_formats(ax: Axes, box: Tensor) -> Axes:
    """Draw one (x1, y1, x2, y2) box with what each format (xyxy, xywh, cxcywh) records."""
    x1, y1, x2, y2 = box.tolist()
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    draw_boxes(ax, box[None], color="tab:blue", linewidth=2)
    ax.plot([x1, x2], [y1, y2], "o", color="tab:red")
    ax.annotate(f"(x1, y1) = ({x1:g}, {y1:g})", (x1, y1), (x1 - 2, y1 - 6), color="tab:red")
    ax.annotate(f"(x2, y2) = ({x2:g}, {y2:g})", (x2, y2), (x2 - 30, y2 + 10), color="tab:red")
    ax.plot([cx], [cy], "s", color="tab:purple")
    ax.annotate(f"(cx, cy) = ({cx:g}, {cy:g})", (cx, cy), (cx + 2, cy - 2), color="tab:purple")
    ax.annotate("", (x2, y2 + 4), (x1, y2 + 4), arrowprops={"arrowstyle": "<->", "color": "k"})
    ax.text(cx, y2 + 7, f"w = {x2 - x1:g}", ha="center", va="top")
    ax.annotate("", (x1 - 4, y2), (x1 - 4, y1), arrowprops={"arrowstyle": "<->", "color": "k"})
    ax.text(x1 - 6, cy, f"h = {y2 - y1:g}", ha="right", va="center", rotation=90)
    ax.set_xlim(x1 - 30, x2 + 30)
    ax.set_ylim(y2 + 20, y1 - 20)  # image convention: y grows downwards
    ax.set_aspect("equal")
    return ax


def plot_iou_slide(side: float, offsets: Tensor, ious: Tensor, axes: tuple[Axes, Axes]) -> None:
    """Left: a few positions of a square sliding over another; right: IoU against the offset."""
    left, right = axes
    fixed = torch.tensor([[0.0, 0.0, side, side]])
    draw_boxes(left, fixed, color="k", linewidth=2)
    shown = offsets[:: max(1, len(offsets) // 5)]
    colours = plt.cm.viridis(torch.linspace(0, 1, len(shown)).numpy())
    for d, colour in zip(shown.tolist(), colours):
        draw_boxes(left, torch.tensor([[d, 0.0, d + side, side]]), color=[colour], linestyle="--")
    left.set_xlim(-0.2 * side, 2.3 * side)
    left.set_ylim(1.3 * side, -0.3 * side)
    left.set_aspect("equal")
    left.set_title("a square sliding to the right")
    right.plot(offsets.numpy(), ious.numpy(), lw=2, label="box_iou")
    right.axhline(0.5, color="tab:red", lw=1, ls=":", label="IoU = 0.5 at d = s / 3")
    right.axvline(side / 3, color="tab:red", lw=1, ls=":")
    right.set_xlabel("offset d (pixels)")
    right.set_ylabel("IoU")
    right.set_title(f"IoU of two {side:g} px squares")
    right.legend()


def draw_nms(
    ax: Axes,
    image: Tensor,
    boxes: Tensor,
    scores: Tensor,
    keep: Tensor,
    show_suppressed=True,
    max_labels: int = 5,
) -> Axes:
    """Draw kept boxes in green, suppressed ones dashed and grey.

    Only the ``max_labels`` highest-scoring kept boxes carry their score (``keep`` is ordered
    by decreasing score, as :func:`~rcnn_lab.ops.nms` returns it), so that labels stay readable
    when many boxes survive.
    """
    show_image(image, ax=ax)
    suppressed = torch.ones(len(boxes), dtype=torch.bool)
    suppressed[keep] = False
    if show_suppressed and bool(suppressed.any()):
        draw_boxes(ax, boxes[suppressed], color=SUPPRESSED_COLOUR, linestyle="--", linewidth=0.8)
    draw_boxes(ax, boxes[keep], color=KEPT_COLOUR, linewidth=2)
    top = keep[:max_labels]
    labels = [f"{s:.2f}" for s in scores[top].tolist()]
    draw_boxes(ax, boxes[top], color=KEPT_COLOUR, labels=labels, linewidth=2)
    return ax


def draw_named_boxes(ax: Axes, boxes: Tensor, names: str, keep: list[int]) -> Axes:
    """A worked NMS example on a blank canvas: kept boxes solid green, the others dashed grey.

    Each box carries its one-letter name in dark text just inside its top-left corner.
    """
    for i, (x1, y1) in enumerate(boxes[:, :2].tolist()):
        kept = i in keep
        draw_boxes(
            ax,
            boxes[i : i + 1],
            color=KEPT_COLOUR if kept else SUPPRESSED_COLOUR,
            linestyle="-" if kept else "--",
            linewidth=2 if kept else 1.5,
        )
        ax.text(x1 + 1.5, y1 + 1.5, names[i], fontsize=11, va="top", ha="left", weight="bold")
    low = boxes[:, :2].min(dim=0).values.tolist()
    high = boxes[:, 2:].max(dim=0).values.tolist()
    ax.set_xlim(low[0] - 5, high[0] + 5)
    ax.set_ylim(high[1] + 5, low[1] - 5)  # image convention: y grows downwards
    ax.set_aspect("equal")
    return ax


def nms_explorer(image: Tensor, boxes: Tensor, scores: Tensor):
    """ipywidgets explorer: move the IoU threshold and see which guesses NMS keeps."""
    from ipywidgets import Checkbox, FloatSlider, interactive

    def show(iou_threshold, show_suppressed):
        keep = nms(boxes, scores, iou_threshold)
        _, ax = plt.subplots(figsize=(7, 5.5))
        draw_nms(ax, image, boxes, scores, keep, show_suppressed)
        ax.set_title(f"IoU threshold {iou_threshold:.2f}: kept {len(keep)} of {len(boxes)}")
        plt.show()

    return interactive(
        show,
        iou_threshold=FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="IoU thr"),
        show_suppressed=Checkbox(value=True, description="show suppressed"),
    )


def max_iou_with(boxes: Tensor, targets: Tensor) -> Tensor:
    """[N] best IoU of each box with any of ``targets`` [G, 4] (0 when G = 0)."""
    if len(targets) == 0:
        return boxes.new_zeros(len(boxes))
    return box_iou(boxes, targets).max(dim=1).values
