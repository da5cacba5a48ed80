"""FrozenBatchNorm2d: values and state_dict against torchvision.ops.FrozenBatchNorm2d."""

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d as TvFrozenBatchNorm2d

from rcnn_lab import FrozenBatchNorm2d


def _random_stats(module: nn.Module, channels: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    module.weight.data = torch.randn(channels, generator=g)
    module.bias.data = torch.randn(channels, generator=g)
    module.running_mean.data = torch.randn(channels, generator=g)
    module.running_var.data = torch.rand(channels, generator=g) + 0.1


def test_defaults_and_buffers_match_torchvision():
    ours, theirs = FrozenBatchNorm2d(7), TvFrozenBatchNorm2d(7)
    assert ours.eps == theirs.eps == 1e-5
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(ours.parameters()) == []  # nothing for an optimiser to update
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_torchvision_bit_for_bit(dtype):
    ours, theirs = FrozenBatchNorm2d(5, eps=1e-3), TvFrozenBatchNorm2d(5, eps=1e-3)
    _random_stats(theirs, 5, seed=0)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = torch.randn(2, 5, 4, 6, dtype=dtype) * 10
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_forward_equals_batchnorm_in_eval_mode():
    bn = nn.BatchNorm2d(4).eval()
    _random_stats(bn, 4, seed=1)
    bn = bn.double()
    frozen = FrozenBatchNorm2d(4).double()
    frozen.load_state_dict(bn.state_dict(), strict=True)  # drops num_batches_tracked
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-12, atol=1e-12)


def test_statistics_do_not_change_in_training_mode():
    frozen = FrozenBatchNorm2d(3).train()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen(torch.randn(2, 3, 8, 8) * 5 + 3)
    for key, value in frozen.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_state_dict_loads_both_ways_with_torchvision():
    theirs = TvFrozenBatchNorm2d(6)
    _random_stats(theirs, 6, seed=2)
    ours = FrozenBatchNorm2d(6)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    back = TvFrozenBatchNorm2d(6)
    back.load_state_dict(ours.state_dict(), strict=True)
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_bad_input_shape_raises_value_error():
    with pytest.raises(ValueError, match=r"x: expected \[N, 3, H, W\]"):
        FrozenBatchNorm2d(3)(torch.zeros(1, 4, 2, 2))
