"""Box geometry, IoU and exact NMS (Faster R-CNN, Ren et al. 2015, Secs. 3.1.2 and 3.3).

Every function mirrors ``torchvision.ops`` (0.29) in signature and result, bit for bit in
float32 and float64: the arithmetic is done in the same order, so rounding is the same.

Shapes: N, M boxes; B boxes solved together by one NMS block; "..." any batch dimensions.
Boxes are (x1, y1, x2, y2) in pixels unless a ``fmt`` says otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import struct

import torch
from torch import Tensor

#: Axis-aligned box formats of :func:`box_convert`, :func:`box_area` and :func:`box_iou`.
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

# Boxes decided together by one fixed-point solve: a [B, B] matrix per round is cheap to redo a few
# times, and B winners per block is few enough that suppressing everything below them stays small.
_NMS_BLOCK = 128
# Mat-vec rounds of the fixed point before it is checked: 97% of the blocks of bench_nms.py's
# scenes settle within 2 rounds, 99% within 3; the others are finished by the sequential scan.
_FIXED_POINT_ROUNDS = 3
# At most this many box pairs are compared at once: 128 Ki pairs make float32 temporaries of
# 0.5 MiB that stay in a core's L2 cache; 16x larger chunks ran 5-10x slower per pair (measured).
_PAIR_BUDGET = 1 << 17
# Gather the boxes near a block's winners only when that drops at least a quarter of the others;
# otherwise comparing all of them costs less than the gather.
_NEAR_FRACTION = 0.75
# When the survivors that a block can suppress end within this many columns, the block grows to
# take them all (one solve costs fewer operations than several blocks), up to the largest block
# whose [B, B] IoU matrix is one chunk (a larger one fell out of cache and ran 4x slower).
_ONE_BLOCK_REACH = math.isqrt(_PAIR_BUDGET)
# Survivors below a block are gathered anew when they are this few; more are moved in place.
_GATHER_BELOW = 4096
# The sequential scan packs overlap bits into int64 words: 2**k for bit k, bit 63 as -2**63.
_WORD_BITS = 64
_WORD_MASK = (1 << _WORD_BITS) - 1
_BIT_VALUES = [1 << k for k in range(_WORD_BITS - 1)] + [-(1 << (_WORD_BITS - 1))]
# float32's largest finite number, and its smallest positive (subnormal) one.
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_TINY = 1.401298464324817e-45
# Devices whose NMS runs the blocked, data-dependent path (:func:`_greedy_keep`): there, reading a
# value back costs no more than Python reading memory. Every other device (an accelerator) runs
# the dense path (:func:`_dense_keep`), which reads back one flag per _DENSE_ROUNDS rounds.
_BLOCKED_DEVICES = {"cpu"}
# The dense path holds a [N, N] bool and a [N, N] float32 matrix: 8192 boxes take 335 MB.
_DENSE_MAX_BOXES = 8192
# Box pairs compared at once on an accelerator: float32 temporaries of 16-32 MiB each.
_DENSE_PAIR_BUDGET = 1 << 22
# Rounds of the dense resolution between two checks of "every box decided", and the checks made
# before the blocked path takes over (a chain of suppressions longer than 64). The RPN of a
# random ResNet-50-FPN needed 10 rounds at 800 x 1066, the shipped model's RPN 6 (measured).
_DENSE_ROUNDS = 16
_DENSE_CHECKS = 4
# torchvision's size switch in batched_nms: above this many coordinates it runs NMS class by class.
_PER_CLASS_NUMEL = {"cpu": 4000}
_PER_CLASS_NUMEL_OTHER = 100_000


def _check_boxes(name: str, boxes: Tensor) -> None:
    """Raise ValueError unless ``boxes`` is a tensor whose last dimension holds 4 coordinates."""
    if not isinstance(boxes, Tensor) or boxes.dim() == 0 or boxes.shape[-1] != 4:
        seen = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be a tensor of shape [..., 4], got {seen}")


def _check_format(name: str, fmt: str) -> None:
    """Raise ValueError unless ``fmt`` is one of :data:`BOX_FORMATS`."""
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")


def _upcast(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 and small ints -> int32, so that products do not overflow."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert [..., 4] boxes between "xyxy", "xywh" and "cxcywh".

    "xyxy" is (x1, y1, x2, y2) corners; "xywh" the top-left corner and the size (w, h);
    "cxcywh" the centre and the size.

    Conversions between the two size formats go through "xyxy", as torchvision's do, so the
    rounding (and thus every bit of the result) is the same.
    """
    _check_boxes("boxes", boxes)
    _check_format("in_fmt", in_fmt)
    _check_format("out_fmt", out_fmt)
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":  # (x1, y1, w, h) -> corners
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":  # (cx, cy, w, h) -> corners, half a side either way of the centre
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return torch.stack((a, b, c, d), dim=-1)


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of [..., 4] boxes, shape [...]; float16 is computed in float32 (as torchvision does)."""
    _check_boxes("boxes", boxes)
    _check_format("fmt", fmt)
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def _corners(boxes: Tensor, fmt: str) -> tuple[Tensor, Tensor]:
    """Top-left and bottom-right corners, each [..., 2], computed as torchvision's IoU does."""
    if fmt == "xyxy":
        return boxes[..., :2], boxes[..., 2:]
    if fmt == "xywh":
        return boxes[..., :2], boxes[..., :2] + boxes[..., 2:]
    half = boxes[..., 2:] / 2
    return boxes[..., :2] - half, boxes[..., :2] + half


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Intersection over union of every pair: [..., N, 4] x [..., M, 4] -> [..., N, M].

    IoU = inter / (area1 + area2 - inter); disjoint boxes give 0, two empty boxes give NaN (0/0).
    """
    _check_boxes("boxes1", boxes1)
    _check_boxes("boxes2", boxes2)
    _check_format("fmt", fmt)
    if boxes1.dim() < 2 or boxes2.dim() < 2:
        raise ValueError(
            f"boxes1 and boxes2 must be [..., N, 4] and [..., M, 4], got "
            f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    area1, area2 = box_area(boxes1, fmt), box_area(boxes2, fmt)
    lt1, rb1 = _corners(boxes1, fmt)
    lt2, rb2 = _corners(boxes2, fmt)
    top_left = torch.max(lt1[..., :, None, :], lt2[..., None, :, :])  # [..., N, M, 2]
    bottom_right = torch.min(rb1[..., :, None, :], rb2[..., None, :, :])  # [..., N, M, 2]
    wh = _upcast(bottom_right - top_left).clamp(min=0)  # [..., N, M, 2]
    inter = wh[..., 0] * wh[..., 1]  # [..., N, M]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp [..., 4] (x1, y1, x2, y2) boxes into an image of ``size`` = (height, width)."""
    _check_boxes("boxes", boxes)
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = size
    xs = boxes[..., 0::2].clamp(min=0, max=width)  # [..., 2] (x1, x2)
    ys = boxes[..., 1::2].clamp(min=0, max=height)  # [..., 2] (y1, y2)
    return torch.stack((xs, ys), dim=-1).reshape(boxes.shape)  # interleave back to x1 y1 x2 y2


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """int64 indices of the boxes whose width AND height are both >= ``min_size``.

    For [N, 4] boxes these are box indices; for batched [..., 4] boxes, as in torchvision, they are
    indices along the first dimension of the surviving entries.
    """
    _check_boxes("boxes", boxes)
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


