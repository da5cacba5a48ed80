"""The small trunk and the small CPU detector built on it."""

from __future__ import annotations

import io

import pytest
import torch

from rcnn_lab.builders import SMALL_DEFAULTS, fasterrcnn_small_fpn
from rcnn_lab.small_trunk import SMALL_TRUNK_WIDTHS, ResidualBlock, SmallTrunk

#: The shipped checkpoint must stay under this size (issue 16).
MAX_CHECKPOINT_BYTES = 8 * 1024 * 1024


def test_trunk_stages_halve_the_resolution():
    trunk = SmallTrunk()
    x = torch.rand(2, 3, 160, 128)
    sizes = []
    for name, stage in trunk.named_children():
        x = stage(x)
        sizes.append((name, tuple(x.shape)))
    widths = SMALL_TRUNK_WIDTHS
    assert sizes == [
        ("stem", (2, widths[0], 80, 64)),
        ("layer1", (2, widths[1], 40, 32)),
        ("layer2", (2, widths[2], 20, 16)),
        ("layer3", (2, widths[3], 10, 8)),
        ("layer4", (2, widths[4], 5, 4)),
    ]
    assert trunk.stage_channels == list(widths[1:])


def test_residual_block_starts_as_identity_after_relu():
    block = ResidualBlock(8).eval()
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(block(x), x.relu())


@pytest.mark.parametrize("widths", [(8, 8, 8, 8), (8, 8, 0, 8, 8), (8, 8.5, 8, 8, 8)])
def test_trunk_rejects_bad_widths(widths):
    with pytest.raises(ValueError, match="widths"):
        SmallTrunk(widths)


def test_small_detector_size_and_checkpoint_bytes():
    model = fasterrcnn_small_fpn()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert buffer.tell() <= MAX_CHECKPOINT_BYTES


def test_small_detector_trains_and_detects():
    torch.manual_seed(0)
    model = fasterrcnn_small_fpn(num_classes=4, min_size=96, max_size=96)
    images = [torch.rand(3, 96, 96), torch.rand(3, 80, 96)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model.train()(images, targets)
    assert sorted(losses) == sorted(
        ["loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"]
    )
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.body.stem[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2
    for det in detections:
        assert det["boxes"].shape[1] == 4
        assert len(det["boxes"]) <= SMALL_DEFAULTS["box_detections_per_img"]
        assert ((det["labels"] >= 1) & (det["labels"] < 4)).all()


def test_small_detector_defaults_can_be_overridden_and_typos_raise():
    model = fasterrcnn_small_fpn(min_size=200, max_size=300, box_detections_per_img=7)
    assert model.transform.min_size == (200,) and model.transform.max_size == 300
    assert model.roi_heads.detections_per_img == 7
    with pytest.raises(TypeError, match="rpn_nms_tresh"):
        fasterrcnn_small_fpn(rpn_nms_tresh=0.1)
