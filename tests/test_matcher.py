"""Matcher: hand-checked cases and parity with torchvision's Matcher (ties, extremes, errors)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import Matcher as TVMatcher

from rcnn_lab import Matcher

THRESHOLD_PAIRS = [(0.7, 0.3), (0.5, 0.5), (0.5, 0.0), (1.0, 0.0), (0.0, 0.0)]


def assert_same_matches(matrix: torch.Tensor, high: float, low: float, low_quality: bool):
    ours = Matcher(high, low, allow_low_quality_matches=low_quality)(matrix)
    theirs = TVMatcher(high, low, allow_low_quality_matches=low_quality)(matrix.clone())
    assert ours.dtype == theirs.dtype == torch.int64
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_hand_checked_three_way_split():
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.2], [0.8, 0.6, 0.05, 0.75]])
    matches = Matcher(0.7, 0.3)(iou)
    # best gt: 0 (0.9), 1 (0.6, between), 0 (0.1, below), 1 (0.75)
    assert matches.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD, 1]


def test_low_quality_match_rescues_a_gt_whose_best_anchor_is_045():
    iou = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.45, 0.2]])
    assert Matcher(0.7, 0.3)(iou).tolist() == [0, -2, -1]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou).tolist() == [0, 1, -1]


def test_low_quality_ties_all_rescued_with_their_own_best_gt():
    # gt 1's best quality 0.4 is shared by predictions 1 and 2; prediction 2's best gt is 0
    iou = torch.tensor([[0.0, 0.1, 0.5, 0.0], [0.0, 0.4, 0.4, 0.2]])
    matches = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert matches.tolist() == [-1, 1, 0, -1]
    assert_same_matches(iou, 0.7, 0.3, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("high,low", THRESHOLD_PAIRS)
@pytest.mark.parametrize("low_quality", [False, True])
def test_parity_random_with_many_ties(dtype, high, low, low_quality):
    g = torch.Generator().manual_seed(0)
    for num_gt, num_pred in [(1, 1), (1, 50), (7, 300), (30, 5)]:
        # quantised values make ties within rows, within columns and with the thresholds
        matrix = (torch.randint(0, 11, (num_gt, num_pred), generator=g) / 10).to(dtype)
        assert_same_matches(matrix, high, low, low_quality)
        continuous = torch.rand((num_gt, num_pred), generator=g, dtype=dtype)
        assert_same_matches(continuous, high, low, low_quality)


@pytest.mark.parametrize("low_quality", [False, True])
@pytest.mark.parametrize("value", [0.0, 0.2, 0.3, 0.5, 0.7, 1.0])
def test_parity_constant_matrices_all_below_all_between_all_above(value, low_quality):
    matrix = torch.full((4, 9), value)
    assert_same_matches(matrix, 0.7, 0.3, low_quality)
    matches = Matcher(0.7, 0.3, low_quality)(matrix)
    if low_quality:  # every prediction ties for every gt's best: all match gt 0 (first max)
        assert (matches == 0).all()
    elif value < 0.3:
        assert (matches == Matcher.BELOW_LOW_THRESHOLD).all()
    elif value < 0.7:
        assert (matches == Matcher.BETWEEN_THRESHOLDS).all()
    else:
        assert (matches == 0).all()


def test_gt_overlapping_nothing_with_low_quality_matches_like_torchvision():
    iou = torch.tensor([[0.8, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # gt 1's best quality is 0: every prediction with quality 0 to it is "rescued"
    assert Matcher(0.7, 0.3, True)(iou).tolist() == [0, 0, 0]
    assert_same_matches(iou, 0.7, 0.3, True)


@settings(max_examples=60, deadline=None)
@given(
    num_gt=st.integers(1, 6),
    num_pred=st.integers(1, 40),
    levels=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    thresholds=st.sampled_from(THRESHOLD_PAIRS),
    low_quality=st.booleans(),
)
def test_parity_hypothesis(num_gt, num_pred, levels, seed, thresholds, low_quality):
    g = torch.Generator().manual_seed(seed)
    matrix = torch.randint(0, levels + 1, (num_gt, num_pred), generator=g) / levels
    assert_same_matches(matrix.double(), *thresholds, low_quality)


def test_does_not_modify_input():
    matrix = torch.rand(3, 20)
    before = matrix.clone()
    Matcher(0.7, 0.3, True)(matrix)
    assert torch.equal(matrix, before)


@pytest.mark.parametrize(
    "shape,message", [((0, 5), "ground-truth"), ((3, 0), "proposal"), ((0, 0), "ground-truth")]
)
def test_empty_raises_like_torchvision(shape, message):
    matrix = torch.zeros(shape)
    with pytest.raises(ValueError, match=message):
        Matcher(0.7, 0.3)(matrix)
    with pytest.raises(ValueError, match=message):
        TVMatcher(0.7, 0.3)(matrix)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match=r"\[G, P\]"):
        Matcher(0.7, 0.3)(torch.rand(5))
