"""batched_nms_per_image against torchvision's batched_nms called image by image."""

import pytest
import torch
import torchvision.ops as tv
from hypothesis import given, settings
from hypothesis import strategies as st

import rcnn_lab.ops.boxes as boxes_module
import rcnn_lab.ops.nms_per_image as module
from rcnn_lab.ops import batched_nms_per_image, clip_boxes_to_image, clip_boxes_to_images
from tests.test_boxes import _clustered, _uniform, box_sets, thresholds

PATHS = ("blocked", "dense", "dense-gathered", "dense-short")


def _path(patch: pytest.MonkeyPatch, path: str) -> None:
    """Run the accelerator's paths on the CPU by emptying the set of blocked devices.

    "dense": the band of every candidate; "dense-gathered": the valid boxes gathered first;
    "dense-short": two rounds per check and two checks, band rows one at a time (long chains
    fall back to the blocked path after a partial solve).
    """
    if path.startswith("dense"):
        patch.setattr(boxes_module, "_BLOCKED_DEVICES", set())
    if path == "dense-gathered":
        patch.setattr(module, "_BAND_PAIRS_PER_IMAGE", 0)
    if path == "dense-short":
        patch.setattr(boxes_module, "_DENSE_ROUNDS", 2)
        patch.setattr(boxes_module, "_DENSE_CHECKS", 2)
        patch.setattr(module, "_BAND_PAIR_BUDGET", 1)


