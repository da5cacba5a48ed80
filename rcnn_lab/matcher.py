"""Matcher: turn a quality (IoU) matrix into one ground-truth index per prediction.

Faster R-CNN (Ren et al. 2015, Sec. 3.1.2) labels an anchor positive when its IoU with some
ground-truth box is >= 0.7, negative when its best IoU is < 0.3, and ignores it in between; every
ground-truth box additionally claims the anchor(s) it overlaps most ("low-quality matches"), so
that no object is left without a positive anchor. The RoI heads reuse the same matcher with
thresholds 0.5 / 0.5 and no low-quality matches.

Shapes: G ground-truth boxes, P predictions (anchors or proposals).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

#: Match code of a prediction whose best quality is below the low threshold (background).
BELOW_LOW_THRESHOLD = -1
#: Match code of a prediction whose best quality lies between the thresholds (ignored).
BETWEEN_THRESHOLDS = -2


class MatcherProtocol(Protocol):
    """What the RPN and the RoI heads need of a matcher (``proposal_matcher=``).

    Called with a quality matrix [G, P] (G >= 1 ground-truth boxes, P predictions; IoU unless
    ``box_similarity`` says otherwise), it returns [P] int64: the index in ``0..G-1`` of the
    ground truth each prediction matches, :data:`BELOW_LOW_THRESHOLD` (-1, background) or
    :data:`BETWEEN_THRESHOLDS` (-2, ignored).
    """

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """[G, P] quality -> [P] int64 match codes."""
        ...


class Matcher:
    """Assign to each prediction the index of its best ground truth, or a negative code.

    Args:
        high_threshold: quality >= this makes a match (a foreground candidate).
        low_threshold: quality < this is ``BELOW_LOW_THRESHOLD`` (background); quality in
            ``[low_threshold, high_threshold)`` is ``BETWEEN_THRESHOLDS`` (ignored).
        allow_low_quality_matches: also match, for every ground truth, the predictions of
            highest quality with it (ties included), even when that quality is below
            ``high_threshold``.

    Calling the matcher with a ``[G, P]`` matrix returns ``matches`` ``[P]`` (int64): a
    ground-truth index in ``0..G-1``, ``BELOW_LOW_THRESHOLD`` (-1) or ``BETWEEN_THRESHOLDS`` (-2).
    """

    BELOW_LOW_THRESHOLD = BELOW_LOW_THRESHOLD
    BETWEEN_THRESHOLDS = BETWEEN_THRESHOLDS

    def __init__(
        self,
        high_threshold: float,
        low_threshold: float,
        allow_low_quality_matches: bool = False,
    ) -> None:
        if low_threshold > high_threshold:
            raise ValueError(
                f"low_threshold must be <= high_threshold, got low_threshold={low_threshold} "
                f"and high_threshold={high_threshold}"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """Match predictions to ground truths.

        Args:
            match_quality_matrix: [G, P] quality of every (ground truth, prediction) pair,
                usually ``box_iou(gt_boxes, anchors)``.

        Returns:
            matches: [P] int64, see the class docstring.

        Raises:
            ValueError: if the matrix is not 2-D, or has no ground truth (G == 0) or no
                prediction (P == 0): matching is only defined for training with targets.
        """
        _check_quality_matrix(match_quality_matrix)
        # the best ground truth of every prediction (torch.max keeps the first index on ties)
        best_quality, best_gt = match_quality_matrix.max(dim=0)  # [P], [P]
        below = best_quality < self.low_threshold
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matches = torch.where(below, torch.full_like(best_gt, self.BELOW_LOW_THRESHOLD), best_gt)
        matches = torch.where(between, torch.full_like(best_gt, self.BETWEEN_THRESHOLDS), matches)
        if self.allow_low_quality_matches:
            rescued = self.low_quality_mask(match_quality_matrix)  # [P]
            # a rescued prediction gets its own best ground truth, like any other match
            matches = torch.where(rescued, best_gt, matches)
        return matches

    @staticmethod
    def low_quality_mask(match_quality_matrix: Tensor) -> Tensor:
        """[P] bool: predictions that are the best (ties included) of at least one ground truth.

        A ground truth whose best quality is 0 (it overlaps nothing) marks every prediction of
        quality 0 with it, exactly as torchvision does.
        """
        best_per_gt = match_quality_matrix.max(dim=1, keepdim=True).values  # [G, 1]
        return (match_quality_matrix == best_per_gt).any(dim=0)  # [P]


def _check_quality_matrix(match_quality_matrix: Tensor) -> None:
    """Raise ValueError unless ``match_quality_matrix`` is a non-empty 2-D tensor."""
    if not isinstance(match_quality_matrix, Tensor) or match_quality_matrix.dim() != 2:
        shape = getattr(match_quality_matrix, "shape", type(match_quality_matrix).__name__)
        raise ValueError(f"match_quality_matrix must be a [G, P] tensor, got {shape}")
    num_gt, num_pred = match_quality_matrix.shape
    if num_gt == 0:
        raise ValueError(
            "No ground-truth boxes available for one of the images during training: "
            f"match_quality_matrix has shape [{num_gt}, {num_pred}] (G = 0)"
        )
    if num_pred == 0:
        raise ValueError(
            "No proposal boxes available for one of the images during training: "
            f"match_quality_matrix has shape [{num_gt}, {num_pred}] (P = 0)"
        )
