"""BoxCoder: hand-checked deltas, bitwise parity with torchvision, round trip, clamp, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder

import rcnn_lab
from rcnn_lab.box_coder import DEFAULT_BBOX_XFORM_CLIP, BoxCoder

RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
ROI_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
ODD_WEIGHTS = (2.5, 0.7, 3.0, 1.0 / 3.0)
ALL_WEIGHTS = [RPN_WEIGHTS, ROI_WEIGHTS, ODD_WEIGHTS]


def _random_boxes(count: int, generator: torch.Generator, dtype=torch.float64, scale=500.0):
    """[count, 4] boxes with positive width and height."""
    corner = torch.rand(count, 2, generator=generator, dtype=dtype) * scale
    size = torch.rand(count, 2, generator=generator, dtype=dtype) * scale + 1
    return torch.cat([corner, corner + size], dim=1)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bitwise equality, NaNs included, and same dtype and shape."""
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------- hand-checkable cases


def test_encode_by_hand():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[5.0, 0.0, 15.0, 20.0]])  # centre moves by (5, 5), height doubles
    deltas = BoxCoder(RPN_WEIGHTS).encode_single(gt, anchor)
    torch.testing.assert_close(deltas, torch.tensor([[0.5, 0.5, 0.0, math.log(2.0)]]))
    deltas = BoxCoder(ROI_WEIGHTS).encode_single(gt, anchor)
    torch.testing.assert_close(deltas, torch.tensor([[5.0, 5.0, 0.0, 5 * math.log(2.0)]]))


def test_decode_by_hand_and_shape():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    codes = torch.tensor([[0.5, 0.5, 0.0, math.log(2.0), 0.0, 0.0, 0.0, 0.0]])  # two classes
    boxes = BoxCoder(RPN_WEIGHTS).decode(codes, [anchor])
    assert boxes.shape == (1, 2, 4)
    expected = torch.tensor([[[5.0, 0.0, 15.0, 20.0], [0.0, 0.0, 10.0, 10.0]]])
    torch.testing.assert_close(boxes, expected)


def test_clamp_limits_growth_to_1000_over_16():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    codes = torch.tensor([[0.0, 0.0, 100.0, 100.0]], dtype=torch.float64)  # exp(100) would be huge
    (box,) = BoxCoder(RPN_WEIGHTS).decode_single(codes, anchor)
    torch.testing.assert_close(box[2] - box[0], torch.tensor(1000.0, dtype=torch.float64))
    assert DEFAULT_BBOX_XFORM_CLIP == math.log(1000.0 / 16)
    (box,) = BoxCoder(RPN_WEIGHTS, bbox_xform_clip=math.log(2.0)).decode_single(codes, anchor)
    torch.testing.assert_close(box[3] - box[1], torch.tensor(32.0, dtype=torch.float64))


# ---------------------------------------------------------------- parity with torchvision


