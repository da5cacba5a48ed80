"""Parity of rcnn_lab.ops.roi_align / RoIAlign with torchvision.ops (forward and backward)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from rcnn_lab.ops import RoIAlign, roi_align, sample_grid

# the module (rcnn_lab.ops.roi_align is the function: the package re-exports it under that name)
roi_align_module = importlib.import_module("rcnn_lab.ops.roi_align")
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


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"output_size": 2.0}, TypeError, "output_size must be an int or a pair of ints"),
        ({"output_size": None}, TypeError, "output_size must be an int or a pair of ints"),
        ({"output_size": (2, 2.5)}, TypeError, "output_size must be an int or a pair of ints"),
        ({"output_size": -1}, ValueError, "output_size must be >= 0"),
        ({"output_size": (3, -2)}, ValueError, "output_size must be >= 0"),
        ({"sampling_ratio": 2.0}, TypeError, "sampling_ratio must be an int"),
        ({"sampling_ratio": None}, TypeError, "sampling_ratio must be an int"),
        ({"spatial_scale": None}, TypeError, "spatial_scale must be a real number"),
        ({"spatial_scale": "0.5"}, TypeError, "spatial_scale must be a real number"),
        ({"spatial_scale": float("nan")}, ValueError, "spatial_scale must be finite"),
        ({"spatial_scale": float("inf")}, ValueError, "spatial_scale must be finite"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, error, match):
    arguments = {"output_size": 2, "spatial_scale": 1.0, "sampling_ratio": 2} | kwargs
    with pytest.raises(error, match=match):
        roi_align(torch.randn(1, 2, 8, 8), torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]]), **arguments)


@pytest.mark.parametrize("sampling_ratio", [2, -1, 0])
@pytest.mark.parametrize(
    "roi",
    [
        [0, float("nan"), 1.0, 6.0, 6.0],
        [0, 1.0, 1.0, float("inf"), 6.0],
        [0, 1.0, float("-inf"), 6.0, 6.0],
    ],
)
def test_non_finite_rois_raise(roi, sampling_ratio):
    # torchvision crashes or returns zeros here; an embedding_bag index error or silent zeros
    # came out of the plain-PyTorch gather
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0], roi])
    with pytest.raises(ValueError, match=r"boxes must have finite coordinates .* rows \[1\]"):
        roi_align(x, rois, 2, 1.0, sampling_ratio)


def test_arguments_torchvision_accepts_are_accepted():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]], dtype=torch.float64)
    ref = torchvision.ops.roi_align(x, rois, 2, 0.5, 2)
    for output_size, scale, ratio in (
        ([2, 2], torch.tensor(0.5), torch.tensor(2)),  # one-element tensors, a list
        (torch.Size([2, 2]), 0.5, 2),
    ):
        torch.testing.assert_close(roi_align(x, rois, output_size, scale, ratio), ref, **F64_TOL)
    empty = roi_align(x, rois, (0, 3), 1.0, -1)  # zero bins, as torchvision: an empty output
    assert empty.shape == torchvision.ops.roi_align(x, rois, (0, 3), 1.0, -1).shape == (1, 2, 0, 3)


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_zero_channels_give_an_empty_result_like_torchvision(sampling_ratio):
    x = torch.randn(2, 0, 8, 8, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0], [1, 0.0, 2.0, 5.0, 7.0]])
    ours = roi_align(x, rois, (2, 3), 1.0, sampling_ratio)
    ref = torchvision.ops.roi_align(x, rois, (2, 3), 1.0, sampling_ratio)
    assert ours.shape == ref.shape == (2, 0, 2, 3) and ours.dtype == ref.dtype
    ours.sum().backward()  # still part of the graph, as torchvision's
    assert x.grad is not None and x.grad.shape == x.shape


# --------------------------------------------------------------------------- float16, autocast


def _half_case(seed: int = 0):
    """float64 features and RoIs that are exact in float16 (integer ids and coordinates)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 6, 20, 24, generator=g, dtype=torch.float64)
    corners = torch.randint(-8, 200, (40, 4), generator=g).double()
    ids = torch.randint(0, 2, (40, 1), generator=g).double()
    xy1, xy2 = corners[:, :2].minimum(corners[:, 2:]), corners[:, :2].maximum(corners[:, 2:])
    return x, torch.cat([ids, xy1, xy2], 1)


