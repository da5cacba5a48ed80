"""FeaturePyramidNetwork and its extra blocks against torchvision.ops.FeaturePyramidNetwork."""

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork as TvFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool as TvMaxPool
from torchvision.ops.feature_pyramid_network import LastLevelP6P7 as TvP6P7

from rcnn_lab import FeaturePyramidNetwork
from rcnn_lab.fpn import LastLevelMaxPool, LastLevelP6P7

IN_CHANNELS = [8, 16, 32]


def _features(dtype, sizes=((17, 23), (9, 12), (5, 6)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (f"c{i}", torch.randn(2, c, h, w, generator=g, dtype=dtype))
        for i, (c, (h, w)) in enumerate(zip(IN_CHANNELS, sizes))
    )


def _pair(extra=None, tv_extra=None, norm_layer=None, seed=0):
    torch.manual_seed(seed)
    theirs = TvFPN(IN_CHANNELS, 12, extra_blocks=tv_extra, norm_layer=norm_layer)
    ours = FeaturePyramidNetwork(IN_CHANNELS, 12, extra_blocks=extra, norm_layer=norm_layer)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def _assert_same(out, ref, tol):
    assert list(out) == list(ref)
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "extra, tv_extra",
    [(None, None), (LastLevelMaxPool(), TvMaxPool()), (LastLevelP6P7(32, 12), TvP6P7(32, 12))],
    ids=["none", "maxpool", "p6p7_from_c5"],
)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_outputs_match_torchvision(extra, tv_extra, dtype, tol):
    ours, theirs = _pair(extra, tv_extra)
    if extra is not None and hasattr(extra, "p6"):
        extra.load_state_dict(tv_extra.state_dict())
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = _features(dtype)
    _assert_same(ours(x), theirs(x), tol)


def test_p6p7_from_p5_when_channels_agree():
    ours, theirs = _pair(LastLevelP6P7(12, 12), TvP6P7(12, 12))
    assert ours.extra_blocks.use_P5 and theirs.extra_blocks.use_P5
    ours.extra_blocks.load_state_dict(theirs.extra_blocks.state_dict())
    x = _features(torch.float64)
    ours, theirs = ours.double(), theirs.double()
    _assert_same(ours(x), theirs(x), 1e-12)


def test_batchnorm_keys_and_outputs_match_torchvision():
    ours, theirs = _pair(LastLevelMaxPool(), TvMaxPool(), norm_layer=nn.BatchNorm2d)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "inner_blocks.0.1.running_var" in ours.state_dict()
    assert "inner_blocks.0.0.bias" not in ours.state_dict()  # no bias before a norm
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = _features(torch.float64)
    _assert_same(ours.double()(x), theirs.double()(x), 1e-12)


def test_init_and_keys_match_torchvision():
    torch.manual_seed(3)
    theirs = TvFPN(IN_CHANNELS, 12, extra_blocks=TvMaxPool())
    torch.manual_seed(3)
    ours = FeaturePyramidNetwork(IN_CHANNELS, 12, extra_blocks=LastLevelMaxPool())
    # Same keys in the same order, and the same random draws: kaiming_uniform(a=1), zero bias.
    for (k1, v1), (k2, v2) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert k1 == k2
        assert torch.equal(v1, v2), k1


def test_loads_version_1_keys():
    _, theirs = _pair()
    old = {k.replace(".0.", ".", 1): v for k, v in theirs.state_dict().items()}
    assert "inner_blocks.0.weight" in old
    ours = FeaturePyramidNetwork(IN_CHANNELS, 12)
    ours.load_state_dict(old, strict=True)  # a plain dict has no version metadata: v1
    assert torch.equal(ours.inner_blocks[0][0].weight, theirs.inner_blocks[0][0].weight)


def test_odd_sizes_and_single_level():
    ours, theirs = _pair(LastLevelMaxPool(), TvMaxPool())
    x = _features(torch.float64, sizes=((7, 1), (3, 1), (1, 1)))
    _assert_same(ours.double()(x), theirs.double()(x), 1e-12)
    assert ours.double()(x)["pool"].shape[-2:] == (1, 1)


def test_gradients_match_torchvision():
    ours, theirs = _pair(LastLevelMaxPool(), TvMaxPool())
    ours, theirs = ours.double(), theirs.double()
    x = _features(torch.float64)
    sum(v.sum() for v in ours(x).values()).backward()
    sum(v.sum() for v in theirs(x).values()).backward()
    for (name, p1), p2 in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-10, atol=1e-10, msg=name)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="in_channels_list"):
        FeaturePyramidNetwork([8, 0], 4)
    with pytest.raises(TypeError, match="extra_blocks"):
        FeaturePyramidNetwork([8], 4, extra_blocks=nn.Identity())
    with pytest.raises(ValueError, match="expected 3 feature maps, got 2"):
        FeaturePyramidNetwork(IN_CHANNELS, 4)(
            OrderedDict(list(_features(torch.float32).items())[:2])
        )
