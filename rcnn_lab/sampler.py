"""Balanced positive/negative sampler: pick a fixed-size mini-batch of anchors or proposals.

An image has ~10^4-10^5 anchors and only a handful overlap an object; a loss over all of them is
dominated by easy background. Faster R-CNN (Ren et al. 2015, Sec. 3.1.3) samples 256 anchors per
image with up to half positives, padding with negatives when positives are too few; the RoI
heads sample 512 proposals with a quarter positives (Fast R-CNN, Girshick 2015, Sec. 2.3).

The random draws are exactly torchvision's: per image one ``torch.randperm`` over the positives,
then one over the negatives, so a seeded run selects the very same samples.

Shapes: P predictions (anchors or proposals) of one image.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class SamplerProtocol(Protocol):
    """What the RPN and the RoI heads need of a sampler (``fg_bg_sampler=``).

    Called with one label tensor [P_i] per image (>= 1 positive, 0 negative, -1 ignored), it
    returns two lists of per-image masks [P_i] (uint8 or bool): the sampled positives and the
    sampled negatives. Only the masked elements enter the losses.
    """

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per-image labels -> (positive masks, negative masks)."""
        ...


class BalancedPositiveNegativeSampler:
    """Sample ``batch_size_per_image`` elements per image, a ``positive_fraction`` of them positive.

    Args:
        batch_size_per_image: number of elements selected per image (fewer if the image has
            fewer positives plus negatives).
        positive_fraction: the largest share of positives in a mini-batch, in [0, 1].
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image < 0:
            raise ValueError(f"batch_size_per_image must be >= 0, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Sample positives and negatives in every image.

        Args:
            matched_idxs: one [P] tensor per image: values >= 1 are positives, 0 negatives,
                anything below 0 (ignored, between thresholds) is never sampled.

        Returns:
            pos_masks, neg_masks: one [P] uint8 mask per image, 1 where the element was sampled
            as a positive (resp. a negative).
        """
        if not isinstance(matched_idxs, (list, tuple)):
            raise ValueError(
                f"matched_idxs must be a list of [P] tensors, got {type(matched_idxs).__name__}"
            )
        pos_masks, neg_masks = [], []
        for image_index, matched_per_image in enumerate(matched_idxs):
            if not isinstance(matched_per_image, Tensor) or matched_per_image.dim() != 1:
                shape = getattr(matched_per_image, "shape", type(matched_per_image).__name__)
                raise ValueError(f"matched_idxs[{image_index}] must be a [P] tensor, got {shape}")
            pos_mask, neg_mask = self._sample_image(matched_per_image)
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks

    def _sample_image(self, matched: Tensor) -> tuple[Tensor, Tensor]:
        """Positive and negative [P] uint8 masks of one image."""
        positive = torch.nonzero(matched >= 1).flatten()  # [num positives] indices
        negative = torch.nonzero(matched == 0).flatten()  # [num negatives] indices
        # int() truncates like torchvision: 256 * 0.25 -> 64, 10 * 0.33 -> 3
        num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
        # negatives fill the rest of the batch, so an image with few objects still has 256 samples
        num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
        # the two randperm calls, in this order, are what makes seeded runs match torchvision
        chosen_pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
        chosen_neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
        return _index_mask(matched, chosen_pos), _index_mask(matched, chosen_neg)


def _index_mask(like: Tensor, indices: Tensor) -> Tensor:
    """A uint8 mask shaped like ``like`` with 1 at ``indices`` and 0 elsewhere."""
    mask = torch.zeros_like(like, dtype=torch.uint8)
    mask[indices] = 1
    return mask