@pytest.mark.parametrize("weights", ALL_WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_parity_bitwise(weights, dtype):
    g = torch.Generator().manual_seed(0)
    counts = [7, 0, 300, 1]  # an image without boxes in the middle
    gts = [_random_boxes(n, g, dtype) for n in counts]
    anchors = [_random_boxes(n, g, dtype) for n in counts]
    ours = BoxCoder(weights).encode(gts, anchors)
    theirs = TvBoxCoder(weights).encode(gts, anchors)
    assert isinstance(ours, tuple) and len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        _same(a, b)


@pytest.mark.parametrize("weights", ALL_WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("classes", [1, 3])
def test_decode_parity_bitwise(weights, dtype, classes):
    g = torch.Generator().manual_seed(1)
    counts = [5, 0, 200]
    boxes = [_random_boxes(n, g, dtype) for n in counts]
    codes = torch.randn(sum(counts), 4 * classes, generator=g, dtype=dtype) * 3
    codes[:10, 2::4] = 50.0  # far beyond the clamp
    codes[10:20, 3::4] = -80.0  # exp() underflows to 0: zero-size boxes
    codes[20:30] = 1e4  # huge shifts as well
    ours = BoxCoder(weights).decode(codes, boxes)
    theirs = TvBoxCoder(weights).decode(codes, boxes)
    assert ours.shape == (sum(counts), classes, 4)
    _same(ours, theirs)
    flat = torch.cat(boxes)  # [K, 4]
    _same(
        BoxCoder(weights).decode_single(codes, flat), TvBoxCoder(weights).decode_single(codes, flat)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parity(dtype):
    g = torch.Generator().manual_seed(2)
    boxes = _random_boxes(64, g, torch.float32, scale=100.0).to(dtype)
    gts = _random_boxes(64, g, torch.float32, scale=100.0).to(dtype)
    codes = (torch.randn(64, 8, generator=g) * 2).to(dtype)
    _same(
        BoxCoder(ROI_WEIGHTS).decode(codes, [boxes]), TvBoxCoder(ROI_WEIGHTS).decode(codes, [boxes])
    )
    ours, theirs = BoxCoder(ROI_WEIGHTS), TvBoxCoder(ROI_WEIGHTS)
    _same(ours.encode_single(gts, boxes), theirs.encode_single(gts, boxes))


def test_zero_size_boxes_match_torchvision_inf_and_nan():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 9.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    gts = torch.tensor([[4.0, 4.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 1.0, 2.0]])
    for weights in ALL_WEIGHTS:
        ours = BoxCoder(weights).encode_single(gts, boxes)
        _same(ours, TvBoxCoder(weights).encode_single(gts, boxes))
        assert not torch.isfinite(ours).all()  # the degenerate rows really are degenerate
        codes = torch.randn(3, 4)
        _same(BoxCoder(weights).decode(codes, [boxes]), TvBoxCoder(weights).decode(codes, [boxes]))


def test_empty_inputs_match_torchvision_shapes():
    empty = torch.zeros(0, 4)
    for weights in (RPN_WEIGHTS, ROI_WEIGHTS):
        ours, theirs = BoxCoder(weights), TvBoxCoder(weights)
        (enc,) = ours.encode([empty], [empty])
        assert enc.shape == theirs.encode([empty], [empty])[0].shape == (0, 4)
        for width in (4, 8):  # with no boxes torchvision returns [0, 4*C] unreshaped
            codes = torch.zeros(0, width)
            _same(ours.decode(codes, [empty, empty]), theirs.decode(codes, [empty, empty]))
    assert BoxCoder(RPN_WEIGHTS).encode([], []) == ()  # torchvision raises on no images


def test_decode_accepts_flat_or_batched_codes_like_torchvision():
    g = torch.Generator().manual_seed(3)
    boxes = [_random_boxes(6, g), _random_boxes(4, g)]
    codes = torch.randn(10, 1, 4, generator=g, dtype=torch.float64)  # e.g. [K, 1, 4]
    _same(BoxCoder(RPN_WEIGHTS).decode(codes, boxes), TvBoxCoder(RPN_WEIGHTS).decode(codes, boxes))
    # decode works in the codes' dtype even for float32 reference boxes
    boxes32 = [b.float() for b in boxes]
    ours, theirs = BoxCoder(RPN_WEIGHTS), TvBoxCoder(RPN_WEIGHTS)
    _same(ours.decode(codes, boxes32), theirs.decode(codes, boxes32))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    count=st.integers(1, 50),
    weights=st.sampled_from(ALL_WEIGHTS),
    scale=st.sampled_from([1.0, 50.0, 1000.0]),
)
def test_random_parity_float32_bitwise(seed, count, weights, scale):
    g = torch.Generator().manual_seed(seed)
    gts = _random_boxes(count, g, torch.float32, scale)
    anchors = _random_boxes(count, g, torch.float32, scale)
    ours, theirs = BoxCoder(weights), TvBoxCoder(weights)
    deltas = ours.encode_single(gts, anchors)
    _same(deltas, theirs.encode_single(gts, anchors))
    _same(ours.decode(deltas, [anchors]), theirs.decode(deltas, [anchors]))


# ---------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    count=st.integers(0, 40),
    weights=st.sampled_from(ALL_WEIGHTS),
)
def test_round_trip_decode_of_encode_is_identity(seed, count, weights):
    g = torch.Generator().manual_seed(seed)
    gts = _random_boxes(count, g, scale=40.0)  # sizes 1..41 vs 1..41: ratio < 62.5, no clamp
    anchors = _random_boxes(count, g, scale=40.0)
    coder = BoxCoder(weights)
    (deltas,) = coder.encode([gts], [anchors])
    decoded = coder.decode(deltas, [anchors]).reshape(-1, 4)  # [K, 1, 4] -> [K, 4]
    torch.testing.assert_close(decoded, gts, rtol=1e-10, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), weights=st.sampled_from(ALL_WEIGHTS))