# ----------------------------------------------------------------------------------------------
# Non-maximum suppression
# ----------------------------------------------------------------------------------------------


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is enabled for ``device_type`` (False where autocast does not exist)."""
    available = torch.amp.is_autocast_available(device_type)  # e.g. not for "meta"
    return available and torch.is_autocast_enabled(device_type)


def autocast_float32(*tensors: Tensor) -> tuple[Tensor, ...]:
    """What torchvision's autocast kernels of ``nms`` and ``roi_align`` do to their inputs.

    When autocast is on for the tensors' device, torchvision casts float16, bfloat16 and float32
    inputs to float32 (float64 and integer tensors pass unchanged) before running the op; with
    autocast off this returns the tensors as they are. (Shared with :mod:`rcnn_lab.ops.roi_align`.)
    """
    if not _autocast_on(tensors[0].device.type):
        return tensors
    eligible = (torch.float16, torch.bfloat16, torch.float32)
    return tuple(t.float() if t.dtype in eligible else t for t in tensors)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context that turns autocast off on ``device_type`` if it is on, else does nothing.

    The ops choose their own dtypes (as torchvision's kernels do); inside, autocast would
    otherwise run a mat-vec or a gather in float16.
    """
    if _autocast_on(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _check_nms_inputs(boxes: Tensor, scores: Tensor) -> None:
    """Raise ValueError unless boxes is [N, 4] floating and scores is [N] of the same dtype."""
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        seen = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor of shape [N, 4], got {seen}")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating-point tensor, got dtype {boxes.dtype}")
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        seen = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor of shape [{boxes.shape[0]}] (N), got {seen}")
    # under autocast torchvision casts both to float32 first, so float16 boxes may meet float32
    # scores there (and only there)
    cast_boxes, cast_scores = autocast_float32(boxes, scores)
    if cast_scores.dtype != cast_boxes.dtype:
        raise ValueError(f"scores must have the dtype of boxes ({boxes.dtype}), got {scores.dtype}")


