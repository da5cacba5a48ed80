"""rcnn_lab.ops box toolkit: hand-checked cases and bit-exact parity with torchvision.ops."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tv
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rcnn_lab.ops as ops
from rcnn_lab.ops import boxes as boxes_module

FORMATS = ("xyxy", "xywh", "cxcywh")
DTYPES = (torch.float32, torch.float64)
THRESHOLDS = (0.0, 0.1, 1 / 3, 0.5, 0.7, 0.9, 1.0)


def _uniform(n: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """n random boxes in a 1000 x 1000 image (sides 10..100) and random scores."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 1000
    wh = 10 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 90
    return torch.cat([xy, xy + wh], 1).to(dtype), torch.rand(n, generator=g).to(dtype)


def _clustered(n: int, seed: int, dtype=torch.float32, clusters: int = 20):
    """n jittered copies of a few boxes (a detector's overlapping guesses) with tied scores."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(clusters, 2, generator=g, dtype=torch.float64) * 900
    size = 30 + torch.rand(clusters, 2, generator=g, dtype=torch.float64) * 70
    which = torch.randint(0, clusters, (n,), generator=g)
    base = torch.cat([corner, corner + size], 1)[which]  # [n, 4]
    noisy = base + 0.1 * size[which].repeat(1, 2) * torch.randn(n, 4, generator=g).double()
    boxes = torch.cat([noisy[:, :2].minimum(noisy[:, 2:]), noisy[:, :2].maximum(noisy[:, 2:])], 1)
    scores = torch.randint(0, 50, (n,), generator=g) / 50  # many exact ties
    return boxes.to(dtype), scores.to(dtype)


@st.composite
def box_sets(draw, max_n: int = 60):
    """Boxes on a coarse grid (duplicates, nesting, zero areas, IoU exactly 1/3, 1/2) or random."""
    n = draw(st.integers(0, max_n))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if draw(st.booleans()):  # coarse grid: many exact coincidences
        corners = torch.randint(0, 5, (n, 4), generator=g).double()
    else:
        corners = torch.rand(n, 4, generator=g, dtype=torch.float64) * 20 - 5
    boxes = torch.cat(
        [corners[:, :2].minimum(corners[:, 2:]), corners[:, :2].maximum(corners[:, 2:])], 1
    )
    scores = torch.randint(0, draw(st.integers(1, 4)), (n,), generator=g).double()  # ties
    return boxes.to(dtype), scores.to(dtype)


thresholds = st.one_of(st.sampled_from(THRESHOLDS), st.floats(0.0, 1.0))


# --------------------------------------------------------------------------- hand-checked cases


def test_area_iou_and_convert_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 3.0, 4.0]])
    assert ops.box_area(boxes).tolist() == [6.0, 6.0]
    # overlap [1, 2] x [1, 3] = 2, union 6 + 6 - 2 = 10
    assert ops.box_iou(boxes, boxes)[0, 1].item() == pytest.approx(0.2)
    assert ops.box_convert(boxes, "xyxy", "xywh")[1].tolist() == [1.0, 1.0, 2.0, 3.0]
    assert ops.box_convert(boxes, "xyxy", "cxcywh")[0].tolist() == [1.0, 1.5, 2.0, 3.0]
    assert ops.box_area(torch.tensor([[5.0, 5.0, 2.0, 3.0]]), fmt="cxcywh").item() == 6.0


def test_clip_and_remove_small_by_hand():
    boxes = torch.tensor([[-5.0, 2.0, 30.0, 50.0], [1.0, 1.0, 1.5, 9.0]])
    assert ops.clip_boxes_to_image(boxes, (40, 20))[0].tolist() == [0.0, 2.0, 20.0, 40.0]
    assert ops.remove_small_boxes(boxes, 1.0).tolist() == [0]  # box 1 is 0.5 wide
    assert ops.remove_small_boxes(boxes, 0.5).tolist() == [0, 1]  # >= keeps the boundary


def test_nms_by_hand():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0.5, 0, 10.5, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 wins; boxes 0 and 1 overlap it by IoU 0.90 and 0.74; box 2 is far away
    assert ops.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert ops.nms(boxes, scores, 0.8).tolist() == [3, 1, 2]


def test_nms_score_ties_keep_input_order():
    boxes = torch.tensor([[0.0, 0, 1, 1]] * 3 + [[5.0, 5, 6, 6]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 3] == tv.nms(boxes, scores, 0.5).tolist()


def test_nms_iou_exactly_at_threshold_is_kept():
    boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1]])  # IoU exactly 0.5
    scores = torch.tensor([1.0, 0.5])
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 1]  # suppression needs IoU > threshold
    assert ops.nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_compares_float32_iou_with_a_double_threshold():
    # float32(1/3) = 0.33333334 > 1/3 in float64: torchvision suppresses; float32 compare would not
    boxes = torch.tensor([[0.0, 0, 2, 1], [1, 0, 3, 1]])
    scores = torch.tensor([1.0, 0.5])
    iou = ops.box_iou(boxes, boxes)[0, 1]
    assert not bool(iou > 1 / 3) and iou.item() > 1 / 3  # the trap the kernel avoids
    assert ops.nms(boxes, scores, 1 / 3).tolist() == [0] == tv.nms(boxes, scores, 1 / 3).tolist()


def test_batched_nms_by_hand():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [0, 2]
    assert ops.batched_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.5).tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- parity: geometry


@settings(max_examples=40, deadline=None)
@given(box_sets(), st.sampled_from(FORMATS), st.sampled_from(FORMATS))
def test_box_convert_matches_torchvision_and_round_trips(data, in_fmt, out_fmt):
    boxes, _ = data
    ours = ops.box_convert(boxes, in_fmt, out_fmt)
    assert torch.equal(ours, tv.box_convert(boxes, in_fmt, out_fmt))
    back = ops.box_convert(ours, out_fmt, in_fmt)
    torch.testing.assert_close(
        back, boxes, atol=1e-5 if boxes.dtype == torch.float32 else 1e-12, rtol=0
    )


@settings(max_examples=40, deadline=None)
@given(box_sets(), box_sets(), st.sampled_from(FORMATS))
def test_box_area_and_iou_match_torchvision(data1, data2, fmt):
    boxes1, boxes2 = data1[0], data2[0].to(data1[0].dtype)
    assert torch.equal(ops.box_area(boxes1, fmt), tv.box_area(boxes1, fmt))
    ours, theirs = ops.box_iou(boxes1, boxes2, fmt), tv.box_iou(boxes1, boxes2, fmt)
    assert ours.shape == theirs.shape == (len(boxes1), len(boxes2))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


def test_box_iou_batched_and_integer_boxes_match_torchvision():
    boxes = torch.randint(0, 10, (2, 3, 5, 4)).sort(dim=-1).values  # [2, 3, 5, 4] batch of sets
    boxes = torch.cat([boxes[..., :2], boxes[..., 2:]], -1)
    for b in (boxes, boxes.double(), boxes.half()):
        torch.testing.assert_close(
            ops.box_iou(b, b), tv.box_iou(b, b), rtol=0, atol=0, equal_nan=True
        )
        assert torch.equal(ops.box_area(b), tv.box_area(b))


@settings(max_examples=30, deadline=None)
@given(box_sets(), st.integers(1, 20), st.integers(1, 20), st.floats(0.0, 3.0))
def test_clip_and_remove_small_match_torchvision(data, height, width, min_size):
    boxes, _ = data
    assert torch.equal(
        ops.clip_boxes_to_image(boxes, (height, width)),
        tv.clip_boxes_to_image(boxes, (height, width)),
    )
    assert torch.equal(
        ops.remove_small_boxes(boxes, min_size), tv.remove_small_boxes(boxes, min_size)
    )
    batched = boxes.reshape(1, -1, 4)
    assert torch.equal(
        ops.clip_boxes_to_image(batched, (height, width)),
        tv.clip_boxes_to_image(batched, (height, width)),
    )


# --------------------------------------------------------------------------- parity: NMS


@settings(max_examples=60, deadline=None)
@given(box_sets(), thresholds)
def test_nms_matches_torchvision(data, threshold):
    boxes, scores = data
    assert torch.equal(ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))


@settings(max_examples=40, deadline=None)
@given(box_sets(max_n=80), thresholds, st.integers(1, 6))
def test_batched_nms_matches_torchvision(data, threshold, num_classes):
    boxes, scores = data
    idxs = torch.arange(len(boxes)) % num_classes
    ours = ops.batched_nms(boxes, scores, idxs, threshold)
    assert torch.equal(ours, tv.batched_nms(boxes, scores, idxs, threshold))


@settings(max_examples=40, deadline=None)
@given(box_sets(max_n=80), thresholds, st.integers(1, 6))
def test_per_class_path_matches_torchvision_per_class_path(data, threshold, num_classes):
    # torchvision takes this path only above 1000 boxes on CPU; call both paths directly so that
    # small adversarial inputs (zero areas, duplicates, ties) exercise rcnn_lab's label masking
    from torchvision.ops.boxes import _batched_nms_vanilla

    boxes, scores = data
    idxs = torch.arange(len(boxes)) % num_classes
    assume(len(boxes) > 0)  # batched_nms answers empty input before choosing a path
    ours = boxes_module._per_class_nms(boxes, scores, idxs, threshold)
    assert torch.equal(ours, _batched_nms_vanilla(boxes, scores, idxs, threshold))


@settings(max_examples=50, deadline=None)
@given(box_sets(max_n=80), thresholds, st.integers(1, 6), st.integers(1, 9))
def test_tiny_blocks_match_torchvision(data, threshold, num_classes, block):
    # blocks of 1..9 boxes: many blocks, blocks straddling classes, winners crossing blocks
    from torchvision.ops.boxes import _batched_nms_vanilla

    boxes, scores = data
    assume(len(boxes) > 0)
    idxs = (torch.arange(len(boxes)) * 7) % num_classes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(boxes_module, "_NMS_BLOCK", block)
        patch.setattr(boxes_module, "_ONE_BLOCK_REACH", block)  # no merging into one big block
        patch.setattr(boxes_module, "_GATHER_BELOW", 0)  # survivors always moved in place
        assert torch.equal(ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))
        ours = boxes_module._per_class_nms(boxes, scores, idxs, threshold)
        assert torch.equal(ours, _batched_nms_vanilla(boxes, scores, idxs, threshold))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [_uniform, _clustered])
@pytest.mark.parametrize("n", [0, 1, 2, 300, 5000])
def test_nms_matches_torchvision_sizes(make, n, dtype):
    boxes, scores = make(n, seed=n, dtype=dtype)
    for threshold in (0.3, 0.5, 0.7):
        ours = ops.nms(boxes, scores, threshold)
        assert ours.dtype == torch.int64 and ours.device == boxes.device
        assert torch.equal(ours, tv.nms(boxes, scores, threshold))


def test_nms_adversarial_sets():
    dup = torch.tensor([[1.0, 1, 4, 4]] * 7)
    nested = torch.tensor(
        [[0.0, 0, 8, 8], [1, 1, 7, 7], [2, 2, 6, 6], [3, 3, 5, 5], [3.5, 3.5, 4.5, 4.5]]
    )
    flat = torch.tensor(
        [[1.0, 1, 1, 5], [1, 1, 1, 5], [0, 0, 0, 0], [0, 0, 2, 2]]
    )  # zero areas: 0/0
    # a chain where each box overlaps only its neighbours: the fixed point needs many rounds
    x = torch.arange(400, dtype=torch.float64)
    chain = torch.stack([x, torch.zeros_like(x), x + 1.6, torch.ones_like(x)], 1)
    for boxes in (dup, nested, flat, chain):
        for dtype in DTYPES:
            b = boxes.to(dtype)
            for scores in (
                torch.ones(len(b), dtype=dtype),
                torch.linspace(1, 0, len(b), dtype=dtype),
            ):
                for threshold in THRESHOLDS:
                    assert torch.equal(ops.nms(b, scores, threshold), tv.nms(b, scores, threshold))


def test_nms_chunked_pairs_give_the_same_answer(monkeypatch):
    boxes, scores = _clustered(700, seed=3)
    expected = tv.nms(boxes, scores, 0.5)
    monkeypatch.setattr(boxes_module, "_PAIR_BUDGET", 50)  # force many tiny column chunks
    monkeypatch.setattr(boxes_module, "_NMS_BLOCK", 16)
    monkeypatch.setattr(boxes_module, "_ONE_BLOCK_REACH", 16)
    assert torch.equal(ops.nms(boxes, scores, 0.5), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n", [500, 1000, 1001, 5000]
)  # both sides of torchvision's 4000-number switch
def test_batched_nms_many_classes_matches_torchvision(n, dtype):
    for make in (_uniform, _clustered):
        boxes, scores = make(n, seed=n, dtype=dtype)
        boxes = boxes - 300  # negative coordinates: the offset trick lets classes meet; so must we
        idxs = torch.randint(0, 80, (n,), generator=torch.Generator().manual_seed(n))
        for threshold in (0.3, 0.7):
            expected = tv.batched_nms(boxes, scores, idxs, threshold)
            assert torch.equal(ops.batched_nms(boxes, scores, idxs, threshold), expected)


# --------------------------------------------------------------------------- worst cases


def _chain(n: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """n boxes sliding right by 2 px (side 10): IoU 8/12 with the next, 6/14 with the one after."""
    x = torch.arange(n, dtype=torch.float64) * 2
    boxes = torch.stack([x, torch.zeros_like(x), x + 10, torch.full_like(x, 10.0)], 1)
    return boxes.to(dtype), torch.linspace(1, 0, n, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_chain_nms_work_is_bounded(monkeypatch, dtype):
    # every decision depends on the previous one: the fixed point would need a round per box,
    # and comparing each block's winners with all boxes below would be O(N * K) pairs
    boxes, scores = _chain(20_000, dtype)
    expected = tv.nms(boxes, scores, 0.5)
    assert len(expected) == 10_000  # every other box
    pairs, rounds = [], []
    pair_iou, mv = boxes_module._pair_iou, torch.mv

    def counting_pair_iou(a, b):
        pairs.append(a.shape[1] * b.shape[1])
        return pair_iou(a, b)

    def counting_mv(*args, **kwargs):
        rounds.append(1)
        return mv(*args, **kwargs)

    monkeypatch.setattr(boxes_module, "_pair_iou", counting_pair_iou)
    monkeypatch.setattr(torch, "mv", counting_mv)
    assert torch.equal(ops.nms(boxes, scores, 0.5), expected)
    block, blocks = boxes_module._NMS_BLOCK, -(-len(boxes) // boxes_module._NMS_BLOCK)
    # each block: its own B x B matrix, then the few boxes near its winners (or one chunk of
    # pairs at most): O(N * B) pairs. Comparing winners with every box below was 100 Mi pairs.
    assert sum(pairs) <= 4 * len(boxes) * block
    # each block: a bounded number of mat-vec rounds (one per box, 20 000 in all, before)
    assert len(rounds) <= blocks * (boxes_module._FIXED_POINT_ROUNDS + 1)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
def test_chains_and_grids_match_torchvision(threshold):
    # long chains (suppression depth up to a whole block), overlapping in 1 or 2 dimensions
    for boxes, scores in (_chain(1500, torch.float32), _chain(1500, torch.float64)):
        assert torch.equal(ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))
        shuffled = scores[torch.randperm(len(scores), generator=torch.Generator().manual_seed(0))]
        assert torch.equal(ops.nms(boxes, shuffled, threshold), tv.nms(boxes, shuffled, threshold))
    xy = torch.cartesian_prod(torch.arange(40.0), torch.arange(40.0)) * 3  # [1600, 2] grid
    grid = torch.cat([xy, xy + 5], 1)  # squares of side 5 every 3 px: 2-D chains
    for scores in (torch.linspace(1, 0, len(grid)), torch.rand(len(grid))):
        assert torch.equal(ops.nms(grid, scores, threshold), tv.nms(grid, scores, threshold))


@settings(max_examples=40, deadline=None)
@given(box_sets(max_n=80), thresholds, st.integers(1, 4), st.integers(0, 2))
def test_sequential_scan_matches_torchvision(data, threshold, num_classes, rounds):
    # with 0-2 fixed-point rounds most blocks are finished by the host-side sequential scan
    from torchvision.ops.boxes import _batched_nms_vanilla

    boxes, scores = data
    assume(len(boxes) > 0)
    idxs = torch.arange(len(boxes)) % num_classes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(boxes_module, "_FIXED_POINT_ROUNDS", rounds)
        assert torch.equal(ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))
        ours = boxes_module._per_class_nms(boxes, scores, idxs, threshold)
        assert torch.equal(ours, _batched_nms_vanilla(boxes, scores, idxs, threshold))


# --------------------------------------------------------------------------- the accelerator path
# The dense path (every pair at once, decisions in rounds, one flag read back per 8 rounds) runs
# on accelerators; these tests run it on the CPU by emptying the set of blocked-path devices.


def _dense(patch: pytest.MonkeyPatch, **settings_) -> None:
    patch.setattr(boxes_module, "_BLOCKED_DEVICES", set())
    for name, value in settings_.items():
        patch.setattr(boxes_module, name, value)


@settings(max_examples=60, deadline=None)
@given(box_sets(max_n=80), thresholds, st.integers(1, 6), st.integers(1, 3))
def test_dense_path_matches_torchvision(data, threshold, num_classes, rounds):
    # 1-3 rounds per check and at most 2 checks: chains of ties and nesting also reach the
    # fallback (the blocked path) after a partial dense solve
    from torchvision.ops.boxes import _batched_nms_vanilla

    boxes, scores = data
    idxs = (torch.arange(len(boxes)) * 5) % num_classes
    with pytest.MonkeyPatch.context() as patch:
        _dense(patch, _DENSE_ROUNDS=rounds, _DENSE_CHECKS=2, _DENSE_PAIR_BUDGET=97)
        assert torch.equal(ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))
        ours = ops.batched_nms(boxes, scores, idxs, threshold)
        assert torch.equal(ours, tv.batched_nms(boxes, scores, idxs, threshold))
        if len(boxes):
            ours = boxes_module._per_class_nms(boxes, scores, idxs, threshold)
            assert torch.equal(ours, _batched_nms_vanilla(boxes, scores, idxs, threshold))


@pytest.mark.parametrize("make", [_uniform, _clustered])
@pytest.mark.parametrize("n", [0, 1, 2, 300, 1000])
def test_dense_path_matches_torchvision_sizes(make, n):
    with pytest.MonkeyPatch.context() as patch:
        _dense(patch)
        for dtype in DTYPES:
            boxes, scores = make(n, seed=n, dtype=dtype)
            for threshold in (0.3, 0.5, 0.7):
                assert torch.equal(
                    ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold)
                )


def test_dense_path_adversarial_sets():
    dup = torch.tensor([[1.0, 1, 4, 4]] * 7)
    nested = torch.tensor(
        [[0.0, 0, 8, 8], [1, 1, 7, 7], [2, 2, 6, 6], [3, 3, 5, 5], [3.5, 3.5, 4.5, 4.5]]
    )
    flat = torch.tensor([[1.0, 1, 1, 5], [1, 1, 1, 5], [0, 0, 0, 0], [0, 0, 2, 2]])  # 0/0 IoUs
    chain, _ = _chain(300, torch.float64)  # 150 rounds: longer than the dense checks allow
    for boxes in (dup, nested, flat, chain):
        for dtype in DTYPES:
            b = boxes.to(dtype)
            for scores in (
                torch.ones(len(b), dtype=dtype),
                torch.linspace(1, 0, len(b), dtype=dtype),
            ):
                for threshold in THRESHOLDS:
                    with pytest.MonkeyPatch.context() as patch:
                        _dense(patch)
                        ours = ops.nms(b, scores, threshold)
                    assert torch.equal(ours, tv.nms(b, scores, threshold))


def test_dense_path_reads_the_host_twice():
    from benchmarks.timing import OpCounter

    boxes, scores = _clustered(1000, seed=5)
    idxs = torch.arange(1000) % 7
    with pytest.MonkeyPatch.context() as patch:
        _dense(patch)
        with OpCounter() as counter:
            keep = ops.nms(boxes, scores, 0.5)
            per_class = boxes_module._per_class_nms(boxes, scores, idxs, 0.5)
    assert counter.sync_ops == {"_local_scalar_dense": 2, "nonzero": 2}  # per call: flag, keep
    assert torch.equal(keep, tv.nms(boxes, scores, 0.5))
    from torchvision.ops.boxes import _batched_nms_vanilla

    assert torch.equal(per_class, _batched_nms_vanilla(boxes, scores, idxs, 0.5))


def test_dense_path_hands_long_chains_and_large_inputs_to_the_blocked_path():
    boxes, scores = _chain(300, torch.float32)
    calls = []
    greedy_keep = boxes_module._greedy_keep

    def counting_greedy_keep(*args):
        calls.append(args[0].shape[1])
        return greedy_keep(*args)

    with pytest.MonkeyPatch.context() as patch:
        _dense(patch, _greedy_keep=counting_greedy_keep)
        assert torch.equal(ops.nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5))  # chain
        short, short_scores = boxes[:20], scores[:20]  # 10 rounds: dense
        assert torch.equal(ops.nms(short, short_scores, 0.5), tv.nms(short, short_scores, 0.5))
        patch.setattr(boxes_module, "_DENSE_MAX_BOXES", 10)  # too large for the dense matrices
        assert torch.equal(ops.nms(short, short_scores, 0.5), tv.nms(short, short_scores, 0.5))
    assert calls == [300, 20]


# --------------------------------------------------------------------------- float16, autocast


def test_nms_float16_keeps_one_of_two_identical_large_boxes():
    # 300 x 300 = 90000 overflows float16 (max 65504): the union would be inf and the IoU 0
    boxes = torch.tensor([[0.0, 0.0, 300.0, 300.0]] * 2).half()
    scores = torch.tensor([1.0, 0.5]).half()
    with torch.autocast("cpu", dtype=torch.float16):  # torchvision has no CPU float16 kernel
        expected = tv.nms(boxes, scores, 0.5)
    assert expected.tolist() == [0]
    assert torch.equal(ops.nms(boxes, scores, 0.5), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_nms_matches_torchvision_under_autocast(dtype):
    # float16/bfloat16 are compared in float32: torchvision's result under autocast, exactly
    g = torch.Generator().manual_seed(3)
    boxes, scores = _clustered(3000, seed=3, dtype=torch.float64)
    boxes, scores = (boxes * 3).to(dtype), torch.rand(3000, generator=g).to(dtype)
    idxs = torch.randint(0, 5, (3000,), generator=g)
    small = slice(0, 900)  # batched_nms's coordinate-offset path (<= 4000 numbers)
    for threshold in (0.3, 0.5, 0.7):
        with torch.autocast("cpu", dtype=dtype):
            expected = [
                tv.nms(boxes, scores, threshold),
                tv.batched_nms(boxes, scores, idxs, threshold),
                tv.batched_nms(boxes[small], scores[small], idxs[small], threshold),
            ]
            under_autocast = [
                ops.nms(boxes, scores, threshold),
                ops.batched_nms(boxes, scores, idxs, threshold),
                ops.batched_nms(boxes[small], scores[small], idxs[small], threshold),
            ]
        plain = [
            ops.nms(boxes, scores, threshold),
            ops.batched_nms(boxes, scores, idxs, threshold),
            ops.batched_nms(boxes[small], scores[small], idxs[small], threshold),
        ]
        for theirs, ours, ours_plain in zip(expected, under_autocast, plain):
            assert torch.equal(ours, theirs) and torch.equal(ours_plain, theirs)


def test_nms_mixed_dtypes_only_under_autocast():
    boxes, scores = _uniform(200, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # both are cast to float32 first
        expected = tv.nms(boxes.half(), scores, 0.5)
        assert torch.equal(ops.nms(boxes.half(), scores, 0.5), expected)
        with pytest.raises(ValueError, match="scores .*float32"):  # float64 is not cast
            ops.nms(boxes.double(), scores, 0.5)
    with pytest.raises(ValueError, match="scores .*float32"):
        ops.nms(boxes.half(), scores, 0.5)


def test_float64_under_autocast_stays_float64():
    boxes, scores = _clustered(500, seed=2, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.float16):
        expected = tv.nms(boxes, scores, 1 / 3)
        assert torch.equal(ops.nms(boxes, scores, 1 / 3), expected)
    assert torch.equal(expected, tv.nms(boxes, scores, 1 / 3))


# --------------------------------------------------------------------------- empty and bad input


def test_empty_inputs():
    for dtype in DTYPES:
        boxes, scores = torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype)
        for keep in (
            ops.nms(boxes, scores, 0.5),
            ops.batched_nms(boxes, scores, torch.zeros(0), 0.5),
        ):
            assert keep.shape == (0,) and keep.dtype == torch.int64
        assert ops.box_iou(boxes, torch.ones(3, 4, dtype=dtype)).shape == (0, 3)
        assert ops.remove_small_boxes(boxes, 1.0).dtype == torch.int64


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5), r"boxes .*\(3, 5\)"),
        (lambda: ops.nms(torch.zeros(4), torch.zeros(1), 0.5), r"boxes .*\(4,\)"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(2), 0.5), r"scores .*\(2,\)"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3, 1), 0.5), r"scores .*\(3, 1\)"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3).double(), 0.5), r"scores .*float64"),
        (
            lambda: ops.nms(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), 0.5),
            r"boxes .*int64",
        ),
        (
            lambda: ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5),
            r"idxs .*\(2,\)",
        ),
        (lambda: ops.box_iou(torch.zeros(3, 3), torch.zeros(2, 4)), r"boxes1 .*\(3, 3\)"),
        (lambda: ops.box_iou(torch.zeros(4), torch.zeros(2, 4)), r"boxes1 and boxes2"),
        (lambda: ops.box_area(torch.zeros(2, 4), fmt="xyxyxyxy"), r"fmt .*xyxyxyxy"),
        (lambda: ops.box_convert(torch.zeros(2, 4), "xyxy", "yxyx"), r"out_fmt .*yxyx"),
        (lambda: ops.box_convert(torch.zeros(2, 5), "xyxy", "xywh"), r"boxes .*\(2, 5\)"),
        (lambda: ops.clip_boxes_to_image(torch.zeros(2, 4), (3, 4, 5)), r"size"),
        (lambda: ops.remove_small_boxes(torch.zeros(2, 2), 1.0), r"boxes .*\(2, 2\)"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("threshold", [None, "0.5", [0.5]])
def test_bad_iou_threshold_raises_type_error_naming_it(threshold):
    boxes, scores = _uniform(5, seed=0)
    for call in (
        lambda: ops.nms(boxes, scores, threshold),
        lambda: ops.batched_nms(boxes, scores, torch.zeros(5, dtype=torch.int64), threshold),
    ):
        with pytest.raises(TypeError, match="iou_threshold must be a real number"):
            call()


def test_iou_threshold_may_be_a_tensor_or_an_int_as_in_torchvision():
    boxes, scores = _clustered(100, seed=4)
    for threshold in (torch.tensor(0.5), torch.tensor(0.5, dtype=torch.float64), 1, 0):
        assert torch.equal(ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))


# --------------------------------------------------------------------------- the float32 threshold


def _float32_below_with_tensors(value: float) -> float:
    """The reference: round in torch, step down with torch.nextafter when it rounded up."""
    exact = torch.tensor(value, dtype=torch.float64)
    t = exact.to(torch.float32)
    if t.double() > exact:
        t = torch.nextafter(t, torch.tensor(float("-inf")))
    return t.item()


def test_float32_threshold_in_plain_python_matches_torch():
    # the plain-Python version exists for torch.compile (no tensor branch to break on); it must
    # give the same float32, sign of zero included, on edge values and on random ones
    import math
    import random

    edges = [0.0, 0.5, 0.7, 1 / 3, 0.1, 1.0, 1e-46, 1e-45, 2.0**-149, 2.0**-150, 1e-40, 1e39]
    edges += [3.4028234663852886e38, 3.4028235e38, float("inf")]
    rng = random.Random(0)
    values = edges + [rng.uniform(-2, 2) for _ in range(3000)]
    values += [rng.random() * 10 ** rng.randint(-45, 38) for _ in range(3000)]
    for value in values + [-v for v in values]:
        ours, expected = boxes_module._float32_below(value), _float32_below_with_tensors(value)
        assert ours == expected and math.copysign(1, ours) == math.copysign(1, expected), value
    assert math.isnan(boxes_module._float32_below(float("nan")))
