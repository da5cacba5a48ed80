"""A trained detector's output, drawn for chapters 7 and 9.

Detections coloured by class with readable labels (only the best few carry text), the RoI
heads' three inference settings applied to one image, and the live explorer for Jupyter (which
:func:`rcnn_lab.viz.frames.explorer_frames` pre-draws for the static book).

Shapes: D detections of an image, G ground-truth boxes; images [3, H, W] float in [0, 1].
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from rcnn_lab.viz.data import class_colour
from rcnn_lab.viz.draw import draw_boxes, show_image

#: The RoI heads' attributes that shape inference (FasterRCNN's box_score_thresh,
#: box_nms_thresh and box_detections_per_img), by the names the settings use.
INFERENCE_SETTINGS = ("score_thresh", "nms_thresh", "detections_per_img")
#: How many of an image's detections get a "class score" label (more would overlap).
MAX_LABELS = 6


def draw_ground_truth(ax: Axes, boxes: Tensor) -> Axes:
    """Ground-truth boxes [G, 4], dashed black on white: visible on any background and apart
    from every class colour."""
    draw_boxes(ax, boxes, color="white", linewidth=2.2)
    draw_boxes(ax, boxes, color="black", linewidth=1.0, linestyle="--")
    return ax


def draw_detections(
    ax: Axes,
    image: Tensor,
    detections: Mapping[str, Tensor],
    class_names: Sequence[str],
    target: Mapping[str, Tensor] | None = None,
    max_labels: int = MAX_LABELS,
    title: str = "",
) -> Axes:
    """``image`` with its detections, coloured by class; ground truth (if given) dashed.

    Only the ``max_labels`` best-scored detections are labelled "class score" (the detections
    come sorted by score); the others are drawn thinner and unlabelled.
    """
    show_image(image, ax=ax, title=title)
    if target is not None:
        draw_ground_truth(ax, target["boxes"])
    boxes, labels, scores = detections["boxes"], detections["labels"], detections["scores"]
    order = scores.argsort(descending=True, stable=True)
    rest, best = order[max_labels:], order[:max_labels]
    draw_boxes(ax, boxes[rest], color=[class_colour(c) for c in labels[rest]], linewidth=0.7)
    names = [f"{class_names[int(c)]} {float(s):.2f}" for c, s in zip(labels[best], scores[best])]
    draw_boxes(
        ax, boxes[best], color=[class_colour(c) for c in labels[best]], labels=names, linewidth=1.6
    )
    return ax


def draw_sampled_rois(
    ax: Axes, image: Tensor, rois: Tensor, labels: Tensor, gt_boxes: Tensor, title: str = ""
) -> Axes:
    """The RoIs sampled for training: foreground blue, background grey, ground truth dashed.

    Args:
        rois: [K, 4] in the image's pixels; labels: [K] class per RoI (0: background).
        gt_boxes: [G, 4].
    """
    show_image(image, ax=ax, title=title)
    background = labels == 0
    draw_boxes(ax, rois[background], color="0.55", linewidth=0.6, alpha=0.6)
    draw_boxes(ax, rois[~background], color="tab:blue", linewidth=1.0)
    draw_ground_truth(ax, gt_boxes)
    return ax


@contextmanager
def inference_settings(model: nn.Module, **settings: float | int):
    """Temporarily set ``model.roi_heads``' ``score_thresh``, ``nms_thresh``,
    ``detections_per_img``; restores them on exit (also after an error)."""
    unknown = set(settings) - set(INFERENCE_SETTINGS)
    if unknown:
        raise ValueError(f"unknown inference settings {sorted(unknown)}: use {INFERENCE_SETTINGS}")
    heads = model.roi_heads
    saved = {name: getattr(heads, name) for name in settings}
    for name, value in settings.items():
        setattr(heads, name, value)
    try:
        yield model
    finally:
        for name, value in saved.items():
            setattr(heads, name, value)


@torch.no_grad()
def detect(model: nn.Module, images: Sequence[Tensor], **settings: float | int) -> list[dict]:
    """``model(images)`` in eval mode with the given inference settings (model left as it was).

    Inference draws no random numbers, so the result depends only on the model, the images and
    the settings: any explorer built on it is deterministic.
    """
    was_training = model.training
    images = [image.to(next(model.parameters()).dtype) for image in images]
    try:
        with inference_settings(model, **settings):
            return model.eval()(list(images))
    finally:
        model.train(was_training)


def settings_label(settings: Mapping[str, float | int]) -> str:
    """A short label of inference settings: ``score 0.5, nms 1.0``."""
    return ", ".join(f"{name.split('_')[0]} {value}" for name, value in settings.items())


def figure_jpeg(fig: Figure, dpi: int = 120) -> bytes:
    """The JPEG bytes of ``fig`` at ``dpi`` (1.2x matplotlib's 100, sharper on HiDPI screens).

    JPEG, not PNG: the scenes' textured backgrounds make PNGs three times larger.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": 85})
    return buffer.getvalue()


def show_jpeg(fig: Figure, dpi: int = 120) -> None:
    """Display ``fig`` as a JPEG image output and close it.

    For photographs-like figures (the scenes): a third of the PNG's size. The output's text
    part is a fixed ``<IPython.core.display.Image object>``, so nbval checks it on any CPU.
    """
    from IPython.display import Image, display

    width = int(fig.get_figwidth() * 100)  # CSS px at matplotlib's default 100 dpi
    data = figure_jpeg(fig, dpi)
    plt.close(fig)
    display(Image(data=data, format="jpeg", width=width))


def detection_explorer(
    model: nn.Module,
    images: Sequence[Tensor],
    class_names: Sequence[str],
    targets: Sequence[Mapping[str, Tensor]] | None = None,
    first_scene: int = 1,
):
    """ipywidgets explorer: scene, score threshold, NMS threshold, detections per image.

    Deterministic (inference draws no random numbers) and leaves the model's settings as they
    were after every redraw.
    """
    import ipywidgets as widgets

    heads = model.roi_heads

    def show(scene: int, score_thresh: float, nms_thresh: float, detections_per_img: int):
        setting = {"score_thresh": score_thresh, "nms_thresh": nms_thresh,
                   "detections_per_img": detections_per_img}  # fmt: skip
        found = detect(model, [images[scene]], **setting)[0]
        _, ax = plt.subplots(figsize=(4.5, 4.5))
        target = targets[scene] if targets is not None else None
        title = f"scene {scene}: {len(found['boxes'])} detections"
        draw_detections(ax, images[scene], found, class_names, target=target, title=title)
        plt.show()

    return widgets.interact(
        show,
        scene=widgets.IntSlider(
            value=min(first_scene, len(images) - 1), min=0, max=len(images) - 1
        ),
        score_thresh=widgets.FloatSlider(value=heads.score_thresh, min=0.0, max=0.95, step=0.05),
        nms_thresh=widgets.FloatSlider(value=heads.nms_thresh, min=0.05, max=1.0, step=0.05),
        detections_per_img=widgets.IntSlider(
            value=heads.detections_per_img, min=1, max=max(100, heads.detections_per_img)
        ),
    )


__all__ = [
    "INFERENCE_SETTINGS",
    "MAX_LABELS",
    "draw_ground_truth",
    "draw_detections",
    "draw_sampled_rois",
    "inference_settings",
    "detect",
    "settings_label",
    "figure_jpeg",
    "show_jpeg",
    "detection_explorer",
]
