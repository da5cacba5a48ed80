"""The assembled detector: GeneralizedRCNN, FasterRCNN and the four builders against torchvision.

Headline: for every builder, ours and torchvision's load each other's state_dict strictly, give
the same detections (float64 ~1e-8, float32 same labels and boxes within 1e-3 px), and, from the
same seed, the same four training losses and gradients (float64).
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torchvision.models.detection as tvd
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor as tv_extractor
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBatchNorm2d
from torchvision.ops import MultiScaleRoIAlign as TVMultiScaleRoIAlign

import rcnn_lab
from rcnn_lab.anchors import AnchorGenerator
from rcnn_lab.backbone import resnet_fpn_extractor
from rcnn_lab.faster_rcnn import FasterRCNN, GeneralizedRCNN
from rcnn_lab.frozen_batchnorm import FrozenBatchNorm2d
from rcnn_lab.ops.poolers import MultiScaleRoIAlign
from rcnn_lab.roi_heads import FastRCNNPredictor
from rcnn_lab.testing import calibrate_batchnorm
from rcnn_lab.testing import spread_head_weights as randomize_heads

BUILDERS = [
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
]
CUSTOM_CLASSES = 7
#: Small images and fewer RoIs keep the float64 runs of four ResNet-50s within the time budget.
SMALL = dict(
    min_size=64,
    max_size=96,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=150,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=150,
    box_batch_size_per_image=64,
)
IMAGE_SHAPES = [(120, 160), (150, 110), (96, 128)]
LOSS_KEYS = ["loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"]


def build_pair(name: str, num_classes: int | None):
    """(ours, torchvision's) built by the named builder, with the same random weights."""
    torch.manual_seed(0)
    theirs = getattr(tvd, name)(
        weights=None, weights_backbone=None, num_classes=num_classes, **SMALL
    )
    calibrate_batchnorm(
        theirs, images_of(torch.float32), targets_of(torch.float32, num_classes or 91)
    )
    randomize_heads(theirs, images_of(torch.float32))
    ours = getattr(rcnn_lab, name)(
        weights=None, weights_backbone=None, num_classes=num_classes, **SMALL
    )
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.fixture(scope="module", params=BUILDERS)
def name(request):
    """The builder under test; module scope makes pytest run every test of one builder in turn."""
    return request.param


@pytest.fixture(scope="module")
def pairs(name):
    """Both num_classes variants of one builder, built once for all the tests that use them."""
    return {num_classes: build_pair(name, num_classes) for num_classes in (None, CUSTOM_CLASSES)}


def model_pair(pairs, num_classes: int | None = None, dtype=torch.float64):
    """Fresh copies of (ours, torchvision's) with the same random weights."""
    ours, theirs = pairs[num_classes]
    return copy.deepcopy(ours).to(dtype), copy.deepcopy(theirs).to(dtype)


def images_of(dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g).to(dtype) for h, w in IMAGE_SHAPES]


def targets_of(dtype=torch.float64, num_classes=CUSTOM_CLASSES):
    """Two images with objects and one negative image (no boxes)."""
    return [
        {
            "boxes": torch.tensor(
                [[10.0, 20.0, 60.0, 90.0], [30.0, 30.0, 150.0, 70.0]], dtype=dtype
            ),
            "labels": torch.tensor([1, num_classes - 1]),
        },
        {"boxes": torch.zeros(0, 4, dtype=dtype), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0]], dtype=dtype), "labels": torch.tensor([3])},
    ]


# ---------------------------------------------------------------------------- API surface


def test_public_names_are_exported():
    for name in [
        "TwoMLPHead",
        "FastRCNNPredictor",
        "RoIHeads",
        "fastrcnn_loss",
        "GeneralizedRCNN",
        "FasterRCNN",
        *BUILDERS,
    ]:
        assert name in rcnn_lab.__all__ and hasattr(rcnn_lab, name), name


