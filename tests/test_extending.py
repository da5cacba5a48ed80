"""A library people can change: each part swapped by passing an object, with no edit to the
library. The model trains one step and predicts. Also runs every example of book/extending.md."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import rcnn_lab
from rcnn_lab import AnchorGenerator, FasterRCNN, RegionProposalNetwork, RoIHeads
from rcnn_lab.checks import InputTypeError
from rcnn_lab.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from rcnn_lab.ops import MultiScalePooler, MultiScaleRoIAlign, MultiScaleRoIPool, roi_pool

GUIDE = Path(__file__).resolve().parents[1] / "book" / "extending.md"
LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def batch():
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 160, 160, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 90.0, 100.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[50.0, 40.0, 140.0, 120.0]]), "labels": torch.tensor([3])},
    ]
    return images, targets


def train_step_and_predict(model: nn.Module):
    """One SGD step (losses finite, some weight changed), then inference in eval mode."""
    images, targets = batch()
    torch.manual_seed(0)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model.train()(images, targets)
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2
    for d in detections:
        assert d["boxes"].shape[1:] == (4,) and d["boxes"].shape[0] == d["scores"].shape[0]
    return losses, detections


class CountingSampler:
    """Keeps every positive and up to 8 negatives; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, labels):
        self.calls += 1
        positives, negatives = [], []
        for image_labels in labels:
            negative = torch.zeros_like(image_labels, dtype=torch.bool)
            negative[torch.where(image_labels == 0)[0][:8]] = True
            positives.append(image_labels >= 1)
            negatives.append(negative)
        return positives, negatives