def _count_blocked_calls(patch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of boxes of every call of the blocked path (the band's fallback)."""
    calls = []
    blocked = module._blocked_keep

    def counting(*args):
        calls.append(args[0].shape[1])
        return blocked(*args)

    patch.setattr(module, "_blocked_keep", counting)
    return calls


def _torchvision(boxes, scores, idxs, valid, threshold, top_n=None):
    """The reference: one torchvision batched_nms per image, on its valid boxes only."""
    result = []
    for b, s, i, v in zip(boxes, scores, idxs, valid, strict=True):
        where = v.nonzero().squeeze(1)
        if where.numel() == 0:
            result.append(where)
            continue
        kept = tv.batched_nms(
            b[where].float() if b.dtype == torch.half else b[where],
            s[where].float() if s.dtype == torch.half else s[where],
            i[where],
            threshold,
        )
        result.append(where[kept][:top_n])
    return result


def _assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == torch.int64
        assert torch.equal(a, b), (a.tolist(), b.tolist())


def _batch(sets, groups, seed, invalid_fraction=0.2):
    """Stack N (boxes, scores) sets of equal size into a batch with groups and a valid mask."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.stack([b for b, _ in sets])
    scores = torch.stack([s for _, s in sets])
    idxs = torch.randint(0, groups, scores.shape, generator=g)
    valid = torch.rand(scores.shape, generator=g) >= invalid_fraction
    return boxes, scores, idxs, valid


@settings(max_examples=60, deadline=None)
@given(
    st.lists(box_sets(max_n=40), min_size=1, max_size=3),
    thresholds,
    st.integers(1, 5),
    st.integers(0, 2**31 - 1),
    st.sampled_from(PATHS),
    st.sampled_from([None, 1, 5]),
)
def test_matches_torchvision_image_by_image(sets, threshold, groups, seed, path, top_n):
    # pad every image to the largest with invalid boxes of arbitrary coordinates and scores
    k = max(len(b) for b, _ in sets)
    dtype = sets[0][0].dtype
    padded = []
    for b, s in sets:
        extra = k - len(b)
        b = torch.cat([b.to(dtype), torch.full((extra, 4), 3.0, dtype=dtype)])
        s = torch.cat([s.to(dtype), torch.full((extra,), 9.0, dtype=dtype)])  # tempting scores
        padded.append((b, s))
    boxes, scores, idxs, valid = _batch(padded, groups, seed)
    for n, (b, _) in enumerate(sets):
        valid[n, len(b) :] = False
    with pytest.MonkeyPatch.context() as patch:
        _path(patch, path)
        ours = batched_nms_per_image(boxes, scores, idxs, valid, threshold, top_n)
    _assert_same(ours, _torchvision(boxes, scores, idxs, valid, threshold, top_n))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("make", [_uniform, _clustered])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_and_large_images_take_torchvision_s_two_routes(path, make, dtype):
    # 1200 valid boxes: 4800 coordinates > 4000, torchvision runs NMS group by group (and sorts
    # the kept boxes with an unstable sort); 600: one NMS on shifted boxes (a stable sort).
    # _clustered's scores have many exact ties, so the two orders differ and must both match.
    sets = [make(1500, seed=s, dtype=dtype) for s in range(3)]
    boxes, scores, idxs, valid = _batch(sets, groups=5, seed=1, invalid_fraction=0.0)
    valid[0, 1200:] = False  # 1200 valid: group by group
    valid[1, 600:] = False  # 600 valid: shifted
    valid[2] = False  # nothing valid
    valid[2, :3] = True
    with pytest.MonkeyPatch.context() as patch:
        _path(patch, path)
        for threshold in (0.3, 0.5, 0.7):
            ours = batched_nms_per_image(boxes, scores, idxs, valid, threshold, top_n=1000)
            _assert_same(ours, _torchvision(boxes, scores, idxs, valid, threshold, 1000))


@pytest.mark.parametrize("path", PATHS)
def test_adversarial_batches(path):
    dup = torch.tensor([[1.0, 1, 4, 4]] * 6)
    nested = torch.tensor(
        [[0.0, 0, 8, 8], [1, 1, 7, 7], [2, 2, 6, 6], [3, 3, 5, 5]] + [[0.0] * 4] * 2
    )
    flat = torch.tensor(
        [[1.0, 1, 1, 5], [1, 1, 1, 5], [0, 0, 0, 0], [0, 0, 2, 2]] + [[0.0] * 4] * 2
    )
    boxes = torch.stack([dup, nested, flat])  # [3, 6, 4]
    ties = torch.ones(3, 6)
    for scores in (ties, torch.linspace(1, 0, 6).expand(3, 6).clone()):
        for idxs in (torch.zeros(3, 6, dtype=torch.int64), torch.arange(6).expand(3, 6) % 2):
            for valid in (torch.ones(3, 6, dtype=torch.bool), torch.rand(3, 6) > 0.3):
                for threshold in (0.0, 0.5, 1.0):
                    with pytest.MonkeyPatch.context() as patch:
                        _path(patch, path)
                        ours = batched_nms_per_image(boxes, scores, idxs, valid, threshold, 4)
                    _assert_same(ours, _torchvision(boxes, scores, idxs, valid, threshold, 4))


@pytest.mark.parametrize("path", PATHS)
def test_empty_batches_and_images(path):
    with pytest.MonkeyPatch.context() as patch:
        _path(patch, path)
        assert (
            batched_nms_per_image(
                torch.zeros(0, 5, 4),
                torch.zeros(0, 5),
                torch.zeros(0, 5, dtype=torch.int64),
                torch.zeros(0, 5, dtype=torch.bool),
                0.5,
            )
            == []
        )
        ours = batched_nms_per_image(
            torch.zeros(2, 0, 4),
            torch.zeros(2, 0),
            torch.zeros(2, 0, dtype=torch.int64),
            torch.zeros(2, 0, dtype=torch.bool),
            0.5,
        )
        assert [o.shape for o in ours] == [(0,), (0,)]
        boxes, scores = _uniform(10, seed=0)
        ours = batched_nms_per_image(
            boxes[None],
            scores[None],
            torch.zeros(1, 10, dtype=torch.int64),
            torch.zeros(1, 10, dtype=torch.bool),
            0.5,
        )
        assert ours[0].numel() == 0 and ours[0].dtype == torch.int64


def test_float16_matches_torchvision_under_autocast():
    sets = [_uniform(300, seed=s, dtype=torch.float16) for s in range(2)]
    boxes, scores, idxs, valid = _batch(sets, groups=3, seed=2)
    ours = batched_nms_per_image(boxes, scores, idxs, valid, 0.5)
    with torch.autocast("cpu", dtype=torch.float16):
        theirs = _torchvision(boxes, scores, idxs, valid, 0.5)
    _assert_same(ours, theirs)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("dense", {"tolist": 2}), ("dense-gathered", {"nonzero": 1, "tolist": 3})],
)
def test_dense_path_reads_the_host_two_or_three_times_for_any_batch(path, expected):
    from benchmarks.timing import OpCounter

    for images in (1, 4):
        sets = [_clustered(500, seed=s) for s in range(images)]
        boxes, scores, idxs, valid = _batch(sets, groups=5, seed=3)
        with pytest.MonkeyPatch.context() as patch:
            _path(patch, path)
            with OpCounter() as counter:
                ours = batched_nms_per_image(boxes, scores, idxs, valid, 0.5, 100)
        assert counter.sync_ops == expected, images  # the flags, the counts (, the gathers)
        _assert_same(ours, _torchvision(boxes, scores, idxs, valid, 0.5, 100))


def test_many_candidates_keep_only_the_valid_ones_with_one_more_read():
    # the RoI heads' case: K x (C - 1) candidates are too many for a band, the valid ones are not
    from benchmarks.timing import OpCounter

    sets = [_clustered(600, seed=s) for s in range(3)]
    boxes, scores, idxs, valid = _batch(sets, groups=4, seed=5, invalid_fraction=0.7)
    most_valid = int(valid.sum(dim=1).max())
    with pytest.MonkeyPatch.context() as patch:
        _path(patch, "dense")
        patch.setattr(module, "_BAND_PAIRS_PER_IMAGE", most_valid * 599)  # only the valid fit
        with OpCounter() as counter:
            ours = batched_nms_per_image(boxes, scores, idxs, valid, 0.5, 50)
    assert counter.sync_ops == {"tolist": 3}  # valid counts, the flags, the kept counts
    _assert_same(ours, _torchvision(boxes, scores, idxs, valid, 0.5, 50))


@pytest.mark.parametrize("path", ["dense", "dense-gathered"])
def test_a_wrong_group_size_hint_costs_speed_not_results(path):
    sets = [_clustered(300, seed=s) for s in range(2)]
    boxes, scores, idxs, valid = _batch(sets, groups=2, seed=4)  # groups of ~150 boxes
    with pytest.MonkeyPatch.context() as patch:
        _path(patch, path)
        calls = _count_blocked_calls(patch)
        ours = batched_nms_per_image(boxes, scores, idxs, valid, 0.5, max_group_size=10)
        assert len(calls) == 1  # the band was too narrow: the blocked path solved it
        right = batched_nms_per_image(boxes, scores, idxs, valid, 0.5, max_group_size=300)
        assert len(calls) == 1  # a right hint: the band solved it
    expected = _torchvision(boxes, scores, idxs, valid, 0.5)
    _assert_same(ours, expected)
    _assert_same(right, expected)


def test_dense_path_hands_long_chains_to_the_blocked_path():
    from tests.test_boxes import _chain

    chain, chain_scores = _chain(60, torch.float32)  # 30 rounds
    boxes, scores = torch.stack([chain, chain + 1]), torch.stack([chain_scores] * 2)
    idxs, valid = torch.zeros(2, 60, dtype=torch.int64), torch.ones(2, 60, dtype=torch.bool)
    with pytest.MonkeyPatch.context() as patch:
        _path(patch, "dense")
        patch.setattr(boxes_module, "_DENSE_CHECKS", 1)  # 16 rounds: too few for this chain
        calls = _count_blocked_calls(patch)
        ours = batched_nms_per_image(boxes, scores, idxs, valid, 0.5)
    assert calls == [120]  # the band, then the gathered band, gave up
    _assert_same(ours, _torchvision(boxes, scores, idxs, valid, 0.5))


def test_bad_inputs_are_named():
    boxes, scores = torch.zeros(2, 3, 4), torch.zeros(2, 3)
    idxs, valid = torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"boxes must be a tensor of shape \[N, K, 4\]"):
        batched_nms_per_image(boxes[0], scores, idxs, valid, 0.5)
    with pytest.raises(ValueError, match="boxes must be a floating-point"):
        batched_nms_per_image(boxes.long(), scores, idxs, valid, 0.5)
    with pytest.raises(ValueError, match=r"scores must be a tensor of shape \[2, 3\]"):
        batched_nms_per_image(boxes, scores[:, :2], idxs, valid, 0.5)
    with pytest.raises(ValueError, match="scores must have the dtype"):
        batched_nms_per_image(boxes, scores.double(), idxs, valid, 0.5)
    with pytest.raises(ValueError, match="idxs must be an integer"):
        batched_nms_per_image(boxes, scores, idxs.float(), valid, 0.5)
    with pytest.raises(ValueError, match="valid must be a bool"):
        batched_nms_per_image(boxes, scores, idxs, valid.long(), 0.5)
    with pytest.raises(TypeError, match="iou_threshold must be a real number"):
        batched_nms_per_image(boxes, scores, idxs, valid, "0.5")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_clip_boxes_to_images_equals_clipping_each_image(dtype):
    g = torch.Generator().manual_seed(0)
    boxes = (torch.rand(3, 7, 5, 4, generator=g, dtype=torch.float64) * 3000 - 500).to(dtype)
    boxes[0, 0, 0] = float("nan")
    sizes = [(480, 640), (2049, 1333), (1, 1)]
    ours = clip_boxes_to_images(boxes, sizes)
    for n, size in enumerate(sizes):
        expected = clip_boxes_to_image(boxes[n], size)
        assert torch.allclose(ours[n], expected, equal_nan=True, atol=0, rtol=0)
        assert torch.equal(ours[n].isnan(), expected.isnan())
    with pytest.raises(ValueError, match="one \\(height, width\\) per image"):
        clip_boxes_to_images(boxes, sizes[:2])


@pytest.mark.parametrize("path", PATHS)
def test_groups_the_shift_fails_to_separate_suppress_each_other_as_in_torchvision(path):
    # torchvision shifts group 1 by max + 1 = 11: B = (-9, -9, 1, 1) becomes (2, 2, 12, 12) and
    # overlaps A (IoU 64/136), so its one NMS suppresses B although the groups differ; with a
    # negative threshold even IoU 0 suppresses, across every group
    a, b, c = [0.0, 0, 10, 10], [-9.0, -9, 1, 1], [30.0, 30, 40, 40]
    boxes = torch.tensor([[a, b, c], [a, c, b]])
    scores = torch.tensor([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    idxs = torch.tensor([[0, 1, 1], [0, 0, 1]])
    valid = torch.ones(2, 3, dtype=torch.bool)
    for threshold in (0.3, 0.6, 0.0, -0.5):
        with pytest.MonkeyPatch.context() as patch:
            _path(patch, path)
            ours = batched_nms_per_image(boxes, scores, idxs, valid, threshold)
        expected = _torchvision(boxes, scores, idxs, valid, threshold)
        _assert_same(ours, expected)
    assert expected[0].tolist() == [0]  # at -0.5 only the best box of each image survives
