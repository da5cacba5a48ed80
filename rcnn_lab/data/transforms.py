"""Augmentation with ``torchvision.transforms.v2``, and the datasets' common output format.

Every dataset here hands its transforms an ``(image, target)`` pair: the image a
``tv_tensors.Image`` [3, H, W] float32 in [0, 1], ``target["boxes"]`` a ``tv_tensors.BoundingBoxes``
(XYXY, pixels), so that v2's box-aware transforms move the boxes with the pixels. No box geometry
is written here: flips, scaling, clamping and the removal of degenerate boxes are v2's own.

Seeding: v2 draws from torch's global RNG. ``torch.manual_seed(s)`` makes a single-process run
reproducible; with DataLoader workers, pass ``generator=torch.Generator().manual_seed(s)`` to the
loader (each worker seeds torch from it). :class:`SeededTransforms` makes every sample's
augmentation depend only on (seed, epoch, image id), whatever the worker or the order.

Shapes: N boxes of an image; H x W pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

# target entries that hold one value per box and must be filtered with the boxes
_PER_BOX_KEYS = ("labels", "area", "iscrowd")
# SeededTransforms folds (seed, epoch, image id) into one torch seed with this odd multiplier
_SEED_MIX = 1_000_003


def per_box_entries(inputs) -> tuple[Tensor, ...]:
    """``labels_getter`` for ``v2.SanitizeBoundingBoxes``: labels, area and iscrowd of a sample.

    Args:
        inputs: ``(image, target)``; the target's per-box tensors are dropped with their boxes.
    """
    target = inputs[1]
    return tuple(target[k] for k in _PER_BOX_KEYS if isinstance(target.get(k), Tensor))


def train_transforms(
    hflip_p: float = 0.5,
    scale_range: tuple[float, float] = (0.75, 1.25),
    photometric: bool = True,
) -> v2.Compose:
    """Detection training augmentation: photometric distortion, scale jitter, horizontal flip.

    Scale jitter zooms the content about the image centre by a factor drawn from
    ``scale_range`` on a canvas of the same size (``v2.RandomAffine``; zooming out pads with
    black, zooming in crops), so it survives the detector's own resize to a fixed size. Boxes
    are then clamped to the image and boxes under 1 px dropped with their labels, area and
    iscrowd (``v2.ClampBoundingBoxes``, ``v2.SanitizeBoundingBoxes``).

    Args:
        hflip_p: probability of a horizontal flip (0 disables it).
        scale_range: (low, high) zoom factors; (1, 1) disables scale jitter. For ShapesDataset
            keep low >= 0.75 so that the smallest objects stay larger than the clutter blobs.
        photometric: apply ``v2.RandomPhotometricDistort`` (brightness, contrast, saturation,
            hue, channel order; each with probability 0.5).
    """
    steps: list[Callable] = []
    if photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    if tuple(scale_range) != (1.0, 1.0):
        steps.append(
            v2.RandomAffine(
                degrees=0.0,
                scale=tuple(scale_range),
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if hflip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip_p))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=per_box_entries)]
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    """Evaluation transforms: only make sure the image is a float32 tensor in [0, 1].

    The datasets here already return such images, so this changes nothing for them; it lets
    the same pipeline take a PIL image or a uint8 tensor.
    """
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


class SeededTransforms:
    """Run transforms with torch's RNG seeded from (seed, epoch, ``target["image_id"]``).

    The same sample then gets the same augmentation in any DataLoader worker and in any order,
    and a new one each epoch (call :meth:`set_epoch` before each epoch). The caller's RNG state
    is restored afterwards.

    Args:
        transforms: called as ``transforms(image, target)``.
        seed: any integer.
    """

    def __init__(self, transforms: Callable, seed: int):
        self.transforms, self.seed, self.epoch = transforms, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentations of epoch ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __call__(self, image, target: dict):
        """Apply the transforms to ``(image, target)`` under this sample's own seed."""
        key = (self.seed * _SEED_MIX + self.epoch) * _SEED_MIX + int(target["image_id"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key % (2**63))
            return self.transforms(image, target)

    def __repr__(self) -> str:
        return f"SeededTransforms(seed={self.seed}, epoch={self.epoch}, {self.transforms!r})"


def to_model_format(image: Tensor, target: dict, transforms: Callable | None = None):
    """Apply ``transforms`` to one sample, then return it in the format the detectors take.

    Args:
        image: [3, H, W] float32 in [0, 1].
        target: ``boxes`` [N, 4] (x1, y1, x2, y2, pixels; a tensor or ``BoundingBoxes``),
            ``labels`` [N] and optionally ``area`` [N], ``iscrowd`` [N], ``image_id``.
        transforms: called as ``transforms(image, target)`` with ``tv_tensors`` inside.

    Returns:
        (image [3, H', W'] float32 tensor, target with plain tensors: ``boxes`` float32 [N', 4],
        ``labels`` int64 [N'], ``area`` float32 [N'], ``iscrowd`` int64 [N'], ``image_id`` int).
    """
    if transforms is not None:
        image = tv_tensors.Image(image)
        boxes = target["boxes"]
        if not isinstance(boxes, tv_tensors.BoundingBoxes):
            boxes = tv_tensors.BoundingBoxes(
                boxes, format="XYXY", canvas_size=tuple(image.shape[-2:])
            )
        image, target = transforms(image, {**target, "boxes": boxes})
    out = {
        "boxes": target["boxes"].as_subclass(Tensor).to(torch.float32).reshape(-1, 4),
        "labels": target["labels"].as_subclass(Tensor).to(torch.int64),
    }
    n = out["labels"].shape[0]
    area = target.get("area")
    out["area"] = (
        area.as_subclass(Tensor).to(torch.float32)
        if isinstance(area, Tensor)
        else (out["boxes"][:, 2] - out["boxes"][:, 0]) * (out["boxes"][:, 3] - out["boxes"][:, 1])
    )
    iscrowd = target.get("iscrowd")
    out["iscrowd"] = (
        iscrowd.as_subclass(Tensor).to(torch.int64)
        if isinstance(iscrowd, Tensor)
        else torch.zeros(n, dtype=torch.int64)
    )
    if "image_id" in target:
        out["image_id"] = int(target["image_id"])
    return image.as_subclass(Tensor), out