def _threshold_value(iou_threshold: float) -> float:
    """``iou_threshold`` as a Python float; TypeError unless it is a real number."""
    is_number = isinstance(iou_threshold, numbers.Real)
    is_scalar_tensor = isinstance(iou_threshold, Tensor) and iou_threshold.numel() == 1
    if not (is_number or is_scalar_tensor):
        raise TypeError(
            f"iou_threshold must be a real number such as 0.5, got "
            f"{type(iou_threshold).__name__} {iou_threshold!r}"
        )
    return float(iou_threshold)


def _float32_below(value: float) -> float:
    """Largest float32 t with t <= value, in plain Python (no tensor: nothing for
    torch.compile to break on). ``struct`` rounds a double to the nearest float32, as a cast
    in C does; when that rounded up, step one float32 down through its bit pattern."""
    try:
        t = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # beyond float32's range: its largest number, or -inf below it
        return _FLOAT32_MAX if value > 0 else float("-inf")
    if not t > value:  # exact, rounded down, or NaN
        return t
    if t == 0:  # value is a tiny negative number: the float32 just below zero
        return -_FLOAT32_TINY
    bits = struct.unpack("<I", struct.pack("<f", t))[0]
    bits += -1 if t > 0 else 1  # towards -inf: a smaller magnitude if positive, larger if not
    return struct.unpack("<f", struct.pack("<I", bits))[0]


@torch.compiler.assume_constant_result  # torch.compile runs it as it is: a constant
def _threshold_below(iou_threshold: float, dtype: torch.dtype) -> float:
    """:func:`_threshold_value_below`, which torch.compile does not trace (it would break)."""
    return _threshold_value_below(iou_threshold, dtype)


@functools.lru_cache(maxsize=64)  # a handful of thresholds recur in every call of a model
def _threshold_value_below(iou_threshold: float, dtype: torch.dtype) -> float:
    """Largest number t representable in ``dtype`` with t <= iou_threshold.

    torchvision's C++ kernel compares a float32 IoU with a *double* threshold. For a float32
    x, ``x > iou_threshold`` (in float64) holds exactly when ``x > t``: no float32 lies strictly
    between t and the threshold. PyTorch's ``x > 0.7`` would round 0.7 to the *nearest*
    float32, one ulp too high whenever rounding goes up, and keep a box torchvision suppresses.
    t is exact in ``dtype``, so comparing a tensor with it as a Python float loses nothing.
    """
    if dtype == torch.float64:
        return float(iou_threshold)
    if dtype == torch.float32:
        return _float32_below(float(iou_threshold))
    exact = torch.tensor(float(iou_threshold), dtype=torch.float64)  # on the host: no device sync
    t = exact.to(dtype)
    if t.double() > exact:  # rounded up: step one representable value down
        t = torch.nextafter(t, torch.tensor(float("-inf"), dtype=dtype))
    return t.item()


