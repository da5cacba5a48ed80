#!/usr/bin/env python
"""Draw the static figures of the book and the README (book/images/), deterministically.

python scripts/make_figures.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rcnn_lab.data import ShapesDataset  # noqa: E402
from rcnn_lab.ops import nms  # noqa: E402
from rcnn_lab.pretrained import load_shapes_model  # noqa: E402
from rcnn_lab.viz.detections import detect, draw_detections  # noqa: E402
from rcnn_lab.viz.draw import draw_boxes, show_image  # noqa: E402
from rcnn_lab.viz.scene import jitter_boxes, toy_scene  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "book" / "images"


def nms_figure(path: Path) -> None:
    """Scene, many overlapping guesses, and what greedy NMS keeps."""
    image, gt, _ = toy_scene(240, 320, num_objects=4, seed=3, min_size=30, max_size=110)
    guesses = jitter_boxes(gt, count=8, scale=0.08, seed=1)
    scores = torch.rand(len(guesses), generator=torch.Generator().manual_seed(2))
    keep = nms(guesses, scores, 0.5)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    show_image(image, axes[0], "an image and its objects")
    draw_boxes(axes[0], gt, color="black", linewidth=2)
    show_image(image, axes[1], f"{len(guesses)} overlapping guesses")
    draw_boxes(axes[1], guesses, color="tab:red", linewidth=0.8, alpha=0.7)
    show_image(image, axes[2], f"after NMS at IoU 0.5: {len(keep)} kept")
    draw_boxes(axes[2], guesses[keep], color="tab:green", linewidth=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def detections_figure(path: Path) -> None:
    """The shipped model on four held-out test scenes (float64: the same boxes on any CPU)."""
    detector = load_shapes_model().double()
    test_set = ShapesDataset("test", size=12)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, index in zip(axes, (1, 2, 5, 10)):
        image, target = test_set[index]
        found = detect(detector, [image.double()], score_thresh=0.5)[0]
        title = f"scene {index}: {len(target['boxes'])} objects, {len(found['boxes'])} found"
        draw_detections(ax, image, found, detector.class_names, target=target, title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=80, pil_kwargs={"quality": 85})
    plt.close(fig)


def main() -> int:
    """Write every figure."""
    OUT.mkdir(parents=True, exist_ok=True)
    nms_figure(OUT / "nms_overview.png")
    detections_figure(OUT / "shipped_detections.jpg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