def _parameters(function):
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_signatures_and_defaults_equal_torchvision():
    assert _parameters(FasterRCNN.__init__) == _parameters(tvd.FasterRCNN.__init__)
    for name in BUILDERS:
        ours, theirs = _parameters(getattr(rcnn_lab, name)), _parameters(getattr(tvd, name))
        assert ours == theirs, name


@pytest.mark.parametrize("num_classes", [None, CUSTOM_CLASSES])
def test_state_dicts_load_both_ways(pairs, num_classes):
    ours, theirs = pairs[num_classes]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == value.shape, key
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    expected = CUSTOM_CLASSES if num_classes else 91
    assert ours.roi_heads.box_predictor.cls_score.out_features == expected
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {
        n for n, p in theirs.named_parameters() if p.requires_grad
    }
    # the parameter-free parts are configured alike too
    assert repr(ours.roi_heads.box_roi_pool) == repr(theirs.roi_heads.box_roi_pool)
    assert repr(ours.rpn.anchor_generator.sizes) == repr(theirs.rpn.anchor_generator.sizes)


def test_frozen_batchnorm_layout_loads_both_ways():
    """Pretrained models use FrozenBatchNorm2d: 295 keys, no num_batches_tracked."""
    ours = FasterRCNN(
        resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=91
    )
    theirs = tvd.FasterRCNN(
        tv_extractor(resnet50(norm_layer=TVFrozenBatchNorm2d), 3), num_classes=91
    )
    assert len(theirs.state_dict()) == len(ours.state_dict()) == 295
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)


# ---------------------------------------------------------------------------- parity


def assert_same_detections(ours, theirs, dtype):
    assert len(ours) == len(theirs) == len(IMAGE_SHAPES)
    total = 0
    for a, b in zip(ours, theirs, strict=True):
        assert set(a) == {"boxes", "labels", "scores"}
        torch.testing.assert_close(a["labels"], b["labels"], rtol=0, atol=0)
        if dtype == torch.float64:
            torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-8)
            torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-8)
        else:
            torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-3)
            torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-4)
        total += len(a["boxes"])
    assert total > 0, "the random weights should produce some detections"


@pytest.mark.parametrize(
    "num_classes", [pytest.param(None, marks=pytest.mark.slow), CUSTOM_CLASSES]
)
def test_eval_detections_equal_torchvision_float64(pairs, num_classes):
    ours, theirs = model_pair(pairs, num_classes, torch.float64)
    images = images_of(torch.float64)
    with torch.no_grad():
        mine, reference = ours.eval()(images), theirs.eval()(images)
    assert_same_detections(mine, reference, torch.float64)


def test_eval_detections_equal_torchvision_float32(pairs):
    ours, theirs = model_pair(pairs, CUSTOM_CLASSES, torch.float32)
    images = images_of(torch.float32)
    with torch.no_grad():
        mine, reference = ours.eval()(images), theirs.eval()(images)
    assert_same_detections(mine, reference, torch.float32)


@pytest.mark.slow
def test_training_losses_and_gradients_equal_torchvision(pairs):
    ours, theirs = model_pair(pairs, CUSTOM_CLASSES, torch.float64)
    images, targets = images_of(torch.float64), targets_of(torch.float64)
    results = []
    for model in (ours, theirs):
        model.train()
        torch.manual_seed(123)
        losses = model(images, targets)
        sum(losses.values()).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((losses, grads))
    (mine, my_grads), (reference, their_grads) = results
    assert list(mine) == list(reference) == LOSS_KEYS
    for key in LOSS_KEYS:
        torch.testing.assert_close(mine[key], reference[key], rtol=1e-10, atol=1e-12)
        assert torch.isfinite(mine[key]) and mine[key] > 0, key
    assert my_grads.keys() == their_grads.keys()
    # some gradients are zero in exact arithmetic (the bias of a BatchNorm whose output feeds
    # another BatchNorm in training mode: the next batch mean removes it) and hold only
    # round-off (~1e-15); they are measured against 1e-6 of the largest gradient instead
    floor = 1e-6 * max(g.abs().max() for g in their_grads.values() if g is not None)
    for param_name, grad in their_grads.items():
        assert (grad is None) == (my_grads[param_name] is None), param_name
        if grad is not None:
            scale = torch.maximum(grad.abs().max(), floor)
            error = (my_grads[param_name] - grad).abs().max() / scale
            assert error < 1e-8, f"{param_name}: relative gradient error {error:.2e}"