class CountingMatcher:
    """IoU >= 0.6 matches, < 0.2 is background, between is ignored; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, quality):
        self.calls += 1
        best, index = quality.max(dim=0)
        codes = torch.where(best < 0.2, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS)
        return torch.where(best >= 0.6, index, codes)


def test_roi_pool_swapped_in():
    model = rcnn_lab.fasterrcnn_small_fpn(
        box_roi_pool=MultiScaleRoIPool(["0", "1", "2", "3"], 7, canonical_scale=64)
    )
    train_step_and_predict(model)


def test_any_pool_function_is_called_per_level():
    levels = []

    def pool(feature, rois, output_size, spatial_scale):
        levels.append(spatial_scale)
        return roi_pool(feature, rois, output_size, spatial_scale)

    pooler = MultiScalePooler(["0", "1", "2", "3"], 7, pool=pool, canonical_scale=64)
    train_step_and_predict(rcnn_lab.fasterrcnn_small_fpn(box_roi_pool=pooler))
    assert set(levels) <= {1 / 4, 1 / 8, 1 / 16, 1 / 32} and len(set(levels)) >= 2


def test_custom_sampler_and_matcher_by_keyword_and_by_attribute():
    model = rcnn_lab.fasterrcnn_small_fpn()
    rpn, heads = model.rpn, model.roi_heads
    rpn_sampler, rpn_matcher = CountingSampler(), CountingMatcher()
    model.rpn = RegionProposalNetwork(
        rpn.anchor_generator, rpn.head, 0.7, 0.3, 128, 0.5,
        rpn._pre_nms_top_n, rpn._post_nms_top_n, 0.7,
        proposal_matcher=rpn_matcher, fg_bg_sampler=rpn_sampler,
    )  # fmt: skip
    heads.fg_bg_sampler, heads.proposal_matcher = CountingSampler(), CountingMatcher()
    similarity_calls = []

    def similarity(a, b):
        similarity_calls.append(1)
        return rcnn_lab.ops.box_iou(a, b)

    heads.box_similarity = similarity
    train_step_and_predict(model)
    assert rpn_sampler.calls == rpn_matcher.calls // 2 == 1  # the matcher runs per image
    assert heads.fg_bg_sampler.calls == 1 and heads.proposal_matcher.calls == 2
    assert len(similarity_calls) == 2  # box_similarity is what the RoI heads match on


def test_roi_heads_keyword_parts():
    heads = rcnn_lab.fasterrcnn_small_fpn().roi_heads
    sampler, matcher = CountingSampler(), CountingMatcher()
    rebuilt = RoIHeads(
        heads.box_roi_pool, heads.box_head, heads.box_predictor,
        0.5, 0.5, 128, 0.25, None, 0.05, 0.5, 50,
        fg_bg_sampler=sampler, proposal_matcher=matcher,
    )  # fmt: skip
    assert rebuilt.fg_bg_sampler is sampler and rebuilt.proposal_matcher is matcher
    with pytest.raises(TypeError, match="fg_bg_sampler: expected a callable"):
        RoIHeads(heads.box_roi_pool, heads.box_head, heads.box_predictor,
                 0.5, 0.5, 128, 0.25, None, 0.05, 0.5, 50, fg_bg_sampler=3)  # fmt: skip


def test_one_level_custom_backbone():
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=4, padding=1), nn.ReLU(),
    )  # fmt: skip
    backbone.out_channels = 32
    model = FasterRCNN(
        backbone,
        num_classes=4,
        min_size=160,
        max_size=160,
        rpn_anchor_generator=AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
    )
    train_step_and_predict(model)


def test_misspelt_keyword_raises():
    with pytest.raises(TypeError, match="'rpn_nms_tresh'.*did you mean 'rpn_nms_thresh'"):
        FasterRCNN(rcnn_lab.fasterrcnn_small_fpn().backbone, num_classes=3, rpn_nms_tresh=0.1)
    with pytest.raises(TypeError, match="rpn_nms_tresh"):
        rcnn_lab.fasterrcnn_small_fpn(rpn_nms_tresh=0.1)


def test_construction_time_errors():
    backbone = rcnn_lab.fasterrcnn_small_fpn().backbone
    uneven = AnchorGenerator(((16,), (32, 48), (64,), (128,), (256,)), ((1.0,),) * 5)
    with pytest.raises(ValueError, match=r"\[1, 2, 1, 1, 1\] anchors per location"):
        FasterRCNN(backbone, num_classes=3, rpn_anchor_generator=uneven)
    with pytest.raises(ValueError, match="names no feature map of the backbone"):
        FasterRCNN(backbone, num_classes=3, box_roi_pool=MultiScaleRoIAlign(["a"], 7, 2))
    with pytest.warns(UserWarning, match=r"lists \['e'\]"):
        FasterRCNN(backbone, num_classes=3, box_roi_pool=MultiScaleRoIAlign(["0", "e"], 7, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default pooler on a 3-level backbone: no warning
        rcnn_lab.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    with pytest.raises(TypeError, match="output_size attribute"):
        FasterRCNN(backbone, num_classes=3, box_roi_pool=nn.Identity())


def test_one_exception_rule_at_every_entry_point():
    model = rcnn_lab.fasterrcnn_small_fpn()
    images, targets = batch()
    targets[1] = {**targets[1], "boxes": targets[1]["boxes"].long()}
    for call in (
        lambda: model.train()(images, targets),
        lambda: model.roi_heads.train()(
            {"0": torch.rand(2, 64, 40, 40)}, [t["boxes"].float() for t in targets],
            [(160, 160)] * 2, targets,
        ),
    ):  # fmt: skip
        with pytest.raises(InputTypeError, match=r"targets\[1\]\['boxes'\]: expected a floating"):
            call()
    assert issubclass(InputTypeError, ValueError) and issubclass(InputTypeError, TypeError)


def test_default_matcher_and_sampler_unchanged():
    model = rcnn_lab.fasterrcnn_small_fpn()
    assert isinstance(model.rpn.proposal_matcher, Matcher)
    assert model.rpn.proposal_matcher.allow_low_quality_matches
    assert not model.roi_heads.proposal_matcher.allow_low_quality_matches
    assert model.roi_heads.box_similarity is rcnn_lab.ops.box_iou


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_guide_runs(capsys):
    blocks = python_blocks(GUIDE.read_text())
    assert len(blocks) >= 8
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "did you mean 'rpn_nms_thresh'" in printed
    assert "InputTypeError targets[0]['boxes']" in printed
