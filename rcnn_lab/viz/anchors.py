"""Drawing helpers and the ipywidgets explorer of the anchors chapter (book/02_anchors.ipynb).

Shapes: A anchors per location, H x W feature grid, boxes (x1, y1, x2, y2) in image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor

from rcnn_lab.anchors import AnchorGenerator
from rcnn_lab.image_list import ImageList
from rcnn_lab.viz.draw import draw_boxes, show_image

#: FPN levels of torchvision's Faster R-CNN, level name -> (anchor size, stride in pixels).
FPN_LEVELS = {"P2": (32, 4), "P3": (64, 8), "P4": (128, 16), "P5": (256, 32), "P6": (512, 64)}

#: Colours of the anchors of one cell, one per aspect ratio (cycled).
RATIO_COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple")


def level_anchors(
    image_hw: tuple[int, int], sizes: Sequence[int], ratios: Sequence[float], stride: int
) -> tuple[Tensor, tuple[int, int]]:
    """All anchors of one level whose feature grid has the given ``stride``.

    Returns:
        anchors: [H*W*A, 4] from :class:`rcnn_lab.AnchorGenerator`.
        grid: (H, W) = image size // stride.
    """
    height, width = image_hw
    grid = (max(height // stride, 1), max(width // stride, 1))
    generator = AnchorGenerator((tuple(sizes),), (tuple(ratios),))
    images = ImageList(torch.zeros(1, 3, height, width), [image_hw])
    (anchors,) = generator(images, [torch.zeros(1, 1, *grid)])
    return anchors, grid


def cell_slice(grid: tuple[int, int], row: int, col: int, per_cell: int) -> slice:
    """Rows of a level's [H*W*A, 4] anchors that belong to grid cell (row, col)."""
    start = (row * grid[1] + col) * per_cell
    return slice(start, start + per_cell)


def draw_cell_anchors(
    ax: Axes, anchors: Tensor, ratios: Sequence[float], sizes: Sequence[int], linewidth=1.8
) -> Axes:
    """Draw the A = len(ratios) * len(sizes) anchors of one cell, coloured by ratio."""
    colours = [RATIO_COLOURS[i % len(RATIO_COLOURS)] for i in range(len(ratios))]
    per_anchor = [c for c in colours for _ in sizes]  # ratio-major, like the anchors
    return draw_boxes(ax, anchors, color=per_anchor, linewidth=linewidth)


def plot_level(
    image: Tensor,
    sizes: Sequence[int],
    ratios: Sequence[float],
    stride: int,
    row_frac: float = 0.5,
    col_frac: float = 0.5,
    ax: Axes | None = None,
    title: str | None = None,
    margin: float | None = 0.25,
) -> Axes:
    """The scene with the anchor centres of one level and the anchors of one chosen cell.

    ``row_frac``/``col_frac`` in [0, 1] pick the cell as a fraction of the grid. ``margin``
    is the blank border around the image, as a fraction of its size (room for anchors that
    stick out); ``None`` fits the view to the image and the drawn anchors, with no blank
    border beyond them.
    """
    height, width = image.shape[-2:]
    anchors, grid = level_anchors((height, width), sizes, ratios, stride)
    per_cell = len(sizes) * len(ratios)
    row = min(int(row_frac * grid[0]), grid[0] - 1)
    col = min(int(col_frac * grid[1]), grid[1] - 1)
    ax = show_image(image, ax=ax)
    centres = anchors.reshape(-1, per_cell, 4)[:, 0]  # [H*W, 4]: one anchor per location
    centres = ((centres[:, :2] + centres[:, 2:]) / 2).numpy()  # [H*W, 2]
    dot = min(4.0, stride / 8)  # fine levels have thousands of centres: smaller dots
    ax.scatter(centres[:, 0], centres[:, 1], s=dot, c="black", alpha=0.4, linewidths=0)
    cell = anchors[cell_slice(grid, row, col, per_cell)]  # [A, 4]
    draw_cell_anchors(ax, cell, ratios, sizes)
    if margin is None:
        x1, y1 = (min(0.0, v) for v in cell[:, :2].min(dim=0).values.tolist())
        x2, y2 = cell[:, 2].max().clamp(min=width).item(), cell[:, 3].max().clamp(min=height).item()
        ax.set_xlim(x1 - 2, x2 + 2)
        ax.set_ylim(y2 + 2, y1 - 2)
    else:
        ax.set_xlim(-margin * width, (1 + margin) * width)
        ax.set_ylim((1 + margin) * height, -margin * height)
    ax.set_title(title or f"stride {stride}, grid {grid[0]}x{grid[1]}, cell ({row}, {col})")
    return ax


#: Colours that pair each object with its best anchor; dark enough for thin lines on a scene.
PAIR_COLOURS = ("black", "tab:red", "tab:purple", "tab:blue", "magenta", "tab:brown")


def draw_best_anchors(
    ax: Axes, image: Tensor, gt_boxes: Tensor, anchors: Tensor, tags: Sequence[str]
) -> Axes:
    """The scene with each object (solid) and its best anchor (dashed) in one shared colour.

    ``anchors`` [G, 4] holds the best anchor of each of the G ``gt_boxes``; ``tags`` one text
    per pair, written in the pair's colour on a white patch at the anchor's top-left corner,
    prefixed with the object's number.
    """
    show_image(image, ax=ax)
    for g, (gt, anchor, tag) in enumerate(zip(gt_boxes, anchors, tags)):
        colour = PAIR_COLOURS[g % len(PAIR_COLOURS)]
        draw_boxes(ax, gt[None], color=colour, linewidth=2.5)
        draw_boxes(ax, anchor[None], color=colour, linewidth=1.8, linestyle="--")
        x, y = max(float(anchor[0]), 0.0), max(float(anchor[1]), 0.0)
        ax.text(
            x + 2,
            y + 2,
            f"{g}: {tag}",
            color=colour,
            fontsize=9,
            va="top",
            bbox={"facecolor": "white", "alpha": 0.85, "pad": 1, "edgecolor": "none"},
        )
    return ax


def anchor_explorer(image: Tensor):
    """ipywidgets explorer: sizes, ratios, stride, FPN level and the cell whose anchors to draw.

    Choosing a level P2..P6 overrides size and stride with that level's (FPN's) values.
    """
    from ipywidgets import Dropdown, FloatSlider, IntSlider, SelectionSlider, interactive

    ratio_sets = {"0.5, 1, 2": (0.5, 1.0, 2.0), "1": (1.0,), "0.25 ... 4": (0.25, 0.5, 1, 2, 4)}

    def show(level, size, scales, ratios, stride, row, col):
        if level != "custom":
            size, stride = FPN_LEVELS[level]
        sizes = [int(size * 2 ** (i / 3)) for i in range(scales)]  # octave steps of 2^(1/3)
        _, ax = plt.subplots(figsize=(7, 5.5))
        plot_level(image, sizes, ratio_sets[ratios], stride, row, col, ax=ax)
        plt.show()

    return interactive(
        show,
        level=Dropdown(options=["custom", *FPN_LEVELS], value="custom"),
        size=IntSlider(value=64, min=8, max=512, step=8, description="size"),
        scales=IntSlider(value=1, min=1, max=3, description="scales"),
        ratios=Dropdown(options=list(ratio_sets), value="0.5, 1, 2"),
        stride=SelectionSlider(options=[4, 8, 16, 32, 64], value=16, description="stride"),
        row=FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="cell row"),
        col=FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="cell col"),
    )