def _one_ulp(dtype: torch.dtype) -> dict:
    """Tolerances of one rounding step of ``dtype``: float32 sums rounded once to it may differ
    by one step when the float32 values differ in their last bits."""
    eps = torch.finfo(dtype).eps
    return {"rtol": eps, "atol": eps * 1e-3}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_half_roi_align_is_torchvisions_autocast_result(dtype, sampling_ratio):
    # float16/bfloat16 are computed in float32 and cast back, as torchvision's autocast does;
    # (torchvision's own bfloat16 CPU kernel does not exist, its float16 one sums in float16)
    x, rois = _half_case()
    x, rois = x.to(dtype), rois.to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        ref = torchvision.ops.roi_align(x, rois, 5, 1 / 8, sampling_ratio)
        under_autocast = roi_align(x, rois, 5, 1 / 8, sampling_ratio)
    plain = roi_align(x, rois, 5, 1 / 8, sampling_ratio)
    assert ref.dtype == under_autocast.dtype == plain.dtype == dtype
    torch.testing.assert_close(plain, under_autocast, rtol=0, atol=0)
    torch.testing.assert_close(plain, ref, **_one_ulp(dtype))


@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
def test_autocast_casts_like_torchvision(autocast_dtype):
    x, rois = _half_case(seed=1)
    cases = [  # (input dtype, boxes dtype)
        (torch.float32, torch.float32),
        (torch.float32, torch.float16),  # mixed: both go to float32 under autocast
        (torch.float16, torch.float32),
        (torch.float64, torch.float64),  # float64 is left alone
    ]
    for x_dtype, rois_dtype in cases:
        xi, ri = x.to(x_dtype).requires_grad_(), rois.to(rois_dtype)
        with torch.autocast("cpu", dtype=autocast_dtype):
            ref = torchvision.ops.roi_align(xi, ri, 3, 1 / 8, 2)
            ours = roi_align(xi, ri, 3, 1 / 8, 2)
        assert ours.dtype == ref.dtype == x_dtype
        tol = F64_TOL if x_dtype == torch.float64 else _one_ulp(x_dtype) | F32_TOL
        torch.testing.assert_close(ours, ref, **tol)
        grad_out = torch.randn_like(ref)
        (g_ours,) = torch.autograd.grad(ours, xi, grad_out)
        (g_ref,) = torch.autograd.grad(ref, xi, grad_out)
        assert g_ours.dtype == g_ref.dtype == x_dtype
    with torch.autocast("cpu", dtype=autocast_dtype), pytest.raises(ValueError, match="dtype"):
        roi_align(x, rois.float(), 3, 1 / 8, 2)  # float64 input, float32 boxes: as torchvision
    with pytest.raises(ValueError, match="dtype"):  # mixed dtypes without autocast
        roi_align(x.float(), rois.half(), 3, 1 / 8, 2)


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.detach().double() - reference.detach()).norm() / reference.detach().norm())


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_float16_gradient_accumulates_in_float32(sampling_ratio):
    # 1000 overlapping RoIs on a 16 x 16 map: every pixel's gradient sums ~10^4 terms. The RoIs
    # are exact in float16 and their sides multiples of 7, so every sample position is exact and
    # the error is the summation's alone.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 16, 16, generator=g).half()
    corner = torch.randint(0, 4, (1000, 2), generator=g).double()
    side = 7 * torch.randint(1, 3, (1000, 1), generator=g).double()
    rois = torch.cat([torch.zeros(1000, 1, dtype=torch.float64), corner, corner + side], 1)
    grad_out = torch.randn(1000, 8, 7, 7, generator=g).half()
    x64 = x.double().requires_grad_()
    ref = torchvision.ops.roi_align(x64, rois, 7, 1.0, sampling_ratio)
    (g_ref,) = torch.autograd.grad(ref, x64, grad_out.double())
    errors = {}
    for name, fn in (("ours", roi_align), ("torchvision", torchvision.ops.roi_align)):
        x16 = x.clone().requires_grad_()
        out = fn(x16, rois.half(), 7, 1.0, sampling_ratio)
        (grad,) = torch.autograd.grad(out, x16, grad_out)
        assert out.dtype == grad.dtype == torch.float16
        errors[name] = (_relative_error(out, ref), _relative_error(grad, g_ref))
    # float32 sums rounded once to float16 (unit roundoff 2**-11 = 4.9e-4): the result's error is
    # its final rounding's; torchvision's float16 kernel rounds at every step of the sums
    assert errors["ours"][0] <= 5e-4 and errors["ours"][1] <= 5e-4
    assert errors["ours"][0] <= errors["torchvision"][0]
    assert errors["ours"][1] <= errors["torchvision"][1] / 4


# --------------------------------------------------------------------------- huge RoIs, memory


