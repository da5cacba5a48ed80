"""Drawing helpers and the explorer of the transform/backbone/FPN chapter (book/08_...ipynb).

Shapes: N images, D channels (D = 256 for the FPN), H x W pixels of an image or cells of a
feature map, boxes (x1, y1, x2, y2) in pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from rcnn_lab.image_list import ImageList
from rcnn_lab.transform import GeneralizedRCNNTransform
from rcnn_lab.viz.draw import draw_boxes, show_image

#: torchvision's FPN output names -> the paper's level names.
LEVEL_NAMES = {"0": "P2", "1": "P3", "2": "P4", "3": "P5", "pool": "P6"}
#: Anchor size of each level in torchvision's Faster R-CNN (one size, three ratios per level).
ANCHOR_SIZES = {"P2": 32, "P3": 64, "P4": 128, "P5": 256, "P6": 512}
#: The explorer draws a level's cell grid only from this stride (pixels) up.
MIN_GRID_STRIDE = 8


def denormalize(batch: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo ``(x - mean) / std`` on a [N, 3, H, W] (or [3, H, W]) tensor, for display only."""
    mean_t = torch.as_tensor(mean, dtype=batch.dtype, device=batch.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=batch.dtype, device=batch.device).reshape(-1, 1, 1)
    return batch * std_t + mean_t


def plot_padded_batch(
    images: ImageList,
    mean: Sequence[float],
    std: Sequence[float],
    boxes: Sequence[Tensor] | None = None,
    axes: Sequence[Axes] | None = None,
) -> Sequence[Axes]:
    """Show every image of a padded batch at the batch's size, padding hatched, boxes in green.

    The normalised padding is 0, i.e. the mean colour after :func:`denormalize`; the hatch
    marks it. ``boxes`` are the resized targets, one [G, 4] tensor per image.
    """
    batch = denormalize(images.tensors, mean, std)
    height, width = batch.shape[-2:]
    if axes is None:  # 3.3 in per image: titles stay readable when the figure fits the column
        panel_h = 3.3 * height / width + 0.6
        _, axes = plt.subplots(1, len(batch), figsize=(3.3 * len(batch), panel_h))
    for i, (ax, (h, w)) in enumerate(zip(axes, images.image_sizes)):
        show_image(batch[i], ax=ax, title=f"image {h}x{w}\npadded to {height}x{width}")
        ax.set_axis_on()
        ax.set_xticks(sorted({0, w, width}))  # an unpadded side: one tick, not two
        ax.set_yticks(sorted({0, h, height}))
        for x, y, pw, ph in ((w, 0, width - w, height), (0, h, w, height - h)):
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), pw, ph, fill=False, hatch="//", lw=0))
        if boxes is not None:
            draw_boxes(ax, boxes[i], color="tab:green")
    return axes


def feature_energy(feature: Tensor) -> Tensor:
    """Mean absolute activation over channels of a [D, H, W] map -> [H, W] (what to look at)."""
    return feature.detach().abs().mean(dim=0)


def plot_pyramid(
    features: dict[str, Tensor],
    image_hw: tuple[int, int],
    index: int = 0,
    image: Tensor | None = None,
    ncols: int = 3,
) -> Sequence[Axes]:
    """One panel per pyramid level: the channel-mean |activation| of image ``index``.

    Every panel spans the same padded image extent (``image_hw``), so a coarse level shows as
    big cells. ``image``, a [3, H, W] tensor with values in [0, 1] (the padded input, for
    example), adds a first panel to compare with. The panels fill a grid of ``ncols`` columns,
    about 3 in wide each, so that the titles stay readable at the width of a book page.
    Returns the axes that show something, in order.
    """
    height, width = image_hw
    count = len(features) + (image is not None)
    nrows = -(-count // ncols)  # ceil
    panel_w = 3.0
    panel_h = panel_w * height / width + 0.45  # room for a one-line title
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(panel_w * ncols, panel_h * nrows), squeeze=False
    )
    axes = list(grid.flatten())
    for ax in axes[count:]:
        ax.set_axis_off()
    axes = axes[:count]
    panels = iter(axes)
    if image is not None:
        show_image(image, ax=next(panels), title=f"input, {height}x{width}")
    for ax, (name, feature) in zip(panels, features.items()):
        grid_h, grid_w = feature.shape[-2:]
        level = LEVEL_NAMES.get(name, name)
        ax.imshow(feature_energy(feature[index]).cpu().numpy(), extent=(0, width, height, 0))
        ax.set_title(f"{level}: {grid_h}x{grid_w}, stride {height // grid_h}")
        ax.set_axis_off()
    fig.tight_layout()
    return axes


def pyramid_explorer(
    image: Tensor,
    backbone: nn.Module,
    make_transform: Callable[[int], GeneralizedRCNNTransform],
):
    """ipywidgets explorer: resize ``image`` to a chosen ``min_size``, run ``backbone`` and show
    one level: the padded input with that level's grid and anchor size, and its feature map."""
    import ipywidgets as widgets

    def show(min_size: int, level: str) -> None:
        transform = make_transform(min_size).eval()
        batch, _ = transform([image])
        with torch.no_grad():
            features = backbone(batch.tensors)
        name = {v: k for k, v in LEVEL_NAMES.items()}[level]
        feature = features[name][0]  # [D, H_l, W_l]
        height, width = batch.tensors.shape[-2:]
        stride = height // feature.shape[-2]
        _, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        show_image(denormalize(batch.tensors[0], transform.image_mean, transform.image_std), left)
        if stride >= MIN_GRID_STRIDE:  # finer grids would paint the image white
            for y in range(0, height + 1, stride):
                left.axhline(y - 0.5, color="white", lw=0.4, alpha=0.6)
            for x in range(0, width + 1, stride):
                left.axvline(x - 0.5, color="white", lw=0.4, alpha=0.6)
        size = ANCHOR_SIZES[level]
        cy, cx = height / 2, width / 2
        anchor = torch.tensor([[cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]])
        draw_boxes(left, anchor, color="tab:red", labels=[f"{level} anchor {size} px"])
        left.set_title(f"input {tuple(batch.image_sizes[0])} padded to {height}x{width}")
        right.imshow(feature_energy(feature).cpu().numpy(), extent=(0, width, height, 0))
        right.set_title(f"{level}: {feature.shape[-2]}x{feature.shape[-1]} cells, stride {stride}")
        right.set_axis_off()
        plt.show()

    return widgets.interact(
        show,
        min_size=widgets.IntSlider(value=320, min=128, max=512, step=32, description="min_size"),
        level=widgets.Dropdown(options=list(LEVEL_NAMES.values()), value="P4", description="level"),
    )
