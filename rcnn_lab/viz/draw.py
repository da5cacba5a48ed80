"""Stateless matplotlib drawing helpers shared by the chapters."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from torch import Tensor


def show_image(image: Tensor, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Show a [3, H, W] (or [H, W]) image tensor with values in [0, 1]; returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    array = image.detach().cpu()
    if array.dim() == 3:
        array = array.permute(1, 2, 0)  # [H, W, 3]
    ax.imshow(array.clamp(0, 1).numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def draw_boxes(
    ax: Axes,
    boxes: Tensor,
    color: str | Sequence[str] = "tab:red",
    labels: Sequence[str] | None = None,
    linewidth: float = 1.5,
    linestyle: str = "-",
    alpha: float = 1.0,
    fill: bool = False,
) -> Axes:
    """Draw [K, 4] (x1, y1, x2, y2) boxes on ``ax`` in data (pixel) coordinates.

    ``color`` is one colour or one per box; ``labels`` optional text per box, shown at the
    top-left corner.
    """
    boxes = boxes.detach().cpu().reshape(-1, 4)
    colors = [color] * len(boxes) if isinstance(color, str) else list(color)
    if len(colors) != len(boxes):
        raise ValueError(f"got {len(colors)} colours for {len(boxes)} boxes")
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=fill,
                edgecolor=colors[i],
                facecolor=colors[i] if fill else "none",
                linewidth=linewidth,
                linestyle=linestyle,
                alpha=alpha,
            )
        )
        if labels is not None:
            ax.text(
                x1,
                y1,
                labels[i],
                color="white",
                fontsize=8,
                va="bottom",
                bbox={"facecolor": colors[i], "alpha": 0.8, "pad": 1, "edgecolor": "none"},
            )
    return ax
