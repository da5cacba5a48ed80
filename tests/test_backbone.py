"""Backbones with FPN: same keys, same frozen layers and same outputs as torchvision's."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet50
from torchvision.models._utils import IntermediateLayerGetter as TvGetter
from torchvision.models.detection import backbone_utils as tv
from torchvision.ops import FrozenBatchNorm2d as TvFrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7 as TvP6P7

from rcnn_lab import FrozenBatchNorm2d, backbone
from rcnn_lab.fpn import LastLevelP6P7

IMAGE_HW = (64, 96)  # small: the tests compare whole trunks


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two threads per conv oversubscribe the
    cores and made these small convolutions ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so that a wrong normalisation would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, TvFrozenBatchNorm2d, FrozenBatchNorm2d)):
            c = m.running_mean.numel()
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + 0.5 * torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))


def _assert_parity(ours: nn.Module, theirs: nn.Module, tol: float = 1e-10) -> None:
    """Same keys in order, strict loads both ways, same float64 outputs in eval mode."""
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        _randomise_norms(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x = torch.rand(2, 3, *IMAGE_HW, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        out, ref = ours(x), theirs(x)
    if isinstance(ref, torch.Tensor):
        out, ref = {"0": out}, {"0": ref}
    assert list(out) == list(ref)
    for key in ref:
        assert out[key].shape == ref[key].shape
        scale = ref[key].abs().max().clamp(min=1)
        torch.testing.assert_close(out[key] / scale, ref[key] / scale, rtol=0, atol=tol)


def _requires_grad(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def resnet50_bn():
    torch.manual_seed(0)
    return resnet50(weights=None, norm_layer=nn.BatchNorm2d)


@pytest.fixture(scope="module")
def mobilenet_bn():
    torch.manual_seed(0)
    return mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d)


def test_resnet_fpn_backbone_frozen_bn_matches_torchvision():
    ours = backbone.resnet_fpn_backbone(backbone_name="resnet50", weights=None)
    theirs = tv.resnet_fpn_backbone(backbone_name="resnet50", weights=None)
    assert isinstance(ours.body.bn1, FrozenBatchNorm2d)
    assert ours.out_channels == theirs.out_channels == 256
    assert list(ours(torch.zeros(1, 3, *IMAGE_HW))) == ["0", "1", "2", "3", "pool"]
    assert "fpn.inner_blocks.0.0.weight" in ours.state_dict()
    assert "body.layer1.0.conv1.weight" in ours.state_dict()
    assert _requires_grad(ours) == _requires_grad(theirs)  # default: last 3 stages train
    assert not ours.body.layer1[0].conv1.weight.requires_grad
    _assert_parity(ours, theirs)


def test_resnet_v2_config_batchnorm_in_fpn(resnet50_bn):
    # fasterrcnn_resnet50_fpn_v2: BatchNorm trunk, BatchNorm inside the FPN convs
    ours = backbone.resnet_fpn_extractor(copy.deepcopy(resnet50_bn), 5, norm_layer=nn.BatchNorm2d)
    theirs = tv._resnet_fpn_extractor(copy.deepcopy(resnet50_bn), 5, norm_layer=nn.BatchNorm2d)
    assert "fpn.layer_blocks.3.1.num_batches_tracked" in ours.state_dict()
    _assert_parity(ours, theirs)


@pytest.mark.parametrize("trainable_layers", range(6))
def test_resnet_trainable_layers_match_torchvision(resnet50_bn, trainable_layers):
    ours = backbone.resnet_fpn_extractor(copy.deepcopy(resnet50_bn), trainable_layers)
    theirs = tv._resnet_fpn_extractor(copy.deepcopy(resnet50_bn), trainable_layers)
    assert _requires_grad(ours) == _requires_grad(theirs)
    frozen_trunk = [n for n, g in _requires_grad(ours).items() if not g]
    assert all(n.startswith("body.") for n in frozen_trunk)  # the FPN always trains
    assert ("body.bn1.weight" in frozen_trunk) == (trainable_layers < 5)


def test_resnet_returned_layers_and_p6p7():
    torch.manual_seed(0)
    trunk = resnet18(weights=None)
    ours = backbone.resnet_fpn_extractor(
        copy.deepcopy(trunk), 2, returned_layers=[2, 4], extra_blocks=LastLevelP6P7(256, 256)
    )
    theirs = tv._resnet_fpn_extractor(
        copy.deepcopy(trunk), 2, returned_layers=[2, 4], extra_blocks=TvP6P7(256, 256)
    )
    assert "body.layer3.0.conv1.weight" in ours.state_dict()
    assert "body.fc.weight" not in ours.state_dict()  # cut after the last returned stage
    _assert_parity(ours, theirs)


@pytest.mark.parametrize("norm_layer", [FrozenBatchNorm2d, nn.BatchNorm2d], ids=["frozen", "bn"])
def test_mobilenet_fpn_matches_torchvision(norm_layer):
    # Both mobilenet builders call the extractor with fpn=True and default returned layers; the
    # trunk uses FrozenBatchNorm2d with pretrained weights, BatchNorm2d without.
    tv_norm = TvFrozenBatchNorm2d if norm_layer is FrozenBatchNorm2d else nn.BatchNorm2d
    torch.manual_seed(0)
    ours = backbone.mobilenet_extractor(mobilenet_v3_large(norm_layer=norm_layer), True, 6)
    torch.manual_seed(0)
    theirs = tv._mobilenet_extractor(mobilenet_v3_large(norm_layer=tv_norm), True, 6)
    assert list(ours(torch.zeros(1, 3, *IMAGE_HW))) == ["0", "1", "pool"]
    _assert_parity(ours, theirs)


def test_mobilenet_without_fpn_and_custom_layers_match(mobilenet_bn):
    ours = backbone.mobilenet_extractor(copy.deepcopy(mobilenet_bn), False, 3)
    theirs = tv._mobilenet_extractor(copy.deepcopy(mobilenet_bn), False, 3)
    assert ours.out_channels == theirs.out_channels == 256
    _assert_parity(ours, theirs)
    ours = backbone.mobilenet_extractor(
        copy.deepcopy(mobilenet_bn), True, 3, returned_layers=[1, 3, 5]
    )
    theirs = tv._mobilenet_extractor(
        copy.deepcopy(mobilenet_bn), True, 3, returned_layers=[1, 3, 5]
    )
    _assert_parity(ours, theirs)


@pytest.mark.parametrize("trainable_layers", range(7))
def test_mobilenet_trainable_layers_match_torchvision(mobilenet_bn, trainable_layers):
    ours = backbone.mobilenet_extractor(copy.deepcopy(mobilenet_bn), True, trainable_layers)
    theirs = tv._mobilenet_extractor(copy.deepcopy(mobilenet_bn), True, trainable_layers)
    assert _requires_grad(ours) == _requires_grad(theirs)


def test_intermediate_layer_getter_matches_torchvision(mobilenet_bn):
    layers = {"4": "a", "13": "b"}
    ours = backbone.IntermediateLayerGetter(mobilenet_bn.features, layers)
    theirs = TvGetter(mobilenet_bn.features, layers)
    assert list(ours.keys()) == list(theirs.keys()) == [str(i) for i in range(14)]
    with pytest.raises(ValueError, match="return_layers"):
        backbone.IntermediateLayerGetter(mobilenet_bn.features, {"99": "x"})


@pytest.mark.parametrize(
    "args",
    [(False, None, 5, 3), (False, 2, 5, 3), (True, None, 5, 3), (True, 0, 6, 3), (True, 6, 6, 3)],
)
def test_validate_trainable_layers_matches_torchvision(args):
    with warnings.catch_warnings(record=True) as ours_w:
        warnings.simplefilter("always")
        ours = backbone._validate_trainable_layers(*args)
    with warnings.catch_warnings(record=True) as theirs_w:
        warnings.simplefilter("always")
        theirs = tv._validate_trainable_layers(*args)
    assert ours == theirs
    assert len(ours_w) == len(theirs_w)


def test_bad_arguments_raise_value_error(resnet50_bn, mobilenet_bn):
    with pytest.raises(ValueError, match=r"trainable_layers: expected an int in \[0, 5\], got 6"):
        backbone.resnet_fpn_extractor(resnet50_bn, 6)
    with pytest.raises(ValueError, match="returned_layers"):
        backbone.resnet_fpn_extractor(resnet50_bn, 3, returned_layers=[0, 1])
    with pytest.raises(ValueError, match=r"trainable_layers: expected an int in \[0, 6\]"):
        backbone.mobilenet_extractor(mobilenet_bn, True, 7)
    with pytest.raises(ValueError, match="returned_layers"):
        backbone.mobilenet_extractor(mobilenet_bn, True, 2, returned_layers=[6])
    with pytest.raises(ValueError, match="trainable_backbone_layers"):
        backbone._validate_trainable_layers(True, 7, 5, 3)
    with pytest.raises(ValueError, match="backbone_name"):
        backbone.resnet_fpn_backbone(backbone_name="ResNet", weights=None)
    with pytest.raises(ValueError, match="backbone_name"):
        backbone.mobilenet_backbone(backbone_name="resnet50", weights=None, fpn=True)


def test_mobilenet_backbone_builder_matches_torchvision():
    torch.manual_seed(0)
    ours = backbone.mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True)
    torch.manual_seed(0)
    theirs = tv.mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True)
    assert isinstance(ours.body["0"][1], FrozenBatchNorm2d)  # the stem's norm is frozen
    assert _requires_grad(ours) == _requires_grad(theirs)
    _assert_parity(ours, theirs)
