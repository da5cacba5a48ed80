"""Parity of rcnn_lab.ops.roi_pool / RoIPool with torchvision.ops (forward and backward)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from rcnn_lab.ops.roi_pool import MAX_FLOOR, RoIPool, roi_pool
from tests.test_roi_align import random_rois

#: float32 gradients are sums of several output gradients; the kernels add them in the same
#: order, so they agree bit for bit in practice, but only a rounding tolerance is promised
GRAD_F32_TOL = {"atol": 1e-6, "rtol": 1e-6}


def adversarial_rois(height: int, width: int, dtype) -> torch.Tensor:
    """Outside, zero-size, inverted, sub-bin, huge, half-pixel and border-hugging RoIs."""
    h, w = float(height), float(width)
    boxes = [
        [0, 3.0, 3.0, 3.0, 3.0],  # zero size: still one pixel
        [0, 5.0, 2.0, 5.0, 9.0],  # zero width
        [1, 8.0, 8.0, 2.0, 3.0],  # inverted (x2 < x1, y2 < y1): forced to one pixel
        [1, -30.0, -30.0, -10.0, -5.0],  # fully outside, negative coordinates
        [0, w + 5, h + 5, w + 20, h + 30],  # fully outside, past the far border
        [1, -3.0, -2.0, 4.0, 5.0],  # straddles the top-left corner
        [0, -5.0, -5.0, w + 7, h + 9],  # larger than the map
        [0, -1e5, -1e5, 1e5, 1e5],  # huge
        [0, w - 1.0, h - 1.0, w, h],  # the last pixel
        [1, 0.0, 0.0, w - 1, h - 1],  # exactly the map
        [1, 1.2, 1.3, 1.4, 1.45],  # far smaller than a bin
        [0, 2.5, 3.5, 4.5, 5.5],  # halves: C's round() goes up, torch.round() to even
        [1, -0.5, -1.5, 0.5, 1.5],  # negative halves go down (away from zero)
        [0, 0.49999997, 1.4999999, 2.5000002, 3.4999998],  # just off the halves
        [1, 2.0, 2.0, 2.5, 30.0],  # tall and thin
    ]
    return torch.tensor(boxes, dtype=dtype)


def both(x, rois, *args):
    return roi_pool(x, rois, *args), torchvision.ops.roi_pool(x, rois, *args)


def grads(outputs, x, grad_out):
    return [torch.autograd.grad(out, x, grad_out)[0] for out in outputs]


@pytest.mark.parametrize("output_size", [(7, 5), 2, (1, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_backward_match_torchvision_random(output_size, dtype):
    torch.manual_seed(0)
    scale = 1 / 8
    x = torch.randn(2, 8, 20, 27, dtype=dtype, requires_grad=True)
    rois = random_rois(60, 2, 20, 27, scale, seed=1, dtype=dtype)
    ours, ref = both(x, rois, output_size, scale)
    # a maximum is one of the inputs: the forward is exact in every dtype
    assert torch.equal(ours, ref)
    assert ours.is_contiguous() and ours.dtype == dtype
    g_ours, g_ref = grads((ours, ref), x, torch.randn_like(ref))
    if dtype == torch.float64:
        assert torch.equal(g_ours, g_ref)
    else:
        torch.testing.assert_close(g_ours, g_ref, **GRAD_F32_TOL)


@pytest.mark.parametrize("scale", [1.0, 1 / 4, 1 / 32])
@pytest.mark.parametrize("output_size", [(3, 5), 4])
def test_adversarial_rois_match_torchvision(scale, output_size):
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    rois = adversarial_rois(9, 11, torch.float64)
    rois[:, 1:] /= scale  # the same boxes on the feature grid, whatever the scale
    ours, ref = both(x, rois, output_size, scale)
    assert torch.equal(ours, ref)
    g_ours, g_ref = grads((ours, ref), x, torch.randn_like(ref))
    assert torch.equal(g_ours, g_ref)


def test_bins_outside_the_map_are_zero_and_get_no_gradient():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 20.0, 20.0, 30.0, 30.0], [0, 4.0, 4.0, 9.0, 9.0]], dtype=x.dtype)
    out = roi_pool(x, rois, 2)
    assert torch.equal(out[0], torch.zeros(2, 2, 2, dtype=x.dtype))
    assert torch.equal(out[1, :, 1, 1], torch.zeros(2, dtype=x.dtype))  # rows/cols 7.. are off
    (g,) = torch.autograd.grad(out[0].sum(), x)
    assert not g.any()


def test_halves_round_away_from_zero():
    # C's round(2.5) is 3 (torch.round gives 2): the RoI is the single pixel 3
    x = torch.arange(10.0, dtype=torch.float64).reshape(1, 1, 1, 10)
    rois = torch.tensor([[0, 2.5, 0.0, 2.5, 0.0]], dtype=x.dtype)
    assert roi_pool(x, rois, 1).item() == 3.0
    assert torchvision.ops.roi_pool(x, rois, 1).item() == 3.0


def test_float32_box_arithmetic_runs_in_float32():
    # boxes whose bins differ when the scaling and bin edges are computed in float64
    rois = torch.tensor(
        [
            [0.0, 1709.1397705078125, 144.85598754882812, 2270.65869140625, 195.19825744628906],
            [0.0, 1802.0009765625, 447.4191589355469, 2373.444580078125, 1855.9161376953125],
            [0.0, 1498.0662841796875, 1340.5499267578125, 2071.94873046875, 1380.23291015625],
            [0.0, 2382.050537109375, 914.09912109375, 2384.345458984375, 2036.905517578125],
        ]
    )
    torch.manual_seed(0)
    x = torch.randn(1, 2, 300, 300)
    ours, ref = both(x, rois, 7, 0.1)
    assert torch.equal(ours, ref)
    in_float64 = roi_pool(x.double(), rois.double(), 7, 0.1)
    assert not torch.equal(ours.double(), in_float64)  # the test has teeth


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_go_to_the_first_maximum_in_row_major_order(dtype):
    # a constant map: every pixel of a bin ties, and the first (its top-left) one wins
    x = torch.full((1, 1, 6, 8), 2.0, dtype=dtype, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 2.0, 4.0, 5.0]], dtype=dtype)  # x 1..4, y 2..5: 2 x 2 bins
    ours, ref = both(x, rois, 2, 1.0)
    assert torch.equal(ours, ref) and torch.equal(ours, torch.full_like(ours, 2.0))
    g_ours, g_ref = grads((ours, ref), x, torch.ones_like(ours))
    assert torch.equal(g_ours, g_ref)
    expected = torch.zeros(6, 8, dtype=dtype)
    expected[[2, 2, 4, 4], [1, 3, 1, 3]] = 1.0  # the top-left pixel of each bin
    assert torch.equal(g_ours[0, 0], expected)


def test_many_ties_in_quantised_features_match_torchvision():
    # values from {0, 1, 2, 3}: most bins hold several equal maxima
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 4, (2, 4, 16, 16), generator=g).double().requires_grad_()
    rois = random_rois(40, 2, 16, 16, 0.5, seed=4, dtype=torch.float64)
    ours, ref = both(x, rois, (3, 4), 0.5)
    assert torch.equal(ours, ref)
    g_ours, g_ref = grads((ours, ref), x, torch.randn_like(ref))
    assert torch.equal(g_ours, g_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_nan_and_inf_features_match_torchvision(dtype):
    # the reference scan starts at -FLT_MAX and keeps strictly greater values: NaN is never
    # kept, a bin of -inf (or NaN) gives -FLT_MAX (-inf in float16) and no gradient
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8, dtype=dtype)
    x[0, 0, :4, :4] = float("-inf")
    x[0, 1, :4, :4] = float("nan")
    x[0, 0, 4, 4] = float("inf")
    x[0, 1, 5, 5] = float("nan")
    x[0, 1, 0, 0] = 5.0
    x.requires_grad_()
    rois = torch.tensor([[0, 0.0, 0.0, 7.0, 7.0], [0, 0.0, 0.0, 2.0, 2.0]], dtype=dtype)
    ours, ref = both(x, rois, 4, 1.0)
    assert torch.equal(ours, ref)
    assert (ours[1, 0] == torch.tensor(MAX_FLOOR).to(dtype)).all()
    g_ours, g_ref = grads((ours, ref), x, torch.ones_like(ref))
    assert torch.equal(g_ours, g_ref)


def test_float16_matches_torchvision():
    # torchvision's CPU kernel runs in float16, boxes and bin edges too, and so does rcnn_lab
    torch.manual_seed(0)
    x = torch.randn(2, 4, 20, 27, dtype=torch.float16, requires_grad=True)
    rois = random_rois(60, 2, 20, 27, 1 / 3, seed=1, dtype=torch.float16)
    ours, ref = both(x, rois, (4, 3), 1 / 3)
    assert torch.equal(ours, ref) and ours.dtype == torch.float16
    g_ours, g_ref = grads((ours, ref), x, torch.randn_like(ref))
    assert torch.equal(g_ours, g_ref)  # both round after every addition


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_pools_low_precision_in_float32(dtype):
    # torchvision's autocast (registered for CUDA) casts input and boxes to float32, pools,
    # and casts the output back; rcnn_lab does so under autocast on any device
    torch.manual_seed(0)
    x = torch.randn(2, 4, 20, 27).to(dtype).requires_grad_()
    rois = random_rois(60, 2, 20, 27, 1 / 3, seed=1, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = roi_pool(x, rois, (4, 3), 1 / 3)
    ref = torchvision.ops.roi_pool(x.float(), rois, (4, 3), 1 / 3).to(dtype)
    assert torch.equal(ours, ref) and ours.dtype == dtype
    g_ours, g_ref = grads((ours, ref), x, torch.randn_like(ref))
    assert torch.equal(g_ours, g_ref)


def test_bfloat16_without_autocast_pools_in_float32():
    # torchvision has no bfloat16 kernel; rcnn_lab pools bfloat16 as its autocast would
    torch.manual_seed(0)
    x = torch.randn(1, 3, 10, 10).bfloat16()
    rois = random_rois(20, 1, 10, 10, 1 / 2, seed=2, dtype=torch.bfloat16)
    ref = torchvision.ops.roi_pool(x.float(), rois.float(), 3, 1 / 2).bfloat16()
    assert torch.equal(roi_pool(x, rois, 3, 1 / 2), ref)


def test_no_rois_and_empty_output():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    for rois, size in [(torch.zeros(0, 5), (2, 3)), (torch.tensor([[0, 0, 0, 4.0, 4.0]]), 0)]:
        ours, ref = both(x, rois, size, 1.0)
        assert ours.shape == ref.shape
        (g,) = torch.autograd.grad(ours.sum(), x)
        assert not g.any()


def test_list_of_boxes_matches_the_roi_format():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 12, 14, dtype=torch.float64, requires_grad=True)
    boxes = [random_rois(k, 1, 12, 14, 0.5, seed=k, dtype=torch.float64)[:, 1:] for k in (5, 0, 7)]
    ours, ref = both(x, boxes, 3, 0.5)
    assert torch.equal(ours, ref)
    ids = torch.tensor([0.0] * 5 + [2.0] * 7, dtype=torch.float64)[:, None]
    assert torch.equal(ours, roi_pool(x, torch.cat([ids, torch.cat(boxes)], 1), 3, 0.5))
    g_ours, g_ref = grads((ours, ref), x, torch.randn_like(ref))
    assert torch.equal(g_ours, g_ref)


def test_channels_last_input_and_boxes_get_no_gradient():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64).to(memory_format=torch.channels_last)
    x.requires_grad_()
    rois = random_rois(10, 2, 9, 11, 1.0, seed=0, dtype=torch.float64).requires_grad_()
    ours, ref = both(x, rois, 3, 1.0)
    assert torch.equal(ours, ref)
    g_x, g_rois = torch.autograd.grad(ours.sum(), (x, rois), allow_unused=True)
    assert g_rois is None
    assert torch.equal(g_x, torch.autograd.grad(ref.sum(), x)[0])


def test_backward_twice_with_retained_graph():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    out = roi_pool(x, torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]), 3)
    first = torch.autograd.grad(out.sum(), x, retain_graph=True)[0]
    assert torch.equal(first, torch.autograd.grad(out.sum(), x)[0])


def test_module_matches_torchvision_module():
    for output_size, scale in [((7, 7), 1 / 16), (5, 0.25)]:
        ours, ref = RoIPool(output_size, scale), torchvision.ops.RoIPool(output_size, scale)
        assert repr(ours) == repr(ref)
        assert (ours.output_size, ours.spatial_scale) == (ref.output_size, ref.spatial_scale)
        assert list(ours.state_dict()) == list(ref.state_dict()) == []
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    rois = random_rois(12, 2, 16, 16, 0.25, seed=5, dtype=torch.float32)
    assert torch.equal(RoIPool(5, 0.25)(x, rois), torchvision.ops.RoIPool(5, 0.25)(x, rois))


@pytest.mark.parametrize(
    ("boxes", "output_size", "error", "match"),
    [
        (torch.zeros(3, 4), 2, ValueError, "boxes"),
        ([torch.zeros(3, 5)], 2, ValueError, "boxes"),
        (torch.zeros(3), 2, ValueError, "boxes"),
        (None, 2, ValueError, "boxes"),
        (torch.zeros(1, 5, dtype=torch.int64), 2, TypeError, "boxes"),
        (torch.zeros(1, 5, dtype=torch.float64), 2, ValueError, "boxes.*dtype"),
        (torch.tensor([[0, float("nan"), 0, 1, 1]]), 2, ValueError, "boxes.*finite"),
        (torch.tensor([[0, 0, 0, float("inf"), 1]]), 2, ValueError, "boxes.*finite"),
        (torch.tensor([[0, 0, 0, 3e9, 1]]), 2, ValueError, "boxes.*2\\*\\*31"),
        (torch.tensor([[2.0, 0, 0, 1, 1]]), 2, ValueError, "batch ind"),
        (torch.tensor([[-1.0, 0, 0, 1, 1]]), 2, ValueError, "batch ind"),
        (torch.tensor([[0.5, 0, 0, 1, 1]]), 2, ValueError, "batch ind"),
        (torch.tensor([[float("nan"), 0, 0, 1, 1]]), 2, ValueError, "batch ind"),
        (torch.zeros(1, 5), 2.5, TypeError, "output_size"),
        (torch.zeros(1, 5), (2, 2.0), TypeError, "output_size"),
        (torch.zeros(1, 5), "7", TypeError, "output_size"),
        (torch.zeros(1, 5), (1, 2, 3), TypeError, "output_size"),
        (torch.zeros(1, 5), True, TypeError, "output_size"),
        (torch.zeros(1, 5), -1, ValueError, "output_size"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(boxes, output_size, error, match):
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(error, match=match):
        roi_pool(x, boxes, output_size)


def test_bad_input_and_scale_raise():
    rois = torch.zeros(1, 5)
    with pytest.raises(TypeError, match="input"):
        roi_pool([[1.0]], rois, 2)
    with pytest.raises(ValueError, match="input"):
        roi_pool(torch.zeros(1, 4, 4), rois, 2)
    with pytest.raises(TypeError, match="input"):
        roi_pool(torch.zeros(1, 1, 4, 4, dtype=torch.int64), rois, 2)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool(torch.zeros(1, 1, 4, 4), rois, 2, float("nan"))


@settings(max_examples=40, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(
            st.integers(0, 1),
            *[st.floats(-40.0, 80.0, allow_nan=False, width=32) for _ in range(4)],
        ),
        min_size=1,
        max_size=12,
    ),
    scale=st.sampled_from([1.0, 0.5, 1 / 3, 1 / 4, 1 / 16]),
    output_size=st.tuples(st.integers(1, 7), st.integers(1, 7)),
)
def test_random_boxes_match_torchvision(boxes, scale, output_size):
    torch.manual_seed(len(boxes))
    x = torch.randn(2, 3, 13, 17, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(boxes, dtype=torch.float64)
    rois[:, 1:] /= scale
    ours, ref = both(x, rois, output_size, scale)
    assert torch.equal(ours, ref)
    g_ours, g_ref = grads((ours, ref), x, torch.randn_like(ref))
    assert torch.equal(g_ours, g_ref)
