"""Drawings and the explorer of the RoIAlign chapter: bins, sample points, RoIPool's cells.

Coordinates: matplotlib's ``imshow`` puts feature pixel (i, j) at the point (x=j, y=i), which is
exactly where ``roi_align`` reads it, so sample points are drawn at their sampling coordinates.
Shapes: D channels, H x W feature map, ph x pw output bins.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from torch import Tensor

from rcnn_lab.ops import roi_align, roi_pool, sample_grid
from rcnn_lab.ops.poolers import LevelMapper

#: Colours of the RoI, its bins, samples that count, samples that fall off the map.
ROI_COLOUR, BIN_COLOUR, SAMPLE_COLOUR, OUTSIDE_COLOUR = "tab:red", "white", "lime", "tab:orange"


def roi_align_samples(
    box: tuple[float, float, float, float],
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> tuple[tuple[float, float, float, float], list[float], list[float]]:
    """The RoI on the feature grid, and the y and x coordinates of its sample rows and columns,
    from :func:`rcnn_lab.ops.sample_grid` (the geometry ``roi_align`` itself uses).

    Returns:
        (x1, y1, x2, y2) in sampling coordinates, ys [ph * gh], xs [pw * gw].
    """
    grid = sample_grid(box, output_size, spatial_scale, sampling_ratio, aligned)
    return grid.corners, grid.ys.tolist(), grid.xs.tolist()


def show_feature(ax: Axes, feature: Tensor, grid: bool = True) -> None:
    """A [3, H, W] (RGB in [0, 1]) or [H, W] feature map, pixel (i, j) centred on (j, i)."""
    data = feature.detach().cpu()
    if data.dim() == 3:
        ax.imshow(data.permute(1, 2, 0).clamp(0, 1).numpy())  # [H, W, 3]
    else:
        ax.imshow(data.numpy(), cmap="viridis")
    height, width = data.shape[-2:]
    if grid:
        for y in range(height + 1):
            ax.axhline(y - 0.5, color="black", linewidth=0.3, alpha=0.4)
        for x in range(width + 1):
            ax.axvline(x - 0.5, color="black", linewidth=0.3, alpha=0.4)
    ax.set_xlim(-1.5, width + 0.5)
    ax.set_ylim(height + 0.5, -1.5)


def draw_roi_align(
    ax: Axes,
    feature: Tensor,
    box: tuple[float, float, float, float],
    output_size: tuple[int, int] = (2, 2),
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> None:
    """The feature grid, a RoI with its bins, and the bilinear sample points of every bin."""
    show_feature(ax, feature)
    height, width = feature.shape[-2:]
    (x1, y1, x2, y2), ys, xs = roi_align_samples(
        box, output_size, spatial_scale, sampling_ratio, aligned
    )
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=ROI_COLOUR, lw=2))
    ph, pw = output_size
    for i in range(1, ph):
        y = y1 + i * (y2 - y1) / ph
        ax.plot([x1, x2], [y, y], color=BIN_COLOUR, lw=1, ls="--")
    for j in range(1, pw):
        x = x1 + j * (x2 - x1) / pw
        ax.plot([x, x], [y1, y2], color=BIN_COLOUR, lw=1, ls="--")
    grid_y, grid_x = torch.meshgrid(torch.tensor(ys), torch.tensor(xs), indexing="ij")
    inside = (grid_y >= -1) & (grid_y <= height) & (grid_x >= -1) & (grid_x <= width)
    ax.scatter(grid_x[inside], grid_y[inside], s=14, color=SAMPLE_COLOUR, zorder=3)
    ax.scatter(grid_x[~inside], grid_y[~inside], s=14, color=OUTSIDE_COLOUR, marker="x", zorder=3)


def _round_half_away(value: float) -> int:
    """C's round(): halves go away from zero (Python's round() sends them to the even side)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def roi_pool_cells(
    box: tuple[float, float, float, float],
    output_size: tuple[int, int],
    spatial_scale: float,
    shape: tuple[int, int] | None = None,
) -> list[tuple[int, int, int, int]]:
    """RoIPool's quantised bins: (row start, row end, col start, col end), end exclusive.

    Quantisation 1 rounds the box to whole cells; quantisation 2 widens every bin to whole
    cells (floor of its start, ceil of its end), as Fast R-CNN's RoI max pooling does. With
    ``shape`` = (H, W) the bins are clipped to the map (an empty bin pools to 0).
    """
    x1, y1, x2, y2 = (_round_half_away(v * spatial_scale) for v in box)
    h, w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
    (ph, pw), (bh, bw) = output_size, (h / output_size[0], w / output_size[1])
    cells = []
    for i in range(ph):
        for j in range(pw):
            r0, r1 = y1 + math.floor(i * bh), y1 + math.ceil((i + 1) * bh)
            c0, c1 = x1 + math.floor(j * bw), x1 + math.ceil((j + 1) * bw)
            if shape is not None:
                r0, r1 = min(max(r0, 0), shape[0]), min(max(r1, 0), shape[0])
                c0, c1 = min(max(c0, 0), shape[1]), min(max(c1, 0), shape[1])
            cells.append((r0, r1, c0, c1))
    return cells