def test_huge_roi_is_gathered_in_bounded_chunks(monkeypatch):
    # one 1500 x 1500 px RoI with adaptive sampling: 215 x 215 samples per bin, 2.3 Mi samples;
    # a single gather of all of them held ~90 bytes per sample (9 GB for a 10k x 10k RoI)
    x = torch.randn(1, 2, 10, 12, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, -3.0, -2.0, 1497.0, 1498.0]], dtype=torch.float64)
    bag = 215 * 215  # samples per bin: ceil(1500 / 7) squared
    sizes, embedding_bag = [], roi_align_module.F.embedding_bag

    def recording_embedding_bag(rows, *args, **kwargs):
        sizes.append(rows.numel())
        return embedding_bag(rows, *args, **kwargs)

    monkeypatch.setattr(roi_align_module.F, "embedding_bag", recording_embedding_bag)
    ours = roi_align(x, rois, 7, 1.0, -1)
    assert len(sizes) > 1 and max(sizes) <= 4 * (roi_align_module.SAMPLE_BUDGET + bag)
    monkeypatch.undo()
    ref = torchvision.ops.roi_align(x, rois, 7, 1.0, -1)
    torch.testing.assert_close(ours, ref, **F64_TOL)
    grad_out = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)  # through the chunked backward
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, **F64_TOL)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(0, 8),
    sampling_ratio=st.integers(-1, 3),
    budget=st.integers(1, 300),
    aligned=st.booleans(),
)
def test_chunked_gather_matches_torchvision(seed, k, sampling_ratio, budget, aligned):
    # tiny chunk budgets: chunks inside one RoI, one bin per chunk, RoIs split across chunks
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(k, 2, 7, 9, 0.5, seed=seed, dtype=torch.float64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(roi_align_module, "SAMPLE_BUDGET", budget)
        ours = roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    ref = torchvision.ops.roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, **F64_TOL)
    grad_out = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, **F64_TOL)


def _bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """The reference kernels' bilinear read of [D, H, W] at (y, x), written out by hand."""
    height, width = feature.shape[-2:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return feature.new_zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * feature[:, y0, x0]
        + (1 - ly) * lx * feature[:, y0, x1]
        + ly * (1 - lx) * feature[:, y1, x0]
        + ly * lx * feature[:, y1, x1]
    )


