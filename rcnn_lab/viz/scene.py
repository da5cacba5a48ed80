"""A procedurally drawn scene for the chapters: no downloads, deterministic for a seed.

The scene is a soft sky-to-ground gradient with a few filled shapes (rectangles, ellipses,
triangles) in distinct colours; each shape's tight bounding box is its ground truth.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Class names of the shapes, index 0 being the background (torchvision's convention).
SHAPE_CLASSES = ("background", "rectangle", "ellipse", "triangle")

_PALETTE = torch.tensor(
    [
        [0.85, 0.33, 0.10],
        [0.00, 0.45, 0.74],
        [0.93, 0.69, 0.13],
        [0.49, 0.18, 0.56],
        [0.47, 0.67, 0.19],
        [0.64, 0.08, 0.18],
    ]
)


def _background(height: int, width: int, generator: torch.Generator) -> Tensor:
    """A vertical sky-to-ground gradient with a little texture, [3, H, W] in [0, 1]."""
    t = torch.linspace(0.0, 1.0, height).view(1, height, 1)
    sky = torch.tensor([0.62, 0.78, 0.92]).view(3, 1, 1)
    ground = torch.tensor([0.55, 0.52, 0.42]).view(3, 1, 1)
    image = (1 - t) * sky + t * ground  # [3, H, 1]
    noise = 0.03 * torch.rand((1, height, width), generator=generator)
    return (image.expand(3, height, width) + noise).clamp(0, 1)


def toy_scene(
    height: int = 480,
    width: int = 640,
    num_objects: int = 5,
    seed: int = 0,
    min_size: int = 24,
    max_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw a scene of ``num_objects`` shapes and return ``(image, boxes, labels)``.

    Args:
        height, width: image size in pixels.
        num_objects: number of shapes (G).
        seed: seed of the private random generator (the global RNG is untouched).
        min_size, max_size: side lengths of the shapes' boxes, in pixels
            (``max_size`` defaults to half the shorter image side).

    Returns:
        image: [3, H, W] float32 in [0, 1].
        boxes: [G, 4] float32 (x1, y1, x2, y2) in pixels, the tight box of each shape.
        labels: [G] int64 in 1..3, indices into :data:`SHAPE_CLASSES`.
    """
    if height < 2 * min_size or width < 2 * min_size:
        raise ValueError(f"image {height}x{width} is too small for shapes of {min_size} px")
    max_size = max_size or min(height, width) // 2
    if max_size < min_size:
        raise ValueError(f"max_size={max_size} is smaller than min_size={min_size}")
    g = torch.Generator().manual_seed(seed)
    image = _background(height, width, g)
    ys = torch.arange(height, dtype=torch.float32).view(height, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, width) + 0.5
    boxes, labels = [], []
    for i in range(num_objects):
        w = int(torch.randint(min_size, max_size + 1, (1,), generator=g))
        h = int(torch.randint(min_size, max_size + 1, (1,), generator=g))
        x1 = int(torch.randint(0, width - w + 1, (1,), generator=g))
        y1 = int(torch.randint(0, height - h + 1, (1,), generator=g))
        label = int(torch.randint(1, len(SHAPE_CLASSES), (1,), generator=g))
        if label == 1:
            mask = (xs >= x1) & (xs < x1 + w) & (ys >= y1) & (ys < y1 + h)
        elif label == 2:
            cx, cy = x1 + w / 2, y1 + h / 2
            mask = ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2 <= 1
        else:  # an upward triangle filling the box
            rel = (ys - y1) / h  # 0 at the apex row, 1 at the base
            half = rel * w / 2
            mask = (rel >= 0) & (rel <= 1) & ((xs - (x1 + w / 2)).abs() <= half)
        colour = _PALETTE[i % len(_PALETTE)].view(3, 1, 1)
        image = torch.where(mask.unsqueeze(0), colour.expand(3, height, width), image)
        boxes.append([x1, y1, x1 + w, y1 + h])
        labels.append(label)
    box_tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return image, box_tensor, torch.tensor(labels, dtype=torch.int64)


def jitter_boxes(boxes: Tensor, count: int, scale: float = 0.15, seed: int = 0) -> Tensor:
    """``count`` noisy copies of each box (like a detector's overlapping guesses), [G*count, 4].

    Each corner moves by a normal offset of ``scale`` times the box's side length.
    """
    g = torch.Generator().manual_seed(seed)
    sides = torch.cat([boxes[:, 2:] - boxes[:, :2]] * 2, dim=1)  # [G, 4] (w, h, w, h)
    noise = torch.randn((boxes.shape[0], count, 4), generator=g, dtype=boxes.dtype)
    out = boxes[:, None, :] + scale * sides[:, None, :] * noise  # [G, count, 4]
    x1y1 = torch.minimum(out[..., :2], out[..., 2:])
    x2y2 = torch.maximum(out[..., :2], out[..., 2:]) + 1e-3  # keep width and height > 0
    return torch.cat([x1y1, x2y2], dim=-1).reshape(-1, 4)