def _sorted_columns(boxes: Tensor, order: Tensor) -> Tensor:
    """Rows (x1, y1, x2, y2, area) of the boxes taken in ``order``: [5, N], each row contiguous."""
    x1, y1, x2, y2 = boxes[order].t()  # each [N]
    return torch.stack((x1, y1, x2, y2, (x2 - x1) * (y2 - y1)))


def _iou_of(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise IoU of broadcastable a [5, ...] and b [5, ...] (rows x1, y1, x2, y2, area).

    The order of operations is torchvision's CPU kernel's (clamped w * h, then
    inter / ((area_a + area_b) - inter)), so float32 results are bit-identical to it; the
    result is symmetric in a and b bit for bit (max, min and the sum of two areas commute).
    """
    top_left = torch.maximum(a[:2], b[:2])  # [2, ...] (x, y) of the overlap's top-left
    sides = torch.minimum(a[2:4], b[2:4]).sub_(top_left).clamp_(min=0)  # [2, ...] (w, h)
    inter = sides[0].mul_(sides[1])
    return inter.div_((a[4] + b[4]).sub_(inter))


def _pair_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair of columns of a [5, ..., K] and b [5, ..., M] (rows x1, y1, x2, y2,
    area; "..." batch dimensions): [..., K, M], computed as :func:`_iou_of` does."""
    return _iou_of(a.unsqueeze(-1), b.unsqueeze(-2))  # [5, ..., K, 1] with [5, ..., 1, M]


@functools.lru_cache(maxsize=8)
def _bit_values(device: torch.device) -> Tensor:
    """[64] int64 2**k, the value of bit k of a word (bit 63 as -2**63), on ``device``."""
    return torch.tensor(_BIT_VALUES, device=device)


def _sequential_scan(over: Tensor) -> Tensor:
    """Positions [K] (ascending) that greedy NMS keeps among B score-sorted boxes: the plain loop.

    Row i of the [B, B] bool ``over`` ("box i overlaps box j") is packed into a Python int of B
    bits (one device-to-host copy of B * ceil(B / 64) int64 words); the loop on the host then
    costs one bit test per box and one OR per kept box, tens of microseconds for B = 128.
    """
    b = over.shape[0]
    words = -(-b // _WORD_BITS)
    if b % _WORD_BITS:  # pad the columns to whole words
        over = torch.cat((over, over.new_zeros((b, words * _WORD_BITS - b))), dim=1)
    bits = over.reshape(b, words, _WORD_BITS).long() * _bit_values(over.device)
    removed, kept = 0, []
    for i, row in enumerate(bits.sum(-1).tolist()):  # sync: the loop runs on the host
        if removed >> i & 1:
            continue
        kept.append(i)
        for k, word in enumerate(row):  # bits j <= i are already decided and never read again
            removed |= (word & _WORD_MASK) << (k * _WORD_BITS)
    return torch.tensor(kept, dtype=torch.int64, device=over.device)


def _fixed_point(over: Tensor) -> Tensor:
    """Positions [K] (ascending) that greedy NMS keeps among B score-sorted boxes.

    ``over`` [B, B] bool: box i overlaps box j above the threshold. keep[j] = no kept box ranked
    above j overlaps it. Starting from "keep everything", each round recomputes keep from the
    previous one (a float mat-vec counts the kept hitters exactly, counts <= B << 2**24); after t
    rounds the first t boxes are final (box t depends only on boxes above it), and the unique
    fixed point is the greedy answer. A few rounds reach it in practice, but a chain of
    suppressions (box 1 suppresses 2, whose removal frees 3, ...) needs up to B rounds. So run
    ``_FIXED_POINT_ROUNDS`` rounds with no host synchronisation, check once whether keep is
    the fixed point, and if not finish with the sequential loop (:func:`_sequential_scan`): at
    most ``_FIXED_POINT_ROUNDS + 1`` mat-vecs and two host syncs per block, whatever the input.
    """
    hitters_of = over.float().triu_(diagonal=1).t()  # [B, B] row j: who may suppress j
    keep = torch.ones(over.shape[0], dtype=hitters_of.dtype, device=over.device)
    for _ in range(_FIXED_POINT_ROUNDS):
        keep = torch.mv(hitters_of, keep).eq_(0)  # [B] 1.0 where no kept box hits
    if torch.equal(torch.mv(hitters_of, keep).eq_(0), keep):  # sync
        return keep.nonzero().squeeze(1)
    return _sequential_scan(over)


def _overlaps(a: Tensor, b: Tensor, thr: float, labels: tuple | None) -> Tensor:
    """[K, M] bool: column i of a [5, K] overlaps column j of b [5, M] above thr (same label)."""
    over = _pair_iou(a, b) > thr
    if labels is not None:
        a_labels, b_labels = labels
        over &= a_labels[:, None] == b_labels[None, :]  # NMS never crosses classes
    return over


def _best_iou(winners: Tensor, others: Tensor) -> Tensor:
    """[M] largest IoU of each column of ``others`` [5, M] with any column of ``winners`` [5, K].

    "max > thr" is "any(IoU > thr)" in a third of the time of a boolean any-reduction. A NaN
    IoU (0 / 0 of two empty boxes) never exceeds a threshold, so it must not win the max.
    """
    iou = _pair_iou(winners, others)  # [K, M]
    iou = torch.nan_to_num_(iou, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    return iou.amax(dim=0)


def _near(winners: Tensor, others: Tensor) -> Tensor:
    """[M] bool: columns of ``others`` [5, M] that overlap the bounding box of ``winners``.

    A box outside it (say x1 >= every winner's x2) gets intersection exactly 0 from each winner
    in float arithmetic (min(x2) - max(x1) <= 0, clamped), hence IoU 0 or NaN, which exceeds no
    threshold >= 0. A winner with a NaN corner has IoU NaN with everything: it widens nothing.
    """
    inf = float("inf")
    corners = winners[:4].nan_to_num(nan=inf, posinf=inf, neginf=-inf)  # [4, K]
    top_left = corners[:2].amin(dim=1)  # [2] smallest x1, y1
    corners = winners[2:4].nan_to_num(nan=-inf, posinf=inf, neginf=-inf)  # [2, K]
    bottom_right = corners.amax(dim=1)  # [2] largest x2, y2
    before_end = others[:2] < bottom_right[:, None]  # [2, M]
    after_start = others[2:4] > top_left[:, None]  # [2, M]
    return (before_end & after_start).all(dim=0)


def _hit_by(winners: Tensor, others: Tensor, thr: float) -> Tensor:
    """Ascending columns of ``others`` [5, M] that some column of ``winners`` [5, K] overlaps.

    The comparison works on column chunks of at most ``_PAIR_BUDGET`` pairs, so that the
    temporaries stay in cache and memory stays bounded. When there is more than one chunk of
    work and thr >= 0, only the columns near the winners (:func:`_near`) are compared: winners
    of a block that sit together (a chain of boxes, one object's guesses) skip far-away boxes.
    """
    columns = None
    big = winners.shape[1] * others.shape[1] > _PAIR_BUDGET
    if big and thr >= 0:  # a negative threshold is exceeded by IoU 0: every box is near
        near = _near(winners, others).nonzero().squeeze(1)  # sync: the count sizes the gather
        if near.numel() == 0:
            return near
        if near.numel() <= others.shape[1] * _NEAR_FRACTION:
            columns, others = near, others[:, near]
    chunk = max(1, _PAIR_BUDGET // max(1, winners.shape[1]))
    best = [_best_iou(winners, others[:, i : i + chunk]) for i in range(0, others.shape[1], chunk)]
    hit = (torch.cat(best) if len(best) > 1 else best[0]) > thr  # [M] or [near]
    hit = hit.nonzero().squeeze(1)
    return hit if columns is None else columns[hit]


def _drop(tensors: list[Tensor], start: int, hit: Tensor) -> list[Tensor]:
    """Remove the first ``start`` columns and columns ``start + hit`` (ascending) of each tensor.

    Few survivors are simply gathered. Of many, only the columns up to the last hit move: the
    kept ones among them are shifted right, in place, onto the columns just before the
    untouched tail, and the result is a view from there (no copy of the tail, which is most of
    the survivors when the hits sit near the block, as in a chain of boxes). The tensors must
    be owned by the caller (they are overwritten) and share their last size.
    """
    if hit.numel() == 0:
        return [t[..., start:] for t in tensors]
    rest = tensors[0].shape[-1] - start
    if rest <= _GATHER_BELOW:
        alive = torch.ones(rest, dtype=torch.bool, device=hit.device)
        alive[hit] = False
        kept = alive.nonzero().squeeze(1).add_(start)  # [rest - hits] surviving columns
        return [t[..., kept] for t in tensors]
    cut = int(hit[-1]) + 1  # sync: [0, cut) holds every hit
    if cut > hit.numel():  # some columns before the last hit survive: move them
        moved = torch.ones(cut, dtype=torch.bool, device=hit.device)
        moved[hit] = False
        moved = moved.nonzero().squeeze(1).add_(start)  # [cut - hits] columns that survive
        for t in tensors:
            t[..., start + hit.numel() : start + cut] = t[..., moved]  # a copy: overlap is safe
    return [t[..., start + hit.numel() :] for t in tensors]


def _solve_block(
    cols: Tensor, b: int, reach: int, thr: float, labels: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Winners of the top b survivors, and the survivors in [b, reach) that they suppress.

    Returns the winners' positions [K] in the block (:func:`_fixed_point`) and the ascending
    positions, relative to b, of the survivors below that they overlap (:func:`_hit_by`).
    """
    block = cols[:, :b]
    pair_labels = None if labels is None else (labels[:b], labels[:b])
    keep = _fixed_point(_overlaps(block, block, thr, pair_labels))  # [K]
    won = keep
    if labels is not None and reach > b:  # survivors below all have labels >= the block's last,
        won = keep[labels[keep] == labels[b - 1]]  # L: only winners of label L meet them
    if reach == b or won.numel() == 0:
        return keep, keep[:0]
    return keep, _hit_by(block[:, won], cols[:, b:reach], thr)


def _greedy_keep(cols: Tensor, thr: float, labels: Tensor | None = None) -> Tensor:
    """Positions (ascending) that greedy NMS keeps among score-sorted boxes ``cols`` [5, N].

    Take the top B survivors as a block and solve it exactly (:func:`_fixed_point`); its winners
    are then final, so delete every lower survivor they overlap; repeat. With ``labels``
    (ascending, scores descending within a label) only same-label boxes interact: survivors
    below a block have labels >= its last label L, so they are compared only up to the end of
    label L. ``cols`` and ``labels`` are overwritten.
    """
    pos = torch.arange(cols.shape[1], device=cols.device)  # [M] sorted position of survivors
    state = [cols, pos] if labels is None else [cols, pos, labels]
    winners = []
    while pos.numel() > 0:
        b = reach = min(_NMS_BLOCK, pos.numel())
        if labels is None:
            reach = pos.numel()
        elif b < pos.numel():  # sync: the end of label L among the survivors
            reach = int(torch.searchsorted(labels, labels[b - 1], right=True))
        if reach <= _ONE_BLOCK_REACH:  # one block of everything these boxes can meet
            b = reach
        keep, hit = _solve_block(cols, b, reach, thr, labels)
        winners.append(pos[keep])
        state = _drop(state, b, hit)
        cols, pos = state[0], state[1]
        labels = None if labels is None else state[2]
    return torch.cat(winners)


def _dense_overlaps(cols: Tensor, thr: float, labels: Tensor | None) -> Tensor:
    """[N, N] bool: box i overlaps box j above thr (same label) and i < j; ``cols`` is [5, N].

    IoU is symmetric bit for bit (max, min and the sum of the two areas commute), so row i
    holds what torchvision's loop computes when it meets box i kept.
    """
    n = cols.shape[1]
    over = torch.zeros((n, n), dtype=torch.bool, device=cols.device)
    rows = max(1, _DENSE_PAIR_BUDGET // n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        pair_labels = None if labels is None else (labels[start:stop], labels[start:])
        over[start:stop, start:] = _overlaps(cols[:, start:stop], cols[:, start:], thr, pair_labels)
    return over.triu_(diagonal=1)


def _settle_round(kept: Tensor, undecided: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """One round of deciding boxes on the device: the new (kept, undecided), [...] floats of
    0.0 and 1.0, from ``counts`` [..., 2], each box's kept and undecided hitters (boxes above it
    that overlap it). A box with a kept hitter is suppressed; one with no kept or undecided
    hitter is kept. Shared by the dense path here and the banded one of
    :mod:`rcnn_lab.ops.nms_per_image`."""
    newly_kept = undecided * (counts == 0).all(dim=-1)
    suppressed = undecided * (counts[..., 0] > 0)
    return kept + newly_kept, undecided - newly_kept - suppressed


def _dense_keep(cols: Tensor, thr: float, labels: Tensor | None = None) -> Tensor | None:
    """Positions (ascending) that greedy NMS keeps among score-sorted boxes ``cols`` [5, N].

    Every pair is compared at once (:func:`_dense_overlaps`), then boxes are decided in rounds
    (:func:`_settle_round`): a box is suppressed as soon as a kept box above it overlaps it,
    and kept as soon as every box above it that overlaps it is suppressed. Each round decides
    at least the first undecided box, and decisions are final, so this is greedy NMS exactly;
    a round is one [N, N] x [N, 2] product that counts, for every box, the kept and the
    undecided boxes above it that overlap it (integers below 2**24: exact in float32). The host
    reads one flag per ``_DENSE_ROUNDS`` rounds, and the kept positions: two syncs for typical
    scenes. Returns None when boxes are still undecided after ``_DENSE_CHECKS`` checks (a long
    chain of suppressions); the blocked path then solves it.
    """
    hit_by = _dense_overlaps(cols, thr, labels).t().float()  # [N, N] row j: boxes that can hit j
    n = hit_by.shape[0]
    kept = torch.zeros(n, dtype=hit_by.dtype, device=hit_by.device)  # [N] 1.0: decided, kept
    undecided = torch.ones_like(kept)  # [N]
    for _ in range(_DENSE_CHECKS):
        for _ in range(_DENSE_ROUNDS):
            counts = hit_by @ torch.stack((kept, undecided), dim=1)  # [N, 2]
            kept, undecided = _settle_round(kept, undecided, counts)
        if not undecided.any():  # sync: one flag per _DENSE_ROUNDS rounds
            return kept.nonzero().squeeze(1)
    return None


def _keep_positions(cols: Tensor, thr: float, labels: Tensor | None = None) -> Tensor:
    """Positions (ascending) that greedy NMS keeps among score-sorted boxes ``cols`` [5, N].

    The dense path on accelerators (few syncs, O(N^2) work in parallel) when N is small enough
    for its matrices, else the blocked path (little work, a few syncs per block).
    """
    dense = cols.device.type not in _BLOCKED_DEVICES and cols.shape[1] <= _DENSE_MAX_BOXES
    keep = _dense_keep(cols, thr, labels) if dense else None
    return _greedy_keep(cols, thr, labels) if keep is None else keep


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Exact greedy non-maximum suppression, vectorised (no Python loop over boxes).

    Visit boxes by decreasing score (stable sort: ties keep input order); keep a box unless a kept,
    higher-ranked box has IoU > ``iou_threshold`` with it. Same indices, same order as
    ``torchvision.ops.nms``, including ties and IoU exactly at the threshold (float32 IoUs are
    computed in torchvision's arithmetic order and compared with the float64 threshold).

    Args:
        boxes: [N, 4] (x1, y1, x2, y2), floating point (finite values).
        scores: [N], same dtype as boxes.
        iou_threshold: suppress boxes whose IoU with a kept box is strictly greater.

    Returns:
        [K] int64 indices of the kept boxes, by decreasing score.

    float16 and bfloat16 boxes are compared in float32: their areas overflow float16 beyond
    181 x 181 px, and a 3-digit IoU flips decisions. The result is torchvision's under autocast
    (which casts to float32 for any device); torchvision's CUDA kernel for float16 also
    multiplies in float32 but subtracts corners in float16, so a near-tie may differ there.

    Cost: blocks of B = 128 boxes, each solved by at most 4 mat-vec rounds or, when its
    suppressions chain, by a sequential scan of its B x B overlap bits on the host. Its winners
    are compared with the surviving lower boxes near them, so time is at most O(N * K) pair IoUs
    (K kept; torchvision's loop does that work) plus O(B^2) per block, and O(N * B) for a chain
    of boxes. Memory: O(N) for the sorted boxes, O(B^2) per block and at most 128 Ki box pairs
    (float temporaries of 0.5 MiB) at a time, whatever N. Host synchronisations: a few per
    block, none per box. That is the CPU's path; on an accelerator (up to 8192 boxes) every
    pair is compared at once and boxes are decided in rounds of one [N, N] product each, with
    two host syncs per call for typical scenes (:func:`_dense_keep`).
    """
    _check_nms_inputs(boxes, scores)
    thr = _threshold_value(iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes, scores = _upcast(boxes), _upcast(scores)  # float16/bfloat16 -> float32
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    with autocast_off(boxes.device.type):
        keep = _keep_positions(_sorted_columns(boxes, order), _threshold_below(thr, boxes.dtype))
    return order[keep]


def _per_class_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS of each class on its own boxes (no coordinate offset), all classes in one pass."""
    thr = _threshold_below(_threshold_value(iou_threshold), _upcast(boxes).dtype)
    by_score = torch.sort(scores, dim=0, descending=True, stable=True).indices
    by_class = torch.sort(idxs[by_score], dim=0, stable=True).indices
    order = by_score[by_class]  # [N] class ascending, then score descending, then index
    with autocast_off(boxes.device.type):
        keep = _keep_positions(_sorted_columns(_upcast(boxes), order), thr, idxs[order])
    kept = torch.sort(order[keep]).values  # ascending box index, like a boolean keep mask
    # same (non-stable) sort call as torchvision's per-class path, on the scores as given, so
    # that ties come out alike
    return kept[scores[kept].sort(descending=True)[1]]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category ``idxs``: boxes of different categories never suppress each other.

    Args:
        boxes: [N, 4] (x1, y1, x2, y2). scores: [N]. idxs: [N] category of each box.
        iou_threshold: as in :func:`nms`.

    Returns:
        [K] int64 indices of the kept boxes, by decreasing score.

    Like torchvision, small inputs (<= 4000 coordinates on CPU, 100 000 elsewhere) shift each
    category's boxes by ``idx * (max coordinate + 1)`` so that categories cannot overlap and run
    one :func:`nms`; larger ones run NMS per category. The shift changes float rounding, so the
    same switch is what makes the result bit-identical to torchvision's. The shift is computed
    in the boxes' own dtype (float16 too), as torchvision's is, before :func:`nms` upcasts.
    """
    _check_nms_inputs(boxes, scores)
    if not isinstance(idxs, Tensor) or idxs.shape != scores.shape:
        seen = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must be a tensor of shape [{boxes.shape[0]}] (N), got {seen}")
    _threshold_value(iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    limit = _PER_CLASS_NUMEL.get(boxes.device.type, _PER_CLASS_NUMEL_OTHER)
    if boxes.numel() > limit:
        return _per_class_nms(boxes, scores, idxs, iou_threshold)
    offsets = idxs.to(boxes) * (boxes.max() + 1)  # [N] a category's shift, past every box
    return nms(boxes + offsets[:, None], scores, iou_threshold)