def test_training_batch_of_negative_images_only():
    ours, theirs = build_pair("fasterrcnn_mobilenet_v3_large_320_fpn", CUSTOM_CLASSES)
    ours.double()
    theirs.double()
    images = images_of()[:2]
    empty = {
        "boxes": torch.zeros(0, 4, dtype=torch.float64),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    losses = []
    for model in (ours, theirs):
        torch.manual_seed(5)
        losses.append(model.train()(images, [empty, copy.deepcopy(empty)]))
    for key in LOSS_KEYS:
        torch.testing.assert_close(losses[0][key], losses[1][key], rtol=1e-10, atol=1e-12)
    assert losses[0]["loss_box_reg"] == 0 and losses[0]["loss_rpn_box_reg"] == 0


def test_training_without_any_sampled_roi_gives_zero_heads_losses_and_finite_gradients():
    """No proposal survives rpn_score_thresh and no image has a box: the RoI heads sample no
    RoI. torchvision returns NaN heads losses; rcnn_lab returns 0 (a documented difference), and
    training goes on: backward works and every parameter gets a finite gradient."""
    settings = dict(weights=None, weights_backbone=None, num_classes=3, rpn_score_thresh=0.999)
    settings.update(min_size=64, max_size=96)  # small images: a fast test
    torch.manual_seed(0)
    theirs = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(**settings)
    ours = rcnn_lab.fasterrcnn_mobilenet_v3_large_320_fpn(**settings)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = []
    for model in (ours, theirs):
        torch.manual_seed(5)
        losses.append(model.train()(images_of(torch.float32)[:2], [empty, dict(empty)]))
    mine, reference = losses
    assert list(mine) == LOSS_KEYS
    assert mine["loss_classifier"] == 0 and mine["loss_box_reg"] == 0
    assert torch.isnan(reference["loss_classifier"]) and torch.isnan(reference["loss_box_reg"])
    for key in ("loss_objectness", "loss_rpn_box_reg"):  # the RPN is unaffected: same losses
        torch.testing.assert_close(mine[key], reference[key], rtol=0, atol=0)
    sum(mine.values()).backward()
    for param_name, param in ours.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    assert not ours.roi_heads.box_predictor.cls_score.weight.grad.any()  # nothing to learn
    trunk = [p.grad for p in ours.backbone.parameters() if p.requires_grad]
    assert any(grad.abs().sum() > 0 for grad in trunk)  # the RPN losses still train it


# ---------------------------------------------------------------------------- a tiny model


def tiny_model(num_classes: int = 3, ours: bool = True) -> nn.Module:
    """A one-level detector on a 2-layer CNN: fast, and exercises the single-Tensor backbone."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    anchors = ((16, 32),), ((0.5, 1.0, 2.0),)
    if ours:
        return FasterRCNN(
            backbone,
            num_classes,
            min_size=64,
            max_size=96,
            rpn_anchor_generator=AnchorGenerator(*anchors),
            box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        )
    return tvd.FasterRCNN(
        backbone,
        num_classes,
        min_size=64,
        max_size=96,
        rpn_anchor_generator=tvd.anchor_utils.AnchorGenerator(*anchors),
        box_roi_pool=TVMultiScaleRoIAlign(["0"], 7, 2),
    )


def tiny_pair():
    """(ours, torchvision's) tiny models in float64 with the same spread-out random weights."""
    ours, theirs = tiny_model(), tiny_model(ours=False)
    randomize_heads(ours, [torch.rand(3, 70, 90)], seed=3)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.double(), theirs.double()


def test_tiny_custom_backbone_matches_torchvision():
    ours, theirs = tiny_pair()
    images = [
        torch.rand(3, 70, 90, dtype=torch.float64),
        torch.rand(3, 64, 64, dtype=torch.float64),
    ]
    targets = targets_of(num_classes=3)[:2]
    for model_a, model_b in [(ours, theirs)]:
        torch.manual_seed(9)
        a = model_a.train()(images, targets)
        torch.manual_seed(9)
        b = model_b.train()(images, targets)
        for key in LOSS_KEYS:
            torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            da, db = model_a.eval()(images), model_b.eval()(images)
        for x, y in zip(da, db, strict=True):
            torch.testing.assert_close(x["boxes"], y["boxes"], rtol=0, atol=1e-8)
            torch.testing.assert_close(x["labels"], y["labels"], rtol=0, atol=0)
    assert isinstance(ours, GeneralizedRCNN)


@pytest.mark.parametrize("training", [False, True])
def test_input_gradients_equal_torchvision(training):
    """Images that require grad (e.g. for saliency maps or adversarial examples) get the same
    gradient as in torchvision: through the detections in eval, through the losses in training."""
    ours, theirs = tiny_pair()
    g = torch.Generator().manual_seed(2)
    images = [
        torch.rand(3, 70, 90, generator=g, dtype=torch.float64),
        torch.rand(3, 64, 64, generator=g, dtype=torch.float64),
    ]
    grads = []
    for model in (ours, theirs):
        inputs = [image.clone().requires_grad_() for image in images]
        torch.manual_seed(9)
        if training:
            loss = sum(model.train()(inputs, targets_of(num_classes=3)[:2]).values())
        else:
            detections = model.eval()(inputs)
            assert all(len(d["boxes"]) > 0 for d in detections)
            weights = torch.linspace(-1.0, 1.0, 4, dtype=torch.float64)  # every coordinate counts
            loss = sum((d["boxes"] * weights).sum() + d["scores"].sum() for d in detections)
        loss.backward()
        grads.append([image.grad for image in inputs])
    for mine, reference in zip(*grads, strict=True):
        assert mine is not None and mine.abs().sum() > 0
        torch.testing.assert_close(mine, reference, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- validation


@pytest.fixture(scope="module")
def tiny():
    return tiny_model().train()


def good_targets():
    return [
        {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 5.0, 20.0, 25.0]]), "labels": torch.tensor([2])},
    ]


