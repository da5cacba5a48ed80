"""BalancedPositiveNegativeSampler: hand-checked counts and seeded parity with torchvision."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import (
    BalancedPositiveNegativeSampler as TVSampler,
)

from rcnn_lab import BalancedPositiveNegativeSampler


def assert_same_samples(matched_idxs, batch_size, fraction, seed=0):
    torch.manual_seed(seed)
    ours = BalancedPositiveNegativeSampler(batch_size, fraction)(matched_idxs)
    state_after_ours = torch.get_rng_state()
    torch.manual_seed(seed)
    theirs = TVSampler(batch_size, fraction)(matched_idxs)
    # the generator must be left in the same state too, so later draws also agree
    assert torch.equal(state_after_ours, torch.get_rng_state())
    for our_masks, their_masks in zip(ours, theirs, strict=True):
        assert len(our_masks) == len(their_masks) == len(matched_idxs)
        for a, b in zip(our_masks, their_masks, strict=True):
            assert a.dtype == b.dtype == torch.uint8
            assert torch.equal(a, b)
    return ours


def test_sampler_keeps_positive_fraction():
    matched = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1])
    pos, neg = BalancedPositiveNegativeSampler(4, 0.25)([matched])
    assert pos[0].sum() == 1 and neg[0].sum() == 3
    assert (matched[pos[0].bool()] >= 1).all() and (matched[neg[0].bool()] == 0).all()


def test_not_enough_positives_pads_with_negatives():
    matched = torch.tensor([2] + [0] * 300 + [-1] * 20 + [-2] * 5)
    pos, neg = assert_same_samples([matched], 256, 0.5)
    assert pos[0].sum() == 1 and neg[0].sum() == 255


def test_zero_positives_and_zero_negatives():
    only_negatives = torch.zeros(50, dtype=torch.int64)
    pos, neg = assert_same_samples([only_negatives], 16, 0.5)
    assert pos[0].sum() == 0 and neg[0].sum() == 16
    only_ignored = torch.full((10,), -1.0)
    pos, neg = assert_same_samples([only_ignored], 16, 0.5)
    assert pos[0].sum() == 0 and neg[0].sum() == 0
    empty = torch.zeros(0)
    pos, neg = assert_same_samples([empty], 16, 0.5)
    assert pos[0].shape == (0,) and neg[0].shape == (0,)


def test_float_rpn_labels_and_int_roi_labels():
    labels = torch.tensor([1.0, 0.0, -1.0, 1.0, 0.0, 0.0])  # the RPN's float labels
    assert_same_samples([labels], 4, 0.5)
    classes = torch.tensor([3, 0, 0, 7, 1, 0, 0, 2])  # the RoI heads' class labels
    pos, neg = assert_same_samples([classes], 4, 0.25)
    assert pos[0].sum() == 1 and neg[0].sum() == 3


@pytest.mark.parametrize("batch_size,fraction", [(256, 0.5), (512, 0.25), (7, 0.33), (0, 0.5)])
def test_parity_multiple_images_same_seed(batch_size, fraction):
    g = torch.Generator().manual_seed(1)
    images = [
        torch.randint(-2, 4, (n,), generator=g) for n in (1000, 37, 0, 5000, 3)
    ]  # mixed ignore / background / positives, one empty image
    for seed in range(3):
        assert_same_samples(images, batch_size, fraction, seed=seed)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=4),
    batch_size=st.integers(0, 300),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_parity_hypothesis(sizes, batch_size, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(-2, 3, (n,), generator=g).float() for n in sizes]
    pos, neg = assert_same_samples(images, batch_size, fraction, seed=seed)
    for p, n in zip(pos, neg, strict=True):
        assert int(p.sum()) + int(n.sum()) <= batch_size
        assert not (p.bool() & n.bool()).any()


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(256, 1.5)
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedPositiveNegativeSampler(-1, 0.5)
    with pytest.raises(ValueError, match=r"matched_idxs\[0\]"):
        BalancedPositiveNegativeSampler(4, 0.5)([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="list"):
        BalancedPositiveNegativeSampler(4, 0.5)(torch.zeros(3))
