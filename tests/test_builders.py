"""The four builders' arguments and weights: enums and names, torchvision's legacy
``pretrained=`` interface with its warnings, unknown keywords, and loading offline or from the
hub cache. (Their outputs equal torchvision's: see tests/test_faster_rcnn.py.)"""

from __future__ import annotations

import urllib.error
import warnings

import pytest
import torch
import torchvision.models._api as tv_api
import torchvision.models.detection as tvd

import rcnn_lab
from rcnn_lab.frozen_batchnorm import FrozenBatchNorm2d

#: Each builder and its COCO weights, what pretrained=True stands for.
COCO_WEIGHTS = {
    "fasterrcnn_resnet50_fpn": tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
    "fasterrcnn_resnet50_fpn_v2": tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    "fasterrcnn_mobilenet_v3_large_fpn": tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    ),
}
BUILDERS = list(COCO_WEIGHTS)
COCO_320 = tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1


def test_builder_argument_checks(offline):
    with pytest.raises(ValueError, match="trainable"):  # checked before any download
        rcnn_lab.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone="IMAGENET1K_V1", trainable_backbone_layers=7
        )
    with pytest.raises(KeyError):
        rcnn_lab.fasterrcnn_resnet50_fpn(weights="NO_SUCH_WEIGHTS", weights_backbone=None)
    with pytest.raises(TypeError):  # v2 weights handed to the v1 builder
        rcnn_lab.fasterrcnn_resnet50_fpn(weights=tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1)
    with pytest.raises(ValueError, match="num_classes=5 does not fit"):
        rcnn_lab.fasterrcnn_mobilenet_v3_large_fpn(weights="COCO_V1", num_classes=5)


# ---------------------------------------------------------------------------- weights


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty hub cache: every download fails the way it does offline."""
    requested = []

    def fail(url, *args, **kwargs):
        requested.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fail)
    return requested


@pytest.mark.parametrize(
    "weights",
    [
        "COCO_V1",
        "DEFAULT",
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
        tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    ],
)
def test_offline_weights_fail_with_instructions(offline, tmp_path, weights):
    with pytest.raises(RuntimeError) as info:
        rcnn_lab.fasterrcnn_mobilenet_v3_large_320_fpn(weights=weights)
    message = str(info.value)
    url = tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1.url
    assert offline == [url]
    assert url in message and "torch.load(path, weights_only=True)" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert isinstance(info.value.__cause__, OSError)


def test_offline_backbone_weights_fail_with_instructions(offline):
    with pytest.raises(RuntimeError, match="weights_only=True") as info:
        rcnn_lab.fasterrcnn_mobilenet_v3_large_fpn(weights=None)  # default ImageNet trunk
    assert "MobileNet_V3_Large_Weights.IMAGENET1K_V1" in str(info.value)
    assert len(offline) == 1 and "mobilenet_v3_large" in offline[0]


def test_weights_load_through_torchvision_machinery(monkeypatch):
    """A (fake) COCO_V1 checkpoint is loaded strictly, and its FrozenBatchNorm eps set to 0."""
    torch.manual_seed(0)
    checkpoint = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    asked = []

    def serve(url, *args, **kwargs):
        asked.append(url)
        return checkpoint

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", serve)
    model = rcnn_lab.fasterrcnn_resnet50_fpn(weights="DEFAULT", progress=False)
    assert asked == [tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url]
    frozen = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 0.0 for m in frozen)
    state = model.state_dict()
    for key in [
        "roi_heads.box_predictor.cls_score.weight",
        "backbone.body.layer4.2.bn3.running_var",
    ]:
        torch.testing.assert_close(state[key], checkpoint[key], rtol=0, atol=0)
    assert model.roi_heads.box_predictor.cls_score.out_features == 91
    # the trunk's first stages are frozen, as for a pretrained model (3 trainable stages)
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad


# ---------------------------------------------------------------------------- legacy interface


def warnings_of(build, *args, **kwargs):
    """(the builder's result or the exception it raised, the messages of its warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = build(*args, **kwargs)
        except Exception as err:  # the caller checks which
            result = err
    return result, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("name", BUILDERS)
def test_pretrained_true_loads_the_coco_weights_with_torchvisions_warnings(offline, name):
    """pretrained=True used to build random weights silently; it means weights=COCO_V1, as in
    torchvision (same warnings), and offline it fails with the download instructions."""
    ours, our_warnings = warnings_of(getattr(rcnn_lab, name), pretrained=True)
    theirs, their_warnings = warnings_of(getattr(tvd, name), pretrained=True)
    assert isinstance(theirs, urllib.error.URLError)  # torchvision went for the same file
    assert isinstance(ours, RuntimeError) and "weights_only=True" in str(ours)
    assert our_warnings == their_warnings and len(our_warnings) == 2
    assert "'pretrained' is deprecated" in our_warnings[0][1]
    url = COCO_WEIGHTS[name].url
    assert offline == [url, url] and url in str(ours)  # no trunk download before it


def test_pretrained_true_loads_through_torchvision_machinery(monkeypatch):
    torch.manual_seed(0)
    checkpoint = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None
    ).state_dict()
    asked = []

    def serve(url, *args, **kwargs):
        asked.append(url)
        return checkpoint

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", serve)
    model, caught = warnings_of(
        rcnn_lab.fasterrcnn_mobilenet_v3_large_320_fpn, pretrained=True, progress=False
    )
    assert asked == [COCO_320.url]
    assert len(caught) == 2 and f"`weights={COCO_320}`" in caught[1][1]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, checkpoint[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "legacy",
    [
        dict(pretrained=False, pretrained_backbone=False),
        dict(weights=False, weights_backbone=False),
        dict(weights="legacy", pretrained_backbone=False, num_classes=4),
    ],
)
def test_legacy_false_flags_build_random_weights_like_torchvision(offline, legacy):
    ours, our_warnings = warnings_of(rcnn_lab.fasterrcnn_mobilenet_v3_large_320_fpn, **legacy)
    theirs, their_warnings = warnings_of(tvd.fasterrcnn_mobilenet_v3_large_320_fpn, **legacy)
    if legacy.get("weights") == "legacy":  # "legacy" is a true flag: the COCO weights
        assert isinstance(ours, ValueError) and "num_classes=4 does not fit" in str(ours)
        assert isinstance(theirs, ValueError)
    else:
        assert offline == []  # nothing downloaded: random weights, a trainable BatchNorm trunk
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert not any(isinstance(m, FrozenBatchNorm2d) for m in ours.modules())
    assert our_warnings == their_warnings and our_warnings