def two_images():
    return [torch.rand(3, 64, 80), torch.rand(3, 70, 64)]


def with_target(index, **fields):
    targets = good_targets()
    targets[index] = {**targets[index], **fields}
    return targets


@pytest.mark.parametrize(
    "images,targets,message",
    [
        (None, None, "targets should not be None"),
        (None, with_target(1, boxes=torch.tensor([1.0, 2.0, 3.0, 4.0])), r"\[G, 4\].*\(4,\)"),
        (None, with_target(0, boxes=torch.zeros(1, 5)), r"\[G, 4\].*\(1, 5\)"),
        (None, with_target(0, boxes=[[1.0, 2.0, 3.0, 4.0]]), r"\[G, 4\] tensor, got list"),
        (None, with_target(1, boxes=torch.tensor([[1, 2, 3, 4]])), "float"),
        (
            None,
            with_target(
                1,
                boxes=torch.tensor([[5.0, 5.0, 20.0, 25.0], [8.0, 9.0, 8.0, 20.0]]),
                labels=torch.tensor([1, 2]),
            ),
            r"invalid box \[.*\] for target at index 1",
        ),
        (None, with_target(0, labels=torch.tensor([3])), r"\[0, 3\).*found label 3"),
        (None, with_target(0, labels=torch.tensor([1, 2])), r"labels.*\[1\]"),
        (None, with_target(1, boxes=torch.tensor([[5.0, float("nan"), 20.0, 25.0]])), "NaN"),
        (None, with_target(0, boxes=torch.tensor([[1.0, 2.0, float("inf"), 40.0]])), "NaN or inf"),
        (
            [torch.rand(3, 64, 80), torch.full((3, 70, 64), float("nan"))],
            "good",
            r"images\[1\]: expected finite pixel values, got NaN or inf",
        ),
        ([torch.rand(64, 80), torch.rand(3, 70, 64)], "good", r"\[D, H, W\].*\(64, 80\)"),
        (None, good_targets()[:1], "one per image"),
    ],
)
def test_training_input_validation(tiny, images, targets, message):
    images = two_images() if images is None else images
    targets = good_targets() if targets == "good" else targets
    with pytest.raises(ValueError, match=message):
        tiny(images, targets)


