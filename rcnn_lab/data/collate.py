"""Batching for detection: images of different sizes and targets of different lengths.

Shapes: B samples in a batch.
"""

from __future__ import annotations

from torch import Tensor


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """Turn B ``(image, target)`` samples into ``(images, targets)``, two lists of length B.

    Nothing is stacked or padded: a detector takes a list of [3, H_i, W_i] images and a list of
    target dicts (``GeneralizedRCNNTransform`` resizes and pads them). Use it as a DataLoader's
    ``collate_fn``.
    """
    images, targets = [], []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets
