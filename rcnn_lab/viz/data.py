"""Figures and the dataset explorer of the chapter "Data" (book/10_data.ipynb).

Images are [3, H, W] float in [0, 1]; targets are the detectors' dicts: ``boxes`` [N, 4]
(x1, y1, x2, y2) in pixels and ``labels`` [N] int64 in 1..C-1 (0 is the background).

Shapes: N boxes of an image; C classes, background included; H x W pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from rcnn_lab.data.transforms import SeededTransforms, to_model_format, train_transforms
from rcnn_lab.viz.draw import draw_boxes, show_image

#: Name of the explorer's class-filter choice that shows every class.
ALL_CLASSES = "all"


def class_colour(label: int) -> str:
    """The colour of class ``label`` in every figure of the chapter (matplotlib's C0..C9 cycle)."""
    return f"C{(int(label) - 1) % 10}"


def show_pixels(ax: Axes, image: Tensor, title: str | None = None) -> Axes:
    """Show a [3, H, W] image so that pixel (row i, column j) covers [j, j + 1) x [i, i + 1).

    This is the convention of the boxes (matplotlib's default centres pixel j on j instead), so
    a box (x1, y1, x2, y2) is drawn exactly along the edges of the pixels it encloses.
    """
    show_image(image, ax=ax, title=title)
    height, width = image.shape[-2:]
    ax.images[-1].set_extent((0, width, height, 0))
    return ax


def draw_target(
    ax: Axes,
    image: Tensor,
    target: dict,
    class_names: Sequence[str],
    classes: Collection[int] | None = None,
    title: str | None = None,
) -> int:
    """Show ``image`` with the boxes of ``target``, coloured and named by class.

    Args:
        ax: the axes to draw on.
        image: [3, H, W] float in [0, 1].
        target: ``boxes`` [N, 4] (x1, y1, x2, y2, pixels) and ``labels`` [N].
        class_names: names indexed by label (index 0 the background).
        classes: draw only the boxes whose label is in this collection (default: all).
        title: the axes' title.

    Returns:
        The number of boxes drawn.
    """
    show_pixels(ax, image, title)
    labels = target["labels"].reshape(-1).tolist()
    keep = [k for k, label in enumerate(labels) if classes is None or label in classes]
    boxes = target["boxes"].reshape(-1, 4)[keep]  # [kept, 4]
    draw_boxes(
        ax,
        boxes,
        color=[class_colour(labels[k]) for k in keep],
        labels=[class_names[labels[k]] for k in keep],
        linewidth=1.5,
    )
    return len(keep)


def plot_samples(
    samples: Sequence[tuple[Tensor, dict]],
    class_names: Sequence[str],
    titles: Sequence[str] | None = None,
    columns: int = 4,
    size: float = 2.8,
) -> plt.Figure:
    """A grid of ``(image, target)`` samples with their boxes, one panel each.

    Args:
        samples: the samples to draw, row by row.
        class_names: names indexed by label.
        titles: one title per sample (default: the number of objects).
        columns: panels per row.
        size: side of one panel, inches.
    """
    rows = max(1, -(-len(samples) // columns))  # ceil(len / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(samples):
            ax.set_axis_off()
            continue
        image, target = samples[k]
        n = len(target["labels"])
        title = titles[k] if titles is not None else f"{n} object{'' if n == 1 else 's'}"
        draw_target(ax, image, target, class_names, title=title)
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def draw_occlusion(ax: Axes, scene, class_names: Sequence[str]) -> Axes:
    """A ShapesDataset ``Scene``: dashed box around each whole object, solid around what shows.

    Each label gives the class and the visible fraction of the object; the solid box (the
    target) is tight around the visible pixels only.
    """
    show_pixels(ax, torch.from_numpy(scene.image))
    colours = [class_colour(label) for label in scene.labels.tolist()]
    names = [
        f"{class_names[label]} {fraction:.0%}"
        for label, fraction in zip(scene.labels.tolist(), scene.visible_fractions.tolist())
    ]
    draw_boxes(ax, torch.from_numpy(scene.full_boxes), colours, linestyle="--", linewidth=1.0)
    draw_boxes(ax, torch.from_numpy(scene.boxes), colours, labels=names, linewidth=2.0)
    return ax


def plot_statistics(
    targets: Sequence[dict],
    image_side: int,
    class_names: Sequence[str],
    visible_fractions: Sequence[np.ndarray] | None = None,
) -> plt.Figure:
    """Histograms of a dataset's targets: objects per image, classes, box sizes, visibility.

    Args:
        targets: one target dict per image.
        image_side: the images' shorter side, pixels (box sizes are shown as fractions of it).
        class_names: names indexed by label.
        visible_fractions: per image, the visible fraction of each object (a fourth panel).
    """
    counts = [len(t["labels"]) for t in targets]
    labels = torch.cat([t["labels"].reshape(-1) for t in targets])  # [all boxes]
    boxes = torch.cat([t["boxes"].reshape(-1, 4) for t in targets])  # [all boxes, 4]
    longer = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1) / image_side  # longer box side / image
    panels = 3 if visible_fractions is None else 4
    fig, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 2.6))
    axes[0].hist(counts, bins=np.arange(max(counts) + 2) - 0.5, color="C7")
    axes[0].set_xlabel("objects per image")
    per_class = torch.bincount(labels, minlength=len(class_names))[1:]  # [C - 1]
    axes[1].bar(
        class_names[1:],
        per_class.tolist(),
        color=[class_colour(k) for k in range(1, len(class_names))],
    )
    axes[1].tick_params(axis="x", labelrotation=45, labelsize=8)
    axes[1].set_xlabel("class")
    axes[2].hist(longer.numpy(), bins=20, color="C7")
    axes[2].set_xlabel("longer box side / image side")
    if visible_fractions is not None:
        axes[3].hist(np.concatenate(visible_fractions), bins=20, color="C7")
        axes[3].set_xlabel("visible fraction of an object")
    axes[0].set_ylabel("count")
    fig.tight_layout()
    return fig


def data_explorer(
    dataset,
    class_names: Sequence[str] | None = None,
    transforms: Callable | None = None,
):
    """ipywidgets explorer: pick an image, filter its boxes by class, switch augmentation on.

    Args:
        dataset: yields ``(image, target)`` WITHOUT transforms of its own (ShapesDataset,
            CocoDetectionDataset, VOCDetectionDataset, ...).
        class_names: names indexed by label (default: ``dataset.class_names``).
        transforms: the augmentation of the checkbox, called as ``transforms(image, target)``
            (default: ``SeededTransforms(train_transforms(), seed=0)``, so an image always gets
            the same augmentation).
    """
    from ipywidgets import Checkbox, Dropdown, IntSlider, interactive

    names = list(class_names if class_names is not None else dataset.class_names)
    augmentation = transforms or SeededTransforms(train_transforms(), seed=0)

    def show(index: int = 0, show_class: str = ALL_CLASSES, augment: bool = False) -> None:
        image, target = dataset[index]
        if augment:
            image, target = to_model_format(image, target, augmentation)
        classes = None if show_class == ALL_CLASSES else {names.index(show_class)}
        _, ax = plt.subplots(figsize=(5, 5))
        shown = draw_target(ax, image, target, names, classes=classes)
        ax.set_title(f"image {index}: {len(target['labels'])} objects, {shown} shown", fontsize=10)
        plt.show()

    return interactive(
        show,
        index=IntSlider(value=0, min=0, max=len(dataset) - 1, description="image"),
        show_class=Dropdown(options=[ALL_CLASSES, *names[1:]], description="class"),
        augment=Checkbox(value=False, description="augment (train_transforms)"),
    )