def test_degenerate_box_is_reported_with_its_coordinates(tiny):
    bad = with_target(0, boxes=torch.tensor([[10.0, 10.0, 10.0, 30.0]]))
    with pytest.raises(ValueError, match=r"Found invalid box \[10\.0, 10\.0, 10\.0, 30\.0\]"):
        tiny(two_images(), bad)  # 64-px images are not resized at min_size 64


def test_valid_inputs_train_and_evaluate(tiny):
    losses = tiny.train()(two_images(), good_targets())
    assert list(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        detections = tiny.eval()(two_images())
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "labels", "scores"}
    tiny.train()


def test_a_batch_tensor_is_accepted_like_a_list(tiny):
    images = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        from_tensor = tiny.eval()(images)
        from_list = tiny(list(images))
    tiny.train()
    for a, b in zip(from_tensor, from_list, strict=True):
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="list of"):
        tiny(torch.rand(3, 64, 80))


def test_constructor_checks():
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="out_channels"):
        FasterRCNN(backbone, num_classes=3)
    backbone.out_channels = 8
    with pytest.raises(ValueError, match="num_classes should not be None"):
        FasterRCNN(backbone)
    with pytest.raises(ValueError, match="num_classes should be None"):
        FasterRCNN(backbone, num_classes=3, box_predictor=FastRCNNPredictor(1024, 3))
    with pytest.raises(TypeError, match="AnchorGenerator"):
        FasterRCNN(backbone, num_classes=3, rpn_anchor_generator=nn.Identity())
    with pytest.raises(TypeError, match="output_size attribute"):
        FasterRCNN(backbone, num_classes=3, box_roi_pool=nn.Identity())
    with pytest.raises(TypeError, match="pooler module such as MultiScaleRoIAlign"):
        FasterRCNN(backbone, num_classes=3, box_roi_pool=lambda f, b, s: f)
    model = FasterRCNN(backbone, box_predictor=FastRCNNPredictor(1024, 4))
    assert model.roi_heads.box_predictor.cls_score.out_features == 4


def test_unknown_keyword_raises_and_transform_keywords_pass_through():
    """torchvision hands **kwargs to its transform, which drops unknown ones silently; here a
    misspelt keyword is a TypeError that names it. The transform's own keywords still work."""
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3))
    backbone.out_channels = 8
    with pytest.raises(TypeError, match=r"'rpn_nms_tresh'; did you mean 'rpn_nms_thresh'"):
        FasterRCNN(backbone, num_classes=3, rpn_nms_tresh=0.1)
    with pytest.raises(TypeError, match="'pretrained'"):
        FasterRCNN(backbone, num_classes=3, pretrained=True)
    extras = dict(size_divisible=16, fixed_size=(64, 48), _skip_resize=True)
    ours = FasterRCNN(backbone, num_classes=3, **extras)
    theirs = tvd.FasterRCNN(backbone, num_classes=3, **extras)
    for name in extras:
        assert getattr(ours.transform, name) == getattr(theirs.transform, name), name
