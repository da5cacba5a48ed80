"""Inputs of the benchmarks: boxes for NMS, RoIs for RoIAlign/RoIPool, images with targets.

Every generator draws from its own seeded ``torch.Generator`` on the CPU and then moves the
result to ``device``, so the CPU and GPU runs see the same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

IMAGE = 1000.0  # NMS boxes live in a 1000 x 1000 image
MIN_SIDE, MAX_SIDE = 10.0, 100.0
CLUSTERS = 20  # objects in the clustered scene; each gets N / 20 jittered guesses on average
JITTER = 0.1  # corner noise as a fraction of the object's side
# chain: neighbours overlap with IoU (10-2)/(10+2) = 0.67, next but one 6/14 = 0.43
CHAIN_SIDE, CHAIN_STEP = 10.0, 2.0
#: RoI sides in feature pixels, the range FPN's level mapper sends to one level (2..28 px)
ROI_MIN_SIDE, ROI_MAX_SIDE = 2.0, 28.0


def uniform_boxes(n: int, seed: int, device="cpu") -> tuple[Tensor, Tensor]:
    """[n, 4] boxes at uniformly random places with sides in [10, 100), and [n] scores."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * IMAGE
    wh = MIN_SIDE + torch.rand(n, 2, generator=g) * (MAX_SIDE - MIN_SIDE)
    scores = torch.rand(n, generator=g)
    return torch.cat([xy, xy + wh], dim=1).to(device), scores.to(device)


def clustered_boxes(n: int, seed: int, device="cpu") -> tuple[Tensor, Tensor]:
    """[n, 4] noisy guesses around 20 objects, as a detector's raw output, and [n] scores."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(CLUSTERS, 2, generator=g) * (IMAGE - MAX_SIDE)
    size = 3 * MIN_SIDE + torch.rand(CLUSTERS, 2, generator=g) * (MAX_SIDE - 3 * MIN_SIDE)
    which = torch.randint(0, CLUSTERS, (n,), generator=g)
    objects = torch.cat([corner, corner + size], dim=1)[which]  # [n, 4]
    noisy = objects + JITTER * size[which].repeat(1, 2) * torch.randn(n, 4, generator=g)
    boxes = torch.cat([noisy[:, :2].minimum(noisy[:, 2:]), noisy[:, :2].maximum(noisy[:, 2:])], 1)
    scores = torch.rand(n, generator=g)
    return boxes.to(device), scores.to(device)


def chain_boxes(n: int, dtype=torch.float32, device="cpu") -> tuple[Tensor, Tensor]:
    """[n, 4] boxes sliding right by CHAIN_STEP, and [n] decreasing scores.

    Each box overlaps its neighbour above IoU 0.5 but not the one after, so greedy NMS keeps
    every other box and each decision depends on the one before it.
    """
    x = torch.arange(n, dtype=dtype, device=device) * CHAIN_STEP
    zeros = torch.zeros_like(x)
    boxes = torch.stack([x, zeros, x + CHAIN_SIDE, zeros + CHAIN_SIDE], dim=1)  # [n, 4]
    return boxes, torch.linspace(1, 0, n, dtype=dtype, device=device)


def class_boxes(n: int, classes: int, seed: int, device="cpu") -> tuple[Tensor, Tensor, Tensor]:
    """[n, 4] uniform boxes, [n] scores and [n] categories in [0, classes)."""
    boxes, scores = uniform_boxes(n, seed)
    g = torch.Generator().manual_seed(seed + 1)
    idxs = torch.randint(0, classes, (n,), generator=g)
    return boxes.to(device), scores.to(device), idxs.to(device)


def make_rois(n: int, height: int, width: int, k: int, scale: float, device="cpu", seed: int = 0):
    """[K, 5] RoIs (image index, x1, y1, x2, y2) in image pixels; about 1 in 6 pokes out."""
    g = torch.Generator().manual_seed(seed)
    side = (ROI_MIN_SIDE + torch.rand(k, 2, generator=g) * (ROI_MAX_SIDE - ROI_MIN_SIDE)) / scale
    image = torch.tensor([width, height]) / scale
    xy = torch.rand(k, 2, generator=g) * (image * 1.2) - image * 0.1 - side / 2
    ids = torch.randint(0, n, (k, 1), generator=g).float()
    return torch.cat([ids, xy, xy + side], dim=1).to(device)  # [K, 5]


def proposals(image_size: tuple[int, int], k: int, seed: int, device="cpu") -> Tensor:
    """[k, 4] boxes inside an image of (height, width), sides 16 px to half the image."""
    g = torch.Generator().manual_seed(seed)
    height, width = image_size
    limit = torch.tensor([width, height], dtype=torch.float32)
    side = 16 + torch.rand(k, 2, generator=g) * (limit / 2 - 16)
    xy = torch.rand(k, 2, generator=g) * (limit - side)
    return torch.cat([xy, xy + side], dim=1).to(device)


def images(n: int, height: int, width: int, seed: int = 1, device="cpu") -> list[Tensor]:
    """n random [3, height, width] images in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, height, width, generator=g).to(device) for _ in range(n)]


def targets(n: int, height: int, width: int, boxes: int = 3, seed: int = 2, device="cpu"):
    """n training targets with ``boxes`` boxes each (labels in 1..90)."""
    out = []
    for i in range(n):
        b = proposals((height, width), boxes, seed + i)
        g = torch.Generator().manual_seed(seed + i)
        labels = torch.randint(1, 91, (boxes,), generator=g)
        out.append({"boxes": b.to(device), "labels": labels.to(device)})
    return out
