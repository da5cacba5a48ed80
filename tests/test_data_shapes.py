"""ShapesDataset: determinism, splits, target format and the generation rules."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rcnn_lab.data import SPLIT_SIZES, ShapesDataset, eval_transforms
from rcnn_lab.data.raster import COS, SIN, SUPERSAMPLE, TRIG_GRID, coverage
from rcnn_lab.data.scene import (
    CLASSES,
    MAX_SIZE_FRACTION,
    MIN_VISIBLE_FRACTION,
    Shape,
    _extent_box,
    render_scene,
)
from tests.conftest import ROOT

SIDE = 160


@pytest.fixture(scope="module")
def scenes():
    """The first 300 training scenes of seed 0 (shared by the statistics tests)."""
    ds = ShapesDataset("train", size=300)
    return [ds.scene(i) for i in range(len(ds))]


def _fingerprint(image: torch.Tensor, target: dict) -> str:
    digest = hashlib.sha256(image.numpy().tobytes())
    digest.update(target["boxes"].numpy().tobytes())
    digest.update(target["labels"].numpy().tobytes())
    return digest.hexdigest()[:16]


def test_same_seed_and_index_give_identical_tensors():
    a, b = ShapesDataset("train", size=20, seed=3), ShapesDataset("train", size=20, seed=3)
    for i in (0, 7, 19):
        (image_a, target_a), (image_b, target_b) = a[i], b[i]
        assert torch.equal(image_a, image_b)
        for key in ("boxes", "labels", "area", "iscrowd"):
            assert torch.equal(target_a[key], target_b[key])


def test_images_are_bit_identical_to_the_recorded_ones():
    # the promise "same index, same image on any machine": these digests were recorded once;
    # a change means the generator (or numpy's PCG64 stream) changed, and every user's data too
    ds = ShapesDataset("train", size=2)
    assert [_fingerprint(*ds[i]) for i in range(2)] == ["0a543511629c869f", "05e70d6424f82733"]


def test_trig_table_is_far_from_rounding_boundaries():
    # libm's cos/sin may differ by an ulp between machines; the snapped table must not
    for d in range(360):
        for value in (math.cos(math.radians(d)), math.sin(math.radians(d))):
            scaled = value * TRIG_GRID
            assert abs(scaled - math.floor(scaled) - 0.5) > 1e-6
    assert COS[0] == 1.0 and SIN[90] == 1.0 and COS[90] == 0.0


def test_a_smaller_dataset_is_a_prefix_of_a_larger_one():
    image_small, _ = ShapesDataset("val", size=4)[3]
    image_large, _ = ShapesDataset("val", size=400)[3]
    assert torch.equal(image_small, image_large)


def test_splits_and_seeds_give_different_images():
    train, val, test = (ShapesDataset(s, size=2)[0][0] for s in ("train", "val", "test"))
    assert not torch.equal(train, val) and not torch.equal(val, test)
    assert not torch.equal(train, ShapesDataset("train", size=2, seed=1)[0][0])


def test_split_sizes_are_fixed():
    assert SPLIT_SIZES == {"train": 10_000, "val": 1_000, "test": 1_000}
    assert [len(ShapesDataset(s)) for s in ("train", "val", "test")] == [10_000, 1_000, 1_000]
    assert len(ShapesDataset("train", size=25)) == 25


def test_target_format():
    ds = ShapesDataset("train", size=40)
    assert ds.CLASSES[0] == "__background__" and len(ds.CLASSES) == ds.num_classes == 7
    assert len(set(ds.CLASSES)) == 7
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, SIDE, SIDE) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        boxes, labels = target["boxes"], target["labels"]
        n = labels.shape[0]
        assert boxes.dtype == torch.float32 and boxes.shape == (n, 4)
        assert labels.dtype == torch.int64 and ((labels >= 1) & (labels <= 6)).all()
        assert target["area"].dtype == torch.float32 and target["area"].shape == (n,)
        assert target["iscrowd"].dtype == torch.int64 and not target["iscrowd"].any()
        assert target["image_id"] == i and isinstance(target["image_id"], int)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, 2:] <= SIDE).all()
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert (target["area"] > 0).all() and (target["area"] <= box_area).all()


def test_non_square_images():
    ds = ShapesDataset("test", size=6, image_size=(96, 200))
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 96, 200)
        assert (target["boxes"][:, 2] <= 200).all() and (target["boxes"][:, 3] <= 96).all()


def test_some_images_are_empty_and_counts_span_zero_to_eight(scenes):
    counts = np.bincount([len(s.labels) for s in scenes], minlength=9)
    assert len(counts) == 9  # never more than 8 objects
    assert 0.05 < counts[0] / len(scenes) < 0.2  # about one image in nine is empty
    assert (counts > 0).all()


def test_class_balance_is_roughly_even(scenes):
    counts = np.bincount(np.concatenate([s.labels for s in scenes]), minlength=7)[1:]
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_occlusion_rule_and_visible_boxes(scenes):
    visible = np.concatenate([s.visible_fractions for s in scenes])
    assert visible.min() >= MIN_VISIBLE_FRACTION and (visible < 1).mean() > 0.1  # some occluded
    for s in scenes:
        # the visible box lies inside the full one, and equals it for an unoccluded object
        assert (s.boxes[:, :2] >= s.full_boxes[:, :2]).all()
        assert (s.boxes[:, 2:] <= s.full_boxes[:, 2:]).all()
        whole = s.visible_fractions == 1
        assert np.array_equal(s.boxes[whole], s.full_boxes[whole])


def test_object_sizes_span_the_rule(scenes):
    boxes = np.concatenate([s.full_boxes for s in scenes])
    longest = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / SIDE
    # a rotated triangle or diamond can have a box a little under its nominal size
    assert longest.min() >= 0.05 and longest.max() <= MAX_SIZE_FRACTION * math.sqrt(2)
    assert (longest < 0.15).any() and (longest > 0.45).any()
    assert {s.background for s in scenes} == {"noise", "gradient", "stripes", "checker"}


def test_a_square_rasterises_exactly():
    # half-size 2 at (5, 5): samples at k + 0.25 and k + 0.75 inside [3, 7] are set
    square = Shape(CLASSES.index("square"), (((-2.0, -2.0), (2.0, -2.0), (2.0, 2.0), (-2.0, 2.0)),))
    window, mask = square.mask(5.0, 5.0, 10, 10)
    assert (window.x0, window.y0, window.x1, window.y1) == (3, 3, 7, 7)
    assert mask.shape == (4 * SUPERSAMPLE, 4 * SUPERSAMPLE) and mask.all()
    assert _extent_box(window, mask) == [3.0, 3.0, 7.0, 7.0]
    half = square.scaled(0.5 * 1.25)  # half-size 1.25: covers [3.75, 6.25]
    window, mask = half.mask(5.0, 5.0, 10, 10)
    assert _extent_box(window, mask) == [3.5, 3.5, 6.5, 6.5]
    cov = coverage(mask)
    assert cov[0, 0] == 0.25 and cov[1, 1] == 1.0  # a corner pixel is a quarter covered


def test_cache_returns_equal_independent_copies():
    ds = ShapesDataset("val", size=3, cache=True)
    image, target = ds[1]
    image.zero_()
    target["boxes"].zero_()
    again, target_again = ds[1]
    fresh, target_fresh = ShapesDataset("val", size=3)[1]
    assert torch.equal(again, fresh) and torch.equal(target_again["boxes"], target_fresh["boxes"])


def test_eval_transforms_change_nothing():
    image, target = ShapesDataset("val", size=2)[0]
    image_t, target_t = ShapesDataset("val", size=2, transforms=eval_transforms())[0]
    assert type(image_t) is torch.Tensor and torch.equal(image, image_t)
    assert torch.equal(target["boxes"], target_t["boxes"])
    assert type(target_t["boxes"]) is torch.Tensor


def test_indexing_and_argument_errors():
    ds = ShapesDataset("val", size=3)
    assert torch.equal(ds[-1][0], ds[2][0])
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    with pytest.raises(ValueError, match="split must be one of"):
        ShapesDataset("training")
    with pytest.raises(ValueError, match="seed"):
        ShapesDataset(seed=-1)
    with pytest.raises(ValueError, match="size"):
        ShapesDataset(size=-2)
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(image_size=32)


def _scene_digest(count: int) -> str:
    digest = hashlib.sha256()
    for i in range(count):
        digest.update(render_scene(np.random.default_rng([0, 0, i]), SIDE, SIDE).image.tobytes())
    return digest.hexdigest()


# the child imports the generator's modules (numpy only) without rcnn_lab's torch-heavy __init__
_CHILD = """
import sys, types
for name in ("rcnn_lab", "rcnn_lab.data"):
    module = types.ModuleType(name)
    module.__path__ = [sys.argv[1] + "/" + name.replace(".", "/")]
    sys.modules[name] = module
import hashlib
import numpy as np
from rcnn_lab.data.scene import render_scene
digest = hashlib.sha256()
for i in range(int(sys.argv[2])):
    digest.update(render_scene(np.random.default_rng([0, 0, i]), 160, 160).image.tobytes())
print(digest.hexdigest())
"""


def test_images_do_not_depend_on_numpy_simd_kernels():
    # numpy picks SSE/AVX2/AVX-512 loops at run time; the generator must not notice
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as umath
    dispatched = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
    if not dispatched:
        pytest.skip("this CPU has no SIMD level above numpy's baseline")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(dispatched)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), "12"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == _scene_digest(12)
