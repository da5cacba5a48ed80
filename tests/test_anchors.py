"""AnchorGenerator: hand-checked cell anchors, exact parity with torchvision, caches, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TvImageList

import rcnn_lab
from rcnn_lab.anchors import _MAX_CACHED_GRIDS, AnchorGenerator
from rcnn_lab.image_list import ImageList

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5
FPN_STRIDES = (4, 8, 16, 32, 64)


def _features(batch: int, grids, dtype=torch.float32, device=None) -> list[torch.Tensor]:
    return [torch.zeros(batch, 2, h, w, dtype=dtype, device=device) for h, w in grids]


def _run_both(sizes, ratios, image_hw, grids, batch=2, dtype=torch.float32):
    """Anchors of rcnn_lab and torchvision for one configuration (fresh generators)."""
    tensors = torch.zeros(batch, 3, *image_hw)
    image_sizes = [tuple(image_hw)] * batch
    feats = _features(batch, grids, dtype)
    ours = AnchorGenerator(sizes, ratios)(ImageList(tensors, image_sizes), feats)
    theirs = TvAnchorGenerator(sizes, ratios)(TvImageList(tensors, image_sizes), feats)
    return ours, theirs


def _assert_identical(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.device == b.device and a.shape == b.shape
        assert torch.equal(a, b)


# ---------------------------------------------------------------- hand-checkable cases


def test_three_cell_anchors_of_size_32_by_hand():
    # r = h / w: r = 0.5 gives w = 32 * sqrt(2) = 45.25, h = 22.63 -> halves 22.6, 11.3 -> 23, 11
    cell = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),)).cell_anchors[0]
    expected = torch.tensor([[-23.0, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    torch.testing.assert_close(cell, expected, rtol=0, atol=0)


def test_paper_nine_cell_anchors_by_hand():
    # k = 9 (Ren et al. 2015): ratio-major order, sizes 128, 256, 512 inside each ratio
    cell = AnchorGenerator().cell_anchors[0]
    expected = torch.tensor(
        [
            [-91.0, -45, 91, 45],
            [-181, -91, 181, 91],
            [-362, -181, 362, 181],
            [-64, -64, 64, 64],
            [-128, -128, 128, 128],
            [-256, -256, 256, 256],
            [-45, -91, 45, 91],
            [-91, -181, 91, 181],
            [-181, -362, 181, 362],
        ]
    )
    torch.testing.assert_close(cell, expected, rtol=0, atol=0)
    areas = (cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1])
    sizes = torch.tensor([128.0, 256, 512]).repeat(3)
    assert torch.all((areas.sqrt() / sizes - 1).abs() < 0.01)  # area ~ size^2 despite rounding


def test_small_grid_by_hand():
    # image 8x12, grid 2x3 -> stride (4, 4); one anchor [-2, -2, 2, 2] per location
    gen = AnchorGenerator(((4,),), ((1.0,),))
    (anchors,) = gen(ImageList(torch.zeros(1, 3, 8, 12), [(8, 12)]), [torch.zeros(1, 1, 2, 3)])
    corners = torch.tensor([[-2.0, -2, 2, 2]])
    shifts = torch.tensor([[x, y, x, y] for y in (0, 4) for x in (0, 4, 8)], dtype=torch.float32)
    torch.testing.assert_close(anchors, shifts + corners, rtol=0, atol=0)


def test_round_half_to_even_like_torchvision():
    # size 3 and 5 at ratio 1 give half sizes 1.5 and 2.5: both round to 2
    cell = AnchorGenerator(((3, 5),), ((1.0,),)).cell_anchors[0]
    torch.testing.assert_close(cell[:, 2], torch.tensor([2.0, 2.0]), rtol=0, atol=0)


# ---------------------------------------------------------------- parity with torchvision


def test_fpn_800x1066_parity_and_counts():
    grids = [(math.ceil(800 / s), math.ceil(1066 / s)) for s in FPN_STRIDES]
    ours, theirs = _run_both(FPN_SIZES, FPN_RATIOS, (800, 1088), grids, batch=3)
    _assert_identical(ours, theirs)
    assert ours[0].shape[0] == sum(3 * h * w for h, w in grids)
    assert ours[0].data_ptr() != ours[1].data_ptr()  # every image owns its tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_parity_per_dtype(dtype):
    grids = [(25, 34), (13, 17), (7, 9)]
    sizes = ((32, 40), (64,), (128, 256, 300))
    ours, theirs = _run_both(sizes, (0.5, 1.0, 2.0), (100, 136), grids, batch=2, dtype=dtype)
    _assert_identical(ours, theirs)
    assert ours[0].dtype == dtype


@pytest.mark.parametrize(
    "sizes, ratios",
    [
        ((32, 64, 128), (0.5, 1.0, 2.0)),  # flat sizes: one per level; flat ratios shared
        (((16, 24, 33),), ((0.25, 1.0, 4.0, 1.7),)),  # one level, uneven counts
        (((7,), (9,)), ((1.0,), (0.3, 3.3))),  # per-level ratios differ
        (((1,),), ((1.0,),)),  # tiny anchors collapse to a point after rounding
    ],
)
def test_parity_constructor_forms(sizes, ratios):
    gen, tv = AnchorGenerator(sizes, ratios), TvAnchorGenerator(sizes, ratios)
    assert gen.num_anchors_per_location() == tv.num_anchors_per_location()
    assert gen.sizes == tv.sizes and gen.aspect_ratios == tv.aspect_ratios
    for ours, theirs in zip(gen.cell_anchors, tv.cell_anchors, strict=True):
        assert torch.equal(ours, theirs)
    grids = [(5 + level, 7 - level) for level in range(len(gen.cell_anchors))]
    _assert_identical(*_run_both(sizes, ratios, (41, 57), grids, batch=1))


@pytest.mark.parametrize(
    "image_hw, grids",
    [
        ((1, 1), [(1, 1)]),  # 1x1 image and grid
        ((5, 3), [(9, 9)]),  # grid bigger than the image: stride 0, as torchvision computes it
        ((97, 31), [(97, 31)]),  # stride 1
        ((640, 17), [(3, 17)]),  # very non-square
    ],
)
def test_parity_adversarial_grids(image_hw, grids):
    _assert_identical(*_run_both(((8, 16),), ((0.5, 2.0),), image_hw, grids, batch=2))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_parity_random_configurations(data):
    levels = data.draw(st.integers(1, 5), label="levels")
    sizes = tuple(
        tuple(data.draw(st.lists(st.integers(1, 600), min_size=1, max_size=3)))
        for _ in range(levels)
    )
    ratio = st.floats(0.1, 10.0, allow_nan=False, allow_infinity=False)
    ratios = tuple(tuple(data.draw(st.lists(ratio, min_size=1, max_size=4))) for _ in range(levels))
    image_hw = (data.draw(st.integers(1, 300)), data.draw(st.integers(1, 300)))
    grids = [(data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))) for _ in range(levels)]
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    batch = data.draw(st.integers(1, 4))
    _assert_identical(*_run_both(sizes, ratios, image_hw, grids, batch=batch, dtype=dtype))


def test_generate_and_grid_anchors_parity():
    gen, tv = AnchorGenerator(), TvAnchorGenerator()
    for dtype in (torch.float32, torch.float64):
        ours = gen.generate_anchors([20, 50.5], [0.3, 1.0, 3.0], dtype=dtype)
        assert torch.equal(ours, tv.generate_anchors([20, 50.5], [0.3, 1.0, 3.0], dtype=dtype))
    strides = [[torch.tensor(7), torch.tensor(5)]]  # torchvision passes 0-dim int64 tensors
    (ours,) = gen.grid_anchors([[4, 6]], strides)
    (theirs,) = tv.grid_anchors([[4, 6]], strides)
    assert torch.equal(ours, theirs)


def test_state_dict_matches_torchvision_and_loads_both_ways():
    gen, tv = AnchorGenerator(FPN_SIZES, FPN_RATIOS), TvAnchorGenerator(FPN_SIZES, FPN_RATIOS)
    assert list(gen.state_dict().keys()) == list(tv.state_dict().keys()) == []
    gen.load_state_dict(tv.state_dict(), strict=True)
    tv.load_state_dict(gen.state_dict(), strict=True)
    assert list(gen.parameters()) == [] and list(gen.buffers()) == []
    assert rcnn_lab.AnchorGenerator is AnchorGenerator


# ---------------------------------------------------------------- caches


def test_cache_gives_fresh_results_across_dtype_and_size():
    gen = AnchorGenerator(FPN_SIZES[:3], FPN_RATIOS[:3])
    tv = TvAnchorGenerator(FPN_SIZES[:3], FPN_RATIOS[:3])
    calls = [
        ((64, 96), [(16, 24), (8, 12), (4, 6)], torch.float32),
        ((64, 96), [(16, 24), (8, 12), (4, 6)], torch.float64),
        ((70, 50), [(18, 13), (9, 7), (5, 4)], torch.float32),
        ((64, 96), [(16, 24), (8, 12), (4, 6)], torch.float32),  # back to the first: from cache
        ((64, 96), [(8, 12), (4, 6), (2, 3)], torch.float32),  # same grids, other strides
    ]
    for image_hw, grids, dtype in calls:
        images = ImageList(torch.zeros(2, 3, *image_hw), [image_hw] * 2)
        ours = gen(images, _features(2, grids, dtype))
        theirs = tv(TvImageList(images.tensors, images.image_sizes), _features(2, grids, dtype))
        _assert_identical(ours, theirs)


def test_returned_anchors_can_be_modified_without_poisoning_the_cache():
    gen = AnchorGenerator(((16,),), ((1.0, 2.0),))
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32)] * 2)
    first = gen(images, _features(2, [(4, 4)]))
    reference = first[0].clone()
    first[0].add_(1000.0)
    first[1].zero_()
    again = gen(images, _features(2, [(4, 4)]))
    assert torch.equal(again[0], reference) and torch.equal(again[1], reference)


def test_replacing_cell_anchors_invalidates_the_cache():
    gen = AnchorGenerator(((16,),), ((1.0,),))
    tv = TvAnchorGenerator(((16,),), ((1.0,),))
    images = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)])
    gen(images, _features(1, [(4, 4)]))
    gen.cell_anchors = [gen.generate_anchors((8, 24), (0.5,))]
    tv.cell_anchors = [tv.generate_anchors((8, 24), (0.5,))]
    (ours,) = gen(images, _features(1, [(4, 4)]))
    (theirs,) = tv(TvImageList(images.tensors, images.image_sizes), _features(1, [(4, 4)]))
    assert torch.equal(ours, theirs) and ours.shape == (32, 4)
    gen.set_cell_anchors(torch.float64, torch.device("cpu"))  # torchvision's in-place cast
    assert gen.cell_anchors[0].dtype == torch.float64
    assert torch.equal(gen(images, _features(1, [(4, 4)]))[0], ours)


def test_grid_cache_is_bounded():
    gen = AnchorGenerator(((8,),), ((1.0,),))
    for side in range(1, _MAX_CACHED_GRIDS + 10):
        gen(ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)]), _features(1, [(side, 2)]))
    assert len(gen._grid_cache) == _MAX_CACHED_GRIDS


def test_device_and_dtype_follow_the_feature_maps():
    gen = AnchorGenerator(FPN_SIZES[:2], FPN_RATIOS[:2])
    images = ImageList(torch.zeros(1, 3, 16, 16), [(16, 16)])
    (cpu64,) = gen(images, _features(1, [(4, 4), (2, 2)], torch.float64))
    (meta,) = gen(images, _features(1, [(4, 4), (2, 2)], torch.float16, device="meta"))
    assert cpu64.dtype == torch.float64 and meta.device.type == "meta"
    assert meta.dtype == torch.float16 and meta.shape == cpu64.shape == (60, 4)


# ---------------------------------------------------------------- bad input


def test_constructor_rejects_mismatched_levels():
    with pytest.raises(ValueError, match=r"2 levels of sizes and 3 levels of aspect_ratios"):
        AnchorGenerator(((32,), (64,)), ((1.0,), (1.0,), (2.0,)))
    with pytest.raises(ValueError, match="sizes"):
        AnchorGenerator((), ((1.0,),))
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(((32,),), ())


def test_forward_rejects_wrong_number_of_feature_maps():
    gen = AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    with pytest.raises(ValueError, match=r"5 levels\), got 3 feature maps"):
        gen(images, _features(1, [(16, 16), (8, 8), (4, 4)]))
    with pytest.raises(ValueError, match="3 grid sizes, 3 strides, 5 levels"):
        gen.grid_anchors([[2, 2]] * 3, [[1, 1]] * 3)


def test_forward_rejects_empty_feature_grid():
    gen = AnchorGenerator(((8,),), ((1.0,),))
    with pytest.raises(ValueError, match=r"feature_maps\[0\].*\(1, 1, 0, 4\)"):
        gen(ImageList(torch.zeros(1, 3, 8, 8), [(8, 8)]), [torch.zeros(1, 1, 0, 4)])


# ---------------------------------------------------------------- chapter helpers


def test_viz_level_anchors_and_explorer_build():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rcnn_lab.viz.anchors import anchor_explorer, cell_slice, level_anchors, plot_level

    anchors, grid = level_anchors((40, 60), (16,), (0.5, 1.0, 2.0), 8)
    assert grid == (5, 7) and anchors.shape == (5 * 7 * 3, 4)
    centre = anchors[cell_slice(grid, 2, 3, 3)]  # cell (2, 3): shift (24, 16)
    torch.testing.assert_close(
        (centre[:, :2] + centre[:, 2:]) / 2, torch.tensor([[24.0, 16.0]] * 3)
    )
    image = torch.rand(3, 40, 60)
    ax = plot_level(image, (16,), (1.0,), 8, row_frac=1.0, col_frac=1.0)
    assert "cell (4, 6)" in ax.get_title()  # a fraction of 1.0 picks the last cell
    assert anchor_explorer(image) is not None
    plt.close("all")
