"""Parity of rcnn_lab.ops.roi_align / RoIAlign with torchvision.ops (forward and backward)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from rcnn_lab.ops import RoIAlign, roi_align

F32_TOL = {"atol": 1e-5, "rtol": 1e-5}
F64_TOL = {"atol": 1e-12, "rtol": 1e-12}
GRAD_F32_TOL = {"atol": 1e-4, "rtol": 1e-4}


def random_rois(k: int, n: int, height: int, width: int, scale: float, seed: int, dtype):
    """[K, 5] RoIs in image pixels: some inside, some partly or fully outside the map."""
    g = torch.Generator().manual_seed(seed)
    img = torch.tensor([width / scale, height / scale], dtype=torch.float64)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * img * 1.4 - img * 0.2
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * img * 0.6
    ids = torch.randint(0, n, (k, 1), generator=g).to(torch.float64)
    return torch.cat([ids, xy, xy + wh], dim=1).to(dtype)


def adversarial_rois(height: int, width: int, dtype) -> torch.Tensor:
    """Zero-size, inverted, outside, negative, bigger-than-map and border-hugging RoIs."""
    h, w = float(height), float(width)
    boxes = [
        [0, 3.0, 3.0, 3.0, 3.0],  # zero size
        [0, 5.0, 2.0, 5.0, 9.0],  # zero width
        [1, 8.0, 8.0, 2.0, 3.0],  # inverted (x2 < x1, y2 < y1)
        [1, -30.0, -30.0, -10.0, -5.0],  # fully outside, negative coordinates
        [0, w + 5, h + 5, w + 20, h + 30],  # fully outside, past the far border
        [1, -3.0, -2.0, 4.0, 5.0],  # straddles the top-left corner
        [0, -5.0, -5.0, w + 7, h + 9],  # larger than the map
        [0, w - 1.0, h - 1.0, w, h],  # the last pixel
        [1, 0.0, 0.0, w, h],  # exactly the map
        [0, w - 0.5, 0.25, w + 0.5, h - 0.25],  # straddles the right border
        [1, 1.0, 1.0, 1.0 + 1e-4, 1.0 + 1e-4],  # tiny
        [0, -1.0, -1.0, 0.0, 0.0],  # touches -1, the edge of "counts as inside"
        [1, 2.0, 2.0, 2.5, 30.0],  # tall and thin
    ]
    return torch.tensor(boxes, dtype=dtype)


def both(x, rois, *args, **kwargs):
    return roi_align(x, rois, *args, **kwargs), torchvision.ops.roi_align(x, rois, *args, **kwargs)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1, 0, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_backward_match_torchvision_random(aligned, sampling_ratio, dtype):
    torch.manual_seed(0)
    scale = 1 / 8
    x = torch.randn(2, 16, 20, 27, dtype=dtype, requires_grad=True)
    rois = random_rois(60, 2, 20, 27, scale, seed=1, dtype=dtype)
    ours, ref = both(x, rois, (7, 5), scale, sampling_ratio, aligned)
    tol = F32_TOL if dtype == torch.float32 else F64_TOL
    torch.testing.assert_close(ours, ref, **tol)
    assert ours.is_contiguous() and ours.shape == (60, 16, 7, 5)
    grad_out = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, **(GRAD_F32_TOL if dtype == torch.float32 else tol))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, -1])
def test_adversarial_rois_match_torchvision(aligned, sampling_ratio):
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    rois = adversarial_rois(9, 11, torch.float64)
    ours, ref = both(x, rois, 4, 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, **F64_TOL)
    grad_out = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, **F64_TOL)


def test_samples_outside_contribute_zero():
    x = torch.ones(1, 1, 4, 4)
    far = torch.tensor([[0, -20.0, -20.0, -10.0, -10.0]])
    assert roi_align(x, far, 2, 1.0, 2).abs().max() == 0
    near = torch.tensor([[0, -0.9, -0.9, 0.0, 0.0]])  # samples within one pixel: clamped to 0
    torch.testing.assert_close(roi_align(x, near, 1, 1.0, 1, aligned=False), torch.ones(1, 1, 1, 1))


def test_empty_rois_tensor_and_list():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), 3, 1.0, 2)
    assert out.shape == (0, 4, 3, 3)
    out_list = roi_align(x, [torch.zeros(0, 4), torch.zeros(0, 4)], 3, 1.0, -1)
    assert out_list.shape == (0, 4, 3, 3)
    out_list.sum().backward()  # the graph still reaches x
    assert x.grad is not None and x.grad.abs().max() == 0


def test_list_form_equals_tensor_form_and_torchvision():
    x = torch.randn(3, 5, 12, 10, dtype=torch.float64)
    per_image = [
        random_rois(n, 1, 12, 10, 1.0, seed=n, dtype=torch.float64)[:, 1:] for n in (4, 0, 7)
    ]
    ours_list = roi_align(x, per_image, 3, 1.0, 2, True)
    ref_list = torchvision.ops.roi_align(x, per_image, 3, 1.0, 2, True)
    ids = torch.cat([torch.full((len(b), 1), float(i)) for i, b in enumerate(per_image)])
    as_tensor = torch.cat([ids.double(), torch.cat(per_image)], dim=1)
    torch.testing.assert_close(ours_list, ref_list, **F64_TOL)
    torch.testing.assert_close(roi_align(x, as_tensor, 3, 1.0, 2, True), ours_list, **F64_TOL)


@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
def test_memory_layouts(layout):
    base = torch.randn(2, 8, 14, 18, dtype=torch.float64)
    if layout == "channels_last":
        x = base.to(memory_format=torch.channels_last)
    else:
        x = torch.randn(2, 16, 14, 36, dtype=torch.float64)[:, ::2, :, ::2]
        assert not x.is_contiguous()
    x.requires_grad_(True)
    rois = random_rois(30, 2, 14, 18, 0.5, seed=3, dtype=torch.float64)
    ours, ref = both(x, rois, 5, 0.5, -1, True)
    torch.testing.assert_close(ours, ref, **F64_TOL)
    grad_out = torch.randn_like(ref)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x, grad_out)[0], torch.autograd.grad(ref, x, grad_out)[0]
    )


@pytest.mark.parametrize("sampling_ratio", [2, -1])
@pytest.mark.parametrize("aligned", [False, True])
def test_gradcheck(sampling_ratio, aligned):
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.1, 3.9], [1, -1.2, 1.1, 2.5, 6.3], [1, 2.2, 0.1, 7.4, 2.0]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(
        lambda t: roi_align(t, rois, (2, 3), 1.0, sampling_ratio, aligned), (x,)
    )


def test_rois_get_no_gradient():
    x = torch.randn(1, 2, 6, 6)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]], requires_grad=True)
    out = roi_align(x, rois, 2, 1.0, 2)
    assert not out.requires_grad  # like torchvision, whose kernel gives boxes no gradient


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(0, 12),
    out_h=st.integers(1, 5),
    out_w=st.integers(1, 5),
    sampling_ratio=st.integers(-1, 3),
    aligned=st.booleans(),
    scale=st.sampled_from([1.0, 0.5, 0.25, 1 / 3]),
)
def test_hypothesis_parity(seed, k, out_h, out_w, sampling_ratio, aligned, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    rois = random_rois(k, 2, 7, 9, scale, seed=seed, dtype=torch.float64)
    # snap some coordinates to integers and half-integers to hit the border/tie branches
    rois[:, 1:] = torch.where(rois[:, 1:] > 3, (rois[:, 1:] * 2).round() / 2, rois[:, 1:])
    ours, ref = both(x, rois, (out_h, out_w), scale, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, **F64_TOL)


def test_module_repr_and_state():
    ours, ref = RoIAlign(7, 0.25, 2), torchvision.ops.RoIAlign(7, 0.25, 2)
    assert repr(ours) == repr(ref)
    assert repr(RoIAlign((7, 5), 1 / 16, -1, aligned=True)) == repr(
        torchvision.ops.RoIAlign((7, 5), 1 / 16, -1, aligned=True)
    )
    assert ours.state_dict() == {} == ref.state_dict()
    x = torch.randn(1, 3, 10, 10)
    rois = [torch.tensor([[1.0, 2.0, 30.0, 25.0]])]
    torch.testing.assert_close(ours(x, rois), ref(x, rois), **F32_TOL)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(3, 8, 8), torch.zeros(1, 5)), "input must be a"),
        ((torch.randint(0, 5, (1, 1, 8, 8)), torch.zeros(1, 5)), "floating-point"),
        ((torch.randn(1, 1, 8, 8), torch.zeros(2, 4)), r"\[K, 5\]"),
        ((torch.randn(1, 1, 8, 8), [torch.zeros(2, 5)]), r"boxes\[0\]"),
        ((torch.randn(1, 1, 8, 8), torch.zeros(1, 5, dtype=torch.float64)), "dtype"),
        ((torch.randn(1, 1, 8, 8), torch.tensor([[1.0, 0, 0, 2, 2]])), "batch indices"),
        ((torch.randn(1, 1, 8, 8), torch.tensor([[0.5, 0, 0, 2, 2]])), "batch indices"),
    ],
)
def test_bad_input_errors(args, match):
    with pytest.raises(ValueError, match=match):
        roi_align(*args, output_size=2)


def test_bad_output_size():
    with pytest.raises(ValueError, match="output_size"):
        roi_align(torch.randn(1, 1, 4, 4), torch.zeros(1, 5), (2, 2, 2))
