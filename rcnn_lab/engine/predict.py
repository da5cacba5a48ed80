"""Inference on images: detections above a score threshold, as JSON records and as a picture.

Shapes: D detections of an image; H x W pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as F

# a colour per class, cycling through matplotlib's ten-colour palette
_PALETTE = tuple(
    f"tab:{c}" for c in "blue orange green red purple brown pink gray olive cyan".split()
)


def read_image(path: str | Path) -> Tensor:
    """An image file as [3, H, W] float32 in [0, 1] (RGB); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {path} as an image: {e}") from e
    return F.to_dtype(F.to_image(rgb), torch.float32, scale=True).as_subclass(Tensor)


@torch.no_grad()
def predict(
    model: nn.Module, images: Sequence[Tensor], *, score_thresh: float = 0.5, batch_size: int = 4
) -> list[dict[str, Tensor]]:
    """Detections of ``model`` on ``images`` with a score of at least ``score_thresh``, on the CPU.

    Args:
        model: a detector (eval-mode output: ``boxes`` [D, 4], ``labels`` [D], ``scores`` [D]).
        images: [3, H, W] float tensors in [0, 1]; moved to the model's device.
        score_thresh: keep detections scoring at least this.
        batch_size: images per forward pass.

    Returns:
        One dict per image with ``boxes`` [D, 4] (x1, y1, x2, y2 in the image's pixels),
        ``labels`` [D] and ``scores`` [D], by decreasing score. The model's mode is restored.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, len(images), batch_size):
            batch = [image.to(device) for image in images[start : start + batch_size]]
            for output in model(batch):
                keep = output["scores"] >= score_thresh
                results.append({k: output[k][keep].cpu() for k in ("boxes", "labels", "scores")})
    finally:
        model.train(was_training)
    return results


def _name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def detection_records(
    detections: dict[str, Tensor], class_names: Sequence[str] | None = None
) -> list[dict]:
    """One image's detections as JSON-ready dicts: ``box`` [x1, y1, x2, y2], ``label``,
    ``class`` (its name, or the label as text without ``class_names``) and ``score``."""
    boxes, labels, scores = (detections[k].tolist() for k in ("boxes", "labels", "scores"))
    return [
        {
            "box": [round(float(v), 2) for v in box],
            "label": int(label),
            "class": _name(int(label), class_names),
            "score": round(float(score), 4),
        }
        for box, label, score in zip(boxes, labels, scores)
    ]


def save_prediction_figure(
    images: Sequence[Tensor],
    detections: Sequence[dict[str, Tensor]],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    columns: int = 4,
) -> Path:
    """Draw each image with its boxes (coloured by class, labelled "name score") into one PNG.

    Uses a bare ``matplotlib.figure.Figure``: no pyplot state, no window, any backend.
    """
    from matplotlib.figure import Figure  # matplotlib only when drawing: it imports slowly

    from rcnn_lab.viz.draw import draw_boxes, show_image

    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for k, ax in enumerate(axes):
        if k >= len(images):
            ax.set_axis_off()
            continue
        show_image(images[k], ax=ax, title=titles[k] if titles else None)
        dets = detections[k]
        labels = dets["labels"].tolist()
        text = [f"{_name(c, class_names)} {s:.2f}" for c, s in zip(labels, dets["scores"].tolist())]
        colours = [_PALETTE[c % len(_PALETTE)] for c in labels]
        draw_boxes(ax, dets["boxes"], color=colours, labels=text)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
