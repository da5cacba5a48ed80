"""Parity of rcnn_lab.ops.MultiScaleRoIAlign and LevelMapper with torchvision.ops.poolers."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.ops import poolers as tv_poolers

from rcnn_lab.ops import MultiScaleRoIAlign
from rcnn_lab.ops.poolers import LevelMapper, infer_scale

F64_TOL = {"atol": 1e-12, "rtol": 1e-12}


def pyramid(image_hw: tuple[int, int], strides, channels: int, n: int, dtype, seed: int = 0):
    """Feature maps named '0', '1', ... of an FPN-like pyramid (sizes rounded up like convs)."""
    g = torch.Generator().manual_seed(seed)
    feats = OrderedDict()
    for i, stride in enumerate(strides):
        h, w = -(-image_hw[0] // stride), -(-image_hw[1] // stride)
        feats[str(i)] = torch.randn(n, channels, h, w, generator=g, dtype=dtype)
    return feats


def boxes_for(image_hw, count: int, seed: int, dtype):
    """Boxes of many sizes (8 px to the whole image), some clipped at the border."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    size = 2 ** (3 + torch.rand(count, 2, generator=g, dtype=torch.float64) * 7)  # 8..1024 px
    size = torch.minimum(size, torch.tensor([w, h], dtype=torch.float64))
    xy = torch.rand(count, 2, generator=g, dtype=torch.float64) * (
        torch.tensor([w, h], dtype=torch.float64) - size
    )
    return torch.cat([xy, xy + size], dim=1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_four_levels_mixed_image_sizes(dtype, sampling_ratio):
    image_shapes = [(320, 416), (288, 448)]  # padded batch is 320 x 448
    feats = pyramid((320, 448), [4, 8, 16, 32], 8, 2, dtype)
    feats["pool"] = torch.randn(2, 8, 5, 7, dtype=dtype)  # present in x, not pooled
    boxes = [boxes_for(s, k, seed=k, dtype=dtype) for s, k in zip(image_shapes, (40, 25))]
    names = ["0", "1", "2", "3"]
    ours = MultiScaleRoIAlign(names, 7, sampling_ratio)
    ref = torchvision.ops.MultiScaleRoIAlign(names, 7, sampling_ratio)
    out, expected = ours(feats, boxes, image_shapes), ref(feats, boxes, image_shapes)
    tol = F64_TOL if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(out, expected, **tol)
    assert out.shape == (65, 8, 7, 7)
    assert ours.scales == ref.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    assert (ours.map_levels.k_min, ours.map_levels.k_max) == (2, 5)


def test_levels_are_all_used_and_gradients_match():
    image_shapes = [(512, 512)]
    feats = pyramid((512, 512), [4, 8, 16, 32], 4, 1, torch.float64)
    for f in feats.values():
        f.requires_grad_(True)
    boxes = [torch.tensor([[0, 0, 20, 20], [0, 0, 150, 150], [10, 10, 300, 300], [0, 0, 512, 512]])]
    boxes = [boxes[0].double()]
    names = list(feats)
    ours = MultiScaleRoIAlign(names, (3, 4), 2)
    ref = torchvision.ops.MultiScaleRoIAlign(names, (3, 4), 2)
    out, expected = ours(feats, boxes, image_shapes), ref(feats, boxes, image_shapes)
    torch.testing.assert_close(out, expected, **F64_TOL)
    assert ours.map_levels(boxes).tolist() == [0, 1, 2, 3]
    grad_out = torch.randn_like(out)
    inputs = list(feats.values())
    for g_ours, g_ref in zip(
        torch.autograd.grad(out, inputs, grad_out), torch.autograd.grad(expected, inputs, grad_out)
    ):
        torch.testing.assert_close(g_ours, g_ref, **F64_TOL)


def test_one_level():
    image_shapes = [(200, 300), (180, 320)]
    feats = pyramid((200, 320), [16], 6, 2, torch.float64)
    boxes = [boxes_for(s, 9, seed=i, dtype=torch.float64) for i, s in enumerate(image_shapes)]
    ours = MultiScaleRoIAlign(["0"], 5, -1)
    ref = torchvision.ops.MultiScaleRoIAlign(["0"], 5, -1)
    torch.testing.assert_close(ours(feats, boxes, image_shapes), ref(feats, boxes, image_shapes))
    assert ours.scales == ref.scales == [1 / 16]


def test_scales_are_cached_like_torchvision():
    feats = pyramid((256, 256), [4, 8], 3, 1, torch.float64)
    boxes = [boxes_for((256, 256), 12, seed=5, dtype=torch.float64)]
    ours = MultiScaleRoIAlign(["0", "1"], 4, 2)
    ref = torchvision.ops.MultiScaleRoIAlign(["0", "1"], 4, 2)
    ours(feats, boxes, [(256, 256)]), ref(feats, boxes, [(256, 256)])
    # a second call claiming other image sizes keeps the first call's scales in both
    out = ours(feats, boxes, [(128, 128)])
    torch.testing.assert_close(out, ref(feats, boxes, [(128, 128)]), **F64_TOL)
    assert ours.scales == ref.scales == [1 / 4, 1 / 8]


def test_dict_order_decides_levels_like_torchvision():
    feats = pyramid((256, 256), [4, 8], 3, 1, torch.float64)
    boxes = [boxes_for((256, 256), 10, seed=2, dtype=torch.float64)]
    names = ["1", "0"]  # the dict order ('0' then '1') wins, as in torchvision
    out = MultiScaleRoIAlign(names, 3, 2)(feats, boxes, [(256, 256)])
    expected = torchvision.ops.MultiScaleRoIAlign(names, 3, 2)(feats, boxes, [(256, 256)])
    torch.testing.assert_close(out, expected, **F64_TOL)


def test_empty_boxes():
    feats = pyramid((128, 128), [4, 8, 16], 3, 2, torch.float32)
    boxes = [torch.zeros(0, 4), torch.zeros(0, 4)]
    out = MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, [(128, 128)] * 2)
    assert out.shape == (0, 3, 7, 7)


