"""Stateless matplotlib drawing helpers shared by the chapters."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.colors
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


def label_text_colour(background: str) -> str:
    """``"black"`` on a light ``background`` colour, ``"white"`` on a dark one (WCAG luminance)."""
    red, green, blue = (
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        for c in matplotlib.colors.to_rgb(background)
    )
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    # the contrast with white, (1.05) / (L + 0.05), beats the one with black above L = 0.179
    return "black" if luminance > 0.179 else "white"


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
                color=label_text_colour(colors[i]),
                fontsize=8,
                va="bottom",
                bbox={"facecolor": colors[i], "alpha": 0.8, "pad": 1, "edgecolor": "none"},
            )
    return ax
