"""ShapesDataset: a procedurally generated, deterministic detection dataset shipped with rcnn_lab.

No download: each image is drawn on demand from its own random generator, seeded by
(seed, split, index), with exact arithmetic only (:mod:`rcnn_lab.data.raster`), so the same
index gives the same image, bit for bit, on any machine. The generation rules (classes, sizes,
occlusion, clutter, backgrounds) are listed in :mod:`rcnn_lab.data.scene`.

Shapes: N objects of an image; C = len(CLASSES) classes, background included; H x W pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rcnn_lab.data.scene import CLASSES, MAX_OBJECTS, Scene, render_scene
from rcnn_lab.data.transforms import to_model_format

#: Default number of images of each split.
SPLIT_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000}
# the split enters each image's seed, so that the splits never share an image
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
#: Smallest image side accepted (objects are >= 8% of it, so 64 px gives 5 px objects).
MIN_IMAGE_SIDE = 64


class ShapesDataset(Dataset):
    """Synthetic shapes on textured, cluttered backgrounds, with boxes and class labels.

    Six classes (:attr:`CLASSES`, index 0 is the background): circle, ellipse, square, diamond,
    triangle, star, in pairs that differ only in detail (circle/ellipse, square/diamond). Each
    image holds 0..``max_objects`` objects of 8%..60% of the image side (some images are
    empty), on a noise, gradient, stripes or checker background with clutter that is not an
    object (thin lines, small blobs, text-like strokes). Objects may overlap, but every object
    stays >= 60% visible (a shape that would hide more of an earlier one is moved, shrunk or
    dropped), and its box is tight around its VISIBLE pixels.

    Image ``index`` of a split is fixed by (``seed``, ``split``, ``index``): a dataset of size n
    is the first n images of any larger one, and the splits never share an image.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of images; default ``SPLIT_SIZES[split]`` (10000 / 1000 / 1000).
        seed: non-negative integer; a different seed gives a different dataset.
        image_size: H = W, or (H, W), in pixels (>= ``MIN_IMAGE_SIDE``); default 160.
        max_objects: most objects per image (default 8).
        transforms: called as ``transforms(image, target)`` with a ``tv_tensors.Image`` and
            ``target["boxes"]`` a ``tv_tensors.BoundingBoxes`` (see :func:`train_transforms`).
        cache: keep every generated sample in memory (before transforms): 0.3 MB per
            160 x 160 image. Generating one takes about 2.5..4 ms of one CPU core (250..400
            images/s), so caching only pays when a small dataset is read for many epochs.

    Items are ``(image, target)``: image [3, H, W] float32 in [0, 1]; target ``boxes`` [N, 4]
    float32 (x1, y1, x2, y2) in pixels, ``labels`` [N] int64 in 1..C-1, ``image_id`` (int, the
    index), ``area`` [N] float32 visible area in square pixels, ``iscrowd`` [N] int64 zeros.
    """

    CLASSES = CLASSES
    SPLITS = tuple(SPLIT_SIZES)

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        seed: int = 0,
        image_size: int | tuple[int, int] = 160,
        max_objects: int = MAX_OBJECTS,
        transforms: Callable | None = None,
        cache: bool = False,
    ):
        if split not in SPLIT_SIZES:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        size = SPLIT_SIZES[split] if size is None else size
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be a non-negative integer, got {size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if min(height, width) < MIN_IMAGE_SIDE:
            raise ValueError(f"image_size must be >= {MIN_IMAGE_SIDE} px, got {image_size!r}")
        if not 0 <= max_objects <= 2**15 - 2:
            raise ValueError(f"max_objects must be in 0..32766, got {max_objects!r}")
        self.split, self.size, self.seed = split, size, seed
        self.height, self.width, self.max_objects = int(height), int(width), int(max_objects)
        self.transforms = transforms
        self._cache: dict[int, tuple[Tensor, dict]] | None = {} if cache else None

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by label; ``class_names[0] == "__background__"``."""
        return list(CLASSES)

    @property
    def num_classes(self) -> int:
        """C, the number of classes including the background (torchvision's ``num_classes``)."""
        return len(CLASSES)

    @property
    def label_to_category_id(self) -> dict[int, int]:
        """Label -> COCO category id (the identity: :func:`export_coco` writes ids 1..C-1)."""
        return {label: label for label in range(1, len(CLASSES))}

    def __len__(self) -> int:
        return self.size

    def _index(self, index: int) -> int:
        """``index`` as a position in 0..len-1 (negative counts from the end); IndexError if out."""
        position = int(index) + (self.size if int(index) < 0 else 0)
        if not 0 <= position < self.size:
            raise IndexError(f"index {index} out of range for {self.size} images")
        return position

    def scene(self, index: int) -> Scene:
        """The full scene of image ``index``: pixels, visible and full boxes, visible fractions."""
        position = self._index(index)
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], position])
        return render_scene(rng, self.height, self.width, self.max_objects)

    def _sample(self, position: int) -> tuple[Tensor, dict]:
        """Image and target of image ``position``, before transforms."""
        if self._cache is not None and position in self._cache:
            return self._cache[position]
        scene = self.scene(position)
        n = len(scene.labels)
        sample = (
            torch.from_numpy(scene.image),
            {
                "boxes": torch.from_numpy(scene.boxes),
                "labels": torch.from_numpy(scene.labels),
                "image_id": position,
                "area": torch.from_numpy(scene.areas),
                "iscrowd": torch.zeros(n, dtype=torch.int64),
            },
        )
        if self._cache is not None:
            self._cache[position] = sample
        return sample

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        """``(image [3, H, W] float32, target)`` of image ``index`` (see the class docstring)."""
        image, target = self._sample(self._index(index))
        if self._cache is not None:  # hand out copies: callers may modify them in place
            image, target = image.clone(), {k: _copy(v) for k, v in target.items()}
        return to_model_format(image, target, self.transforms)

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, size={self.size}, seed={self.seed}, "
            f"image_size=({self.height}, {self.width}), max_objects={self.max_objects})"
        )


def _copy(value):
    return value.clone() if isinstance(value, Tensor) else value