def test_round_trip_encode_of_decode_below_clamp(seed, weights):
    g = torch.Generator().manual_seed(seed)
    anchors = _random_boxes(20, g)
    codes = (torch.rand(20, 4, generator=g, dtype=torch.float64) - 0.5) * 4  # |d| <= 2
    codes = codes * torch.tensor(weights, dtype=torch.float64)
    coder = BoxCoder(weights)
    boxes = coder.decode_single(codes, anchors)
    torch.testing.assert_close(coder.encode_single(boxes, anchors), codes, rtol=1e-9, atol=1e-9)


def test_device_follows_inputs():
    boxes = torch.zeros(3, 4, device="meta")
    codes = torch.zeros(3, 8, device="meta", dtype=torch.float16)
    out = BoxCoder(ROI_WEIGHTS).decode(codes, [boxes])
    assert out.device.type == "meta" and out.dtype == torch.float16 and out.shape == (3, 2, 4)
    assert BoxCoder(ROI_WEIGHTS).encode_single(boxes, boxes).device.type == "meta"
    assert rcnn_lab.BoxCoder is BoxCoder


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_value_error_naming_the_argument():
    coder = BoxCoder(RPN_WEIGHTS)
    boxes = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="boxes: expected a list"):
        coder.decode(torch.zeros(3, 4), boxes)
    with pytest.raises(ValueError, match="rel_codes: expected a Tensor"):
        coder.decode([[0.0] * 4] * 3, [boxes])
    with pytest.raises(ValueError, match=r"rel_codes: expected 4\*C deltas.*\(3, 6\)"):
        coder.decode(torch.zeros(3, 6), [boxes])
    with pytest.raises(ValueError, match=r"rel_codes: expected \[K, 4\*C\].*\(3, 5\)"):
        coder.decode_single(torch.zeros(3, 5), boxes)
    with pytest.raises(ValueError, match=r"got 2 and 1 tensors"):
        coder.encode([boxes, boxes], [boxes])
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(2, 4\)"):
        coder.encode_single(boxes, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0))


# ---------------------------------------------------------------- chapter helpers


def test_viz_box_move_and_explorer_build():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rcnn_lab.viz.box_coder import box_coder_explorer, plot_box_move, plot_delta_histograms

    anchor = torch.tensor([100.0, 100.0, 200.0, 150.0])
    box = plot_box_move(anchor, (0.4, 0.1, math.log(1.4), math.log(1.6)))
    torch.testing.assert_close(box, torch.tensor([120.0, 90.0, 260.0, 170.0]))
    box = plot_box_move(anchor, (4.0, 1.0, 0.0, 0.0), weights=ROI_WEIGHTS)  # moved 0.4 widths
    torch.testing.assert_close(box, torch.tensor([140.0, 105.0, 240.0, 155.0]))
    fig = plot_delta_histograms({"a": torch.randn(50, 4)})
    assert len(fig.axes) == 4
    assert box_coder_explorer(anchor, target=anchor + 10) is not None
    plt.close("all")