def draw_roi_pool(
    ax: Axes,
    feature: Tensor,
    box: tuple[float, float, float, float],
    output_size: tuple[int, int] = (2, 2),
    spatial_scale: float = 1.0,
) -> None:
    """The true RoI (dashed) and the whole cells RoIPool takes the max over, one colour per bin."""
    show_feature(ax, feature)
    colours = plt.get_cmap("tab10").colors
    for n, (r0, r1, c0, c1) in enumerate(roi_pool_cells(box, output_size, spatial_scale)):
        colour = colours[n % len(colours)]
        ax.add_patch(
            Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, color=colour, alpha=0.35, lw=0)
        )
        ax.add_patch(
            Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, color=colour, lw=1.5)
        )
    # cell i stands for image pixels [i / scale, (i + 1) / scale): its left edge is at i - 0.5
    x1, y1, x2, y2 = (v * spatial_scale - 0.5 for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=ROI_COLOUR, lw=2, ls="--"))


def draw_numbered_map(
    ax: Axes, values: Tensor, fontsize: float = 12, bin_outlines: bool = False
) -> None:
    """A small [H, W] map as a grid of light cells with every value written in, dark on light.

    Cell (i, j) is centred on the point (x=j, y=i); the axes are labelled with the indices.
    With ``bin_outlines`` each cell is outlined in the colour of bin i * W + j (for an output
    drawn beside :func:`draw_roi_pool_worked` or :func:`draw_roi_align_worked`).
    """
    data = values.detach().cpu().double()
    height, width = data.shape
    top = float(data.abs().max()) or 1.0
    ax.imshow(data.abs().numpy(), cmap="Greys", vmin=0.0, vmax=4 * top)  # light greys only
    backdrop = {"fc": "white", "ec": "none", "alpha": 0.6, "pad": 1}  # hides lines behind digits
    for i in range(height):
        for j in range(width):
            ax.text(j, i, f"{float(data[i, j]):g}", ha="center", va="center", fontsize=fontsize,
                    color="black", bbox=backdrop)  # fmt: skip
            if bin_outlines:
                ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, lw=2.5,
                                       color=_bin_colour(i * width + j)))  # fmt: skip
    for y in range(height + 1):
        ax.axhline(y - 0.5, color="grey", linewidth=0.6)
    for x in range(width + 1):
        ax.axvline(x - 0.5, color="grey", linewidth=0.6)
    ax.set_xticks(range(width))
    ax.set_yticks(range(height))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.tick_params(length=0)


def _bin_colour(n: int) -> tuple[float, float, float]:
    return plt.get_cmap("tab10").colors[n % 10]