def test_pretrained_backbone_true_loads_the_trunk(offline):
    build = rcnn_lab.fasterrcnn_mobilenet_v3_large_fpn
    error, caught = warnings_of(build, weights=None, pretrained_backbone=True)
    assert isinstance(error, RuntimeError)
    assert "MobileNet_V3_Large_Weights.IMAGENET1K_V1" in str(error)
    assert len(offline) == 1 and "mobilenet_v3_large" in offline[0]
    _, their_warnings = warnings_of(
        tvd.fasterrcnn_mobilenet_v3_large_fpn, weights=None, pretrained_backbone=True
    )
    assert caught == their_warnings and "'pretrained_backbone' is deprecated" in caught[0][1]


def test_positional_arguments_are_named_like_torchvision(offline):
    args = (None, False, 4, None)  # weights, progress, num_classes, weights_backbone
    ours, our_warnings = warnings_of(rcnn_lab.fasterrcnn_mobilenet_v3_large_320_fpn, *args)
    theirs, their_warnings = warnings_of(tvd.fasterrcnn_mobilenet_v3_large_320_fpn, *args)
    assert our_warnings == their_warnings and len(our_warnings) == 1
    assert ours.roi_heads.box_predictor.cls_score.out_features == 4
    with pytest.raises(TypeError, match="multiple values for argument 'weights'"):
        rcnn_lab.fasterrcnn_resnet50_fpn(None, weights=None)
    with pytest.raises(TypeError, match="at most 5 positional"):
        rcnn_lab.fasterrcnn_resnet50_fpn(None, True, 3, None, 0, 800)


@pytest.mark.parametrize("name", BUILDERS)
def test_unknown_keyword_raises_before_any_download(offline, name):
    """torchvision forwards a misspelt keyword to its transform, which drops it silently."""
    with pytest.raises(TypeError, match=rf"{name}\(\).*'rpn_nms_tresh'.*'rpn_nms_thresh'"):
        getattr(rcnn_lab, name)(rpn_nms_tresh=0.1)  # the default trunk weights: not fetched
    with pytest.raises(TypeError, match="'pretrained'"):  # both spellings at once
        getattr(rcnn_lab, name)(weights=None, pretrained=True)
    assert offline == []