@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_sample_grid_is_where_roi_align_samples(sampling_ratio, aligned):
    """The points rcnn_lab.ops.sample_grid lists (chapter 6 draws them), averaged per bin with a
    hand-written bilinear read, give roi_align's output: the figure shows what the op computes."""
    g = torch.Generator().manual_seed(11)
    feature = torch.rand(1, 2, 9, 11, dtype=torch.float64, generator=g)
    out = (2, 3)
    for _ in range(6):
        x1, y1 = (torch.rand(2, generator=g) * 30 - 4).tolist()
        w, h = (torch.rand(2, generator=g) * 24).tolist()
        box = (x1, y1, x1 + w, y1 + h)
        grid = sample_grid(box, out, 0.5, sampling_ratio, aligned)
        gh, gw = len(grid.ys) // out[0], len(grid.xs) // out[1]
        expected = roi_align(
            feature, [torch.tensor([box], dtype=torch.float64)], out, 0.5, sampling_ratio, aligned
        )[0]
        for i in range(out[0]):
            for j in range(out[1]):
                ys = grid.ys[i * gh : (i + 1) * gh].tolist()
                xs = grid.xs[j * gw : (j + 1) * gw].tolist()
                samples = [_bilinear(feature[0], y, x) for y in ys for x in xs]
                value = torch.stack(samples).mean(0) if samples else feature.new_zeros(2)
                torch.testing.assert_close(value, expected[:, i, j], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- chunks and slices


def _tiny_budgets(patch: pytest.MonkeyPatch, samples: int | None, work: int | None) -> None:
    """Force many chunks (``samples`` per chunk) and/or many channel slices (``work``)."""
    if samples is not None:
        patch.setattr(roi_align_module, "SAMPLE_BUDGET", samples)
        patch.setattr(roi_align_module, "GRAD_SAMPLE_BUDGET", samples)
    if work is not None:
        patch.setattr(roi_align_module, "WORK_BUDGET", work)


def _slicing_case(dtype, requires_grad=False):
    """80 channels (tiny budgets slice them 32 + 32 + 16) and 25 RoIs on two 11 x 13 maps."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 80, 11, 13, generator=g, dtype=dtype, requires_grad=requires_grad)
    rois = random_rois(25, 2, 11, 13, 0.5, seed=5, dtype=dtype)
    grad_out = torch.randn(25, 80, 3, 4, generator=g, dtype=dtype)
    return x, rois, grad_out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
@pytest.mark.parametrize(("samples", "work"), [(37, 1), (None, 1), (37, None)])
def test_chunked_and_sliced_forward_equals_one_pass_bit_for_bit(
    dtype, sampling_ratio, samples, work
):
    # 37 samples per chunk: RoIs, and with the adaptive ratio single RoIs, split across chunks;
    # WORK_BUDGET 1: slices of MIN_CHANNELS channels and blocks of one bag. Each bag is still
    # summed in the same order and each channel in the same vector lane: bit for bit.
    x, rois, _ = _slicing_case(dtype)
    whole = roi_align(x, rois, (3, 4), 0.5, sampling_ratio)
    with pytest.MonkeyPatch.context() as patch:
        _tiny_budgets(patch, samples, work)
        chunked = roi_align(x, rois, (3, 4), 0.5, sampling_ratio)
    assert torch.equal(chunked, whole)
    ref = torchvision.ops.roi_align(x, rois, (3, 4), 0.5, sampling_ratio)
    torch.testing.assert_close(whole, ref, **(F64_TOL if dtype == torch.float64 else F32_TOL))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_sliced_backward_is_bit_for_bit_and_chunked_backward_close(dtype, sampling_ratio):
    x, rois, grad_out = _slicing_case(dtype, requires_grad=True)

    def gradient():
        return torch.autograd.grad(roi_align(x, rois, (3, 4), 0.5, sampling_ratio), x, grad_out)[0]

    whole = gradient()
    with pytest.MonkeyPatch.context() as patch:
        _tiny_budgets(patch, None, 1)  # channel slices only: the same sums, bit for bit
        sliced = gradient()
    with pytest.MonkeyPatch.context() as patch:
        _tiny_budgets(patch, 37, 1)  # chunks too: each chunk's sums are added in turn
        chunked = gradient()
    assert torch.equal(sliced, whole)
    tol = F64_TOL if dtype == torch.float64 else GRAD_F32_TOL
    torch.testing.assert_close(chunked, whole, **tol)
    ref = torch.autograd.grad(
        torchvision.ops.roi_align(x, rois, (3, 4), 0.5, sampling_ratio), x, grad_out
    )[0]
    torch.testing.assert_close(whole, ref, **tol)


def test_temporaries_are_bounded_by_the_budgets(monkeypatch):
    # 96 channels, 40 RoIs of 7 x 7 bins: with WORK_BUDGET = 4096 the forward makes the table
    # in slices of MIN_CHANNELS (32) channels and pools blocks of at most 1024 results; the
    # backward's table gradients are GRAD_MIN_CHANNELS (16) wide, in 2 chunks of 4096 samples.
    # The results still equal torchvision's.
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 96, 16, 20, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(40, 1, 16, 20, 0.25, seed=9, dtype=torch.float64)
    calls, embedding_bag = [], roi_align_module.F.embedding_bag

    def recording_embedding_bag(rows, table, *args, **kwargs):
        result = embedding_bag(rows, table, *args, **kwargs)
        calls.append((tuple(table.shape), tuple(result.shape)))
        return result

    monkeypatch.setattr(roi_align_module.F, "embedding_bag", recording_embedding_bag)
    monkeypatch.setattr(roi_align_module, "WORK_BUDGET", 4096)
    ours = roi_align(x, rois, 7, 0.25, 2)
    forward = list(calls)
    grad_out = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)
    backward = calls[len(forward) :]
    monkeypatch.undo()
    assert {table for table, _ in forward} == {(320, 32)}  # [N*H*W, dc]
    assert max(out[0] * out[1] for _, out in forward) <= 1024 and len(forward) > 3
    assert {out for _, out in backward} == {(320, 16)} and len(backward) == 2 * 6
    ref = torchvision.ops.roi_align(x, rois, 7, 0.25, 2)
    torch.testing.assert_close(ours, ref, **F64_TOL)
    torch.testing.assert_close(g_ours, torch.autograd.grad(ref, x, grad_out)[0], **F64_TOL)


def test_backward_saves_only_the_rois():
    # the bags are rebuilt in the backward: nothing of size K * ph * pw * samples is kept
    # between the forward and the backward (embedding_bag's own backward would keep them all)
    saved = []

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    rois = random_rois(20, 2, 9, 9, 1.0, seed=2, dtype=torch.float32)
    for sampling_ratio in (2, -1):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = roi_align(x, rois, 3, 1.0, sampling_ratio)
        assert saved == [(20, 5)]
        out.sum().backward()


@pytest.mark.parametrize("minimum", [16, 32])
@pytest.mark.parametrize("channels", [1, 31, 32, 80, 256, 300])
@pytest.mark.parametrize("per_channel", [1, 1000, 10**6, 10**8])
def test_channel_slices_cover_every_channel_in_multiples_of_the_minimum(
    channels, per_channel, minimum
):
    slices = roi_align_module._channel_slices(channels, per_channel, minimum)
    assert slices[0][0] == 0 and slices[-1][1] == channels
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    widths = [c1 - c0 for c0, c1 in slices]
    assert all(w % minimum == 0 for w in widths[:-1])
    fits = max(widths) * per_channel <= roi_align_module.WORK_BUDGET
    assert fits or max(widths) == min(channels, minimum)