def draw_roi_pool_worked(
    ax: Axes,
    values: Tensor,
    box: tuple[float, float, float, float],
    output_size: tuple[int, int] = (2, 2),
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoIPool by hand on a small [H, W] map with its values written in.

    Draws the true box (dashed red, cell i standing for [i, i + 1) on the feature grid) and
    the whole cells of every bin (one colour per bin, outlines inset so that overlapping bins
    stay visible). Returns ``rcnn_lab.ops.roi_pool``'s [ph, pw] result for the box.
    """
    draw_numbered_map(ax, values)
    height, width = values.shape
    cells = roi_pool_cells(box, output_size, spatial_scale, shape=(height, width))
    for n, (r0, r1, c0, c1) in enumerate(cells):
        inset = 0.06 * (n + 1)
        corner = (c0 - 0.5 + inset, r0 - 0.5 + inset)
        size = (c1 - c0 - 2 * inset, r1 - r0 - 2 * inset)
        ax.add_patch(Rectangle(corner, *size, fill=False, color=_bin_colour(n), lw=2.5))
    x1, y1, x2, y2 = (v * spatial_scale - 0.5 for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=ROI_COLOUR, lw=2, ls="--"))
    rois = torch.tensor([[0.0, *box]], dtype=values.dtype, device=values.device)
    return roi_pool(values[None, None], rois, output_size, spatial_scale)[0, 0]


def draw_roi_align_worked(
    ax: Axes,
    values: Tensor,
    box: tuple[float, float, float, float],
    output_size: tuple[int, int] = (2, 2),
    spatial_scale: float = 1.0,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign by hand (one bilinear sample per bin) on a small [H, W] map, values written in.

    Draws the RoI (red), its bins (dashed) and each bin's single sample point labelled with
    its bilinear value, which with ``sampling_ratio=1`` is the bin's output. Returns
    ``rcnn_lab.ops.roi_align``'s [ph, pw] result for the box.
    """
    draw_numbered_map(ax, values)
    (x1, y1, x2, y2), ys, xs = roi_align_samples(box, output_size, spatial_scale, 1, aligned)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=ROI_COLOUR, lw=2))
    ph, pw = output_size
    for i in range(1, ph):
        y = y1 + i * (y2 - y1) / ph
        ax.plot([x1, x2], [y, y], color=ROI_COLOUR, lw=1, ls="--", alpha=0.7)
    for j in range(1, pw):
        x = x1 + j * (x2 - x1) / pw
        ax.plot([x, x], [y1, y2], color=ROI_COLOUR, lw=1, ls="--", alpha=0.7)
    rois = torch.tensor([[0.0, *box]], dtype=values.dtype, device=values.device)
    pooled = roi_align(values[None, None], rois, output_size, spatial_scale, 1, aligned)[0, 0]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            ax.plot(x, y, "o", color=_bin_colour(i * pw + j), markersize=7)
            label = {"fontsize": 10, "color": "black", "ha": "left", "va": "center"}
            frame = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"}
            ax.annotate(f"{float(pooled[i, j]):g}", (x, y), xytext=(6, 0),
                        textcoords="offset points", bbox=frame, **label)  # fmt: skip
    return pooled


def plot_level_mapping(ax: Axes, k_min: int = 2, k_max: int = 5) -> None:
    """FPN eq. 1 as a step function: the side sqrt(w * h) of a box in pixels -> its level."""
    sides = torch.logspace(2, 11, 2000, base=2.0)  # 4 px .. 2048 px
    boxes = torch.stack([torch.zeros_like(sides)] * 2 + [sides, sides], dim=1)  # [S, 4]
    levels = LevelMapper(k_min, k_max)([boxes]) + k_min
    ax.step(sides.numpy(), levels.numpy(), where="post", color="tab:blue")
    for level in range(k_min, k_max + 1):
        ax.axhline(level, color="grey", lw=0.4)
    ax.axvline(224, color="tab:red", ls="--", lw=1)
    ax.text(230, k_min + 0.1, "224 px -> level 4", color="tab:red")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("box side sqrt(w * h), pixels")
    ax.set_ylabel("pyramid level k (P_k, stride 2^k)")
    ax.set_yticks(range(k_min, k_max + 1))


def roi_align_explorer(feature: Tensor, spatial_scale: float = 1.0):
    """ipywidgets explorer: move/resize a RoI, change output size, sampling ratio and alignment.

    Left: the feature map with the RoI, its bins and sample points; right: the pooled output
    (rcnn_lab's ``roi_align``). ``feature`` is [3, H, W] in [0, 1].
    """
    from ipywidgets import Checkbox, FloatSlider, IntSlider, interact

    height, width = feature.shape[-2:]
    image_h, image_w = height / spatial_scale, width / spatial_scale

    def show(x1, y1, w, h, output, sampling_ratio, aligned):
        box = (x1, y1, x1 + w, y1 + h)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=[3, 2])
        draw_roi_align(left, feature, box, (output, output), spatial_scale, sampling_ratio, aligned)
        rois = torch.tensor([[0.0, *box]], dtype=feature.dtype)
        pooled = roi_align(feature[None], rois, output, spatial_scale, sampling_ratio, aligned)
        right.imshow(pooled[0].permute(1, 2, 0).clamp(0, 1).numpy())  # [ph, pw, 3]
        right.set_title(f"pooled {output} x {output}")
        left.set_title(f"sampling_ratio={sampling_ratio}, aligned={aligned}")
        plt.show()

    return interact(
        show,
        x1=FloatSlider(value=image_w * 0.3, min=-image_w * 0.2, max=image_w, step=0.5),
        y1=FloatSlider(value=image_h * 0.3, min=-image_h * 0.2, max=image_h, step=0.5),
        w=FloatSlider(value=image_w * 0.3, min=0.0, max=image_w, step=0.5),
        h=FloatSlider(value=image_h * 0.3, min=0.0, max=image_h, step=0.5),
        output=IntSlider(value=3, min=1, max=7),
        sampling_ratio=IntSlider(
            value=2,
            min=-1,
            max=4,
            style={"description_width": "initial"},  # full label
        ),
        aligned=Checkbox(value=True),
    )