def test_level_mapper_matches_torchvision_at_boundaries():
    sides = torch.tensor([1.0, 55.9, 56.0, 111.99, 112.0, 224.0, 447.9, 448.0, 896.0, 5000.0])
    sides = torch.cat([sides, sides * (1 + 1e-7), sides * (1 - 1e-7)])
    boxes = [torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1)]
    for k_min, k_max in [(2, 5), (3, 4), (4, 4)]:
        ours = LevelMapper(k_min, k_max)(boxes)
        ref = tv_poolers.LevelMapper(k_min, k_max)(boxes)
        assert torch.equal(ours, ref)
    assert LevelMapper(2, 5)([torch.tensor([[0.0, 0.0, 224.0, 224.0]])]).tolist() == [2]  # k0 = 4


def test_infer_scale_matches_torchvision():
    for feature_hw, image_hw in [
        ((25, 34), (800, 1088)),
        ((13, 17), (800, 1066)),
        ((7, 9), (100, 140)),
    ]:
        feature = torch.zeros(1, 1, *feature_hw)
        assert infer_scale(feature, image_hw) == tv_poolers._infer_scale(feature, list(image_hw))


def test_repr_and_state_dict():
    ours = MultiScaleRoIAlign(["0", "1"], 7, 2)
    ref = torchvision.ops.MultiScaleRoIAlign(["0", "1"], 7, 2)
    assert repr(ours) == repr(ref)
    assert repr(MultiScaleRoIAlign(["a"], [7, 5], -1)) == repr(
        torchvision.ops.MultiScaleRoIAlign(["a"], [7, 5], -1)
    )
    assert ours.state_dict() == {} == ref.state_dict()
    assert ours.output_size == (7, 7)


def test_names_missing_from_x_are_skipped_like_torchvision():
    feats = pyramid((64, 64), [4, 8], 2, 1, torch.float64)
    boxes = [boxes_for((64, 64), 9, seed=3, dtype=torch.float64)]
    names = ["0", "1", "2", "3"]  # FasterRCNN's default pooler over a 2-level backbone
    ours = MultiScaleRoIAlign(names, 3, 2)(feats, boxes, [(64, 64)])
    theirs = torchvision.ops.MultiScaleRoIAlign(names, 3, 2)(feats, boxes, [(64, 64)])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_bad_inputs():
    feats = pyramid((64, 64), [4], 2, 1, torch.float32)
    pooler = MultiScaleRoIAlign(["missing", "absent"], 3, 2)
    with pytest.raises(ValueError, match="none of the feature maps"):
        pooler(feats, [torch.zeros(1, 4)], [(64, 64)])
    with pytest.raises(ValueError, match="dict"):
        MultiScaleRoIAlign(["0"], 3, 2)(list(feats.values()), [torch.zeros(1, 4)], [(64, 64)])
    with pytest.raises(ValueError, match="image_shapes"):
        MultiScaleRoIAlign(["0"], 3, 2)(feats, [torch.zeros(1, 4)], [])
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        MultiScaleRoIAlign(["0"], 3, 2)(feats, [torch.zeros(1, 5)], [(64, 64)])
