"""Box geometry, IoU and exact NMS (Faster R-CNN, Ren et al. 2015, Secs. 3.1.2 and 3.3).

Every function mirrors ``torchvision.ops`` (0.29) in signature and result, bit for bit in
float32 and float64: the arithmetic is done in the same order, so rounding is the same.

Shapes: N, M boxes; B boxes solved together by one NMS block; "..." any batch dimensions.
Boxes are (x1, y1, x2, y2) in pixels unless a ``fmt`` says otherwise.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

#: Axis-aligned box formats of :func:`box_convert`, :func:`box_area` and :func:`box_iou`.
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

# Boxes decided together by one fixed-point solve: a [B, B] matrix per round is cheap to redo a few
# times, and B winners per block is few enough that suppressing everything below them stays small.
_NMS_BLOCK = 128
# At most this many box pairs are compared at once (4 Mi pairs ~ 16 MiB per float32 temporary).
_PAIR_BUDGET = 1 << 22
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
    if scores.dtype != boxes.dtype:
        raise ValueError(f"scores must have the dtype of boxes ({boxes.dtype}), got {scores.dtype}")


@functools.lru_cache(maxsize=64)  # a handful of thresholds recur in every call of a model
def _threshold_below(iou_threshold: float, dtype: torch.dtype) -> float:
    """Largest number t representable in ``dtype`` with t <= iou_threshold.

    torchvision's C++ kernel compares a float32 IoU with a *double* threshold. For a float32
    x, ``x > iou_threshold`` (in float64) holds exactly when ``x > t``: no float32 lies strictly
    between t and the threshold. PyTorch's ``x > 0.7`` would round 0.7 to the *nearest*
    float32, one ulp too high whenever rounding goes up, and keep a box torchvision suppresses.
    t is exact in ``dtype``, so comparing a tensor with it as a Python float loses nothing.
    """
    exact = torch.tensor(float(iou_threshold), dtype=torch.float64)  # on the host: no device sync
    t = exact.to(dtype)
    if t.double() > exact:  # rounded up: step one representable value down
        t = torch.nextafter(t, torch.tensor(float("-inf"), dtype=dtype))
    return t.item()


def _sorted_columns(boxes: Tensor, order: Tensor) -> Tensor:
    """Rows (x1, y1, x2, y2, area) of the boxes taken in ``order``: [5, N], each row contiguous."""
    x1, y1, x2, y2 = boxes[order].t()  # each [N]
    return torch.stack((x1, y1, x2, y2, (x2 - x1) * (y2 - y1)))


def _pair_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair of columns of a [5, K] and b [5, M] (rows x1, y1, x2, y2, area): [K, M].

    The order of operations is torchvision's CPU kernel's (clamped w * h, then
    inter / ((area_a + area_b) - inter)), so float32 results are bit-identical to it.
    """
    a, b = a[:, :, None], b[:, None, :]  # [5, K, 1] and [5, 1, M]
    top_left = torch.maximum(a[:2], b[:2])  # [2, K, M] (x, y) of the overlap's top-left
    sides = torch.minimum(a[2:4], b[2:4]).sub_(top_left).clamp_(min=0)  # [2, K, M] (w, h)
    inter = sides[0].mul_(sides[1])  # [K, M]
    return inter.div_((a[4] + b[4]).sub_(inter))


def _fixed_point(over: Tensor) -> Tensor:
    """Greedy keep mask [B] of B score-sorted boxes from their [B, B] overlap matrix (bool).

    keep[j] = no kept box ranked above j overlaps it. Starting from "keep everything", each
    round recomputes keep from the previous one; after t rounds the first t boxes are final (box
    t depends only on boxes above it), so at most B rounds reach the unique fixed point -- the
    greedy answer -- and a handful do in practice. One host synchronisation per round (the
    convergence test). A float mat-vec counts the kept hitters exactly (counts <= B << 2**24).
    """
    above = over.float().triu_(diagonal=1)  # [B, B] only higher-ranked boxes suppress
    hitters_of = above.t()  # [B, B] row j: who may suppress j
    keep = torch.ones(over.shape[0], dtype=above.dtype, device=over.device)
    for _ in range(over.shape[0]):
        new_keep = torch.mv(hitters_of, keep).eq_(0)  # [B] 1.0 where no kept box hits
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep.bool()


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


def _hit_by(winners: Tensor, others: Tensor, thr: float) -> Tensor:
    """Which of ``others`` [5, M] some column of ``winners`` [5, K] overlaps above thr: [M] bool.

    Works on column chunks so that at most ``_PAIR_BUDGET`` pairs are held in memory at once.
    """
    chunk = max(1, _PAIR_BUDGET // max(1, winners.shape[1]))
    if others.shape[1] <= chunk:
        return _best_iou(winners, others) > thr
    best = [_best_iou(winners, others[:, i : i + chunk]) for i in range(0, others.shape[1], chunk)]
    return torch.cat(best) > thr


def _greedy_keep(cols: Tensor, thr: float, labels: Tensor | None = None) -> Tensor:
    """Positions (ascending) that greedy NMS keeps among score-sorted boxes ``cols`` [5, N].

    Take the top B survivors as a block and solve it exactly (:func:`_fixed_point`); its winners
    are then final, so delete every lower survivor they overlap; repeat. With ``labels``
    (ascending, scores descending within a label) only same-label boxes interact: survivors
    below a block have labels >= its last label L, so only its winners of label L are compared,
    and only with the survivors of label L.
    """
    pos = torch.arange(cols.shape[1], device=cols.device)  # [M] sorted position of survivors
    winners = []
    while pos.numel() > 0:
        block = cols[:, :_NMS_BLOCK]
        block_labels = None if labels is None else labels[:_NMS_BLOCK]
        pair_labels = None if labels is None else (block_labels, block_labels)
        keep = _fixed_point(_overlaps(block, block, thr, pair_labels))  # [b]
        won = block[:, keep]  # [5, K] final winners of the block
        winners.append(pos[:_NMS_BLOCK][keep])
        cols, pos = cols[:, _NMS_BLOCK:], pos[_NMS_BLOCK:]
        labels = None if labels is None else labels[_NMS_BLOCK:]
        reach = pos.numel()
        if labels is not None and reach > 0:  # survivors all have labels >= the block's last
            last = block_labels[-1]  # label L: only winners of label L meet them, up to `reach`
            won = won[:, block_labels[keep] == last]
            reach = int(torch.searchsorted(labels, last, right=True))
        if reach == 0 or won.shape[1] == 0:
            continue
        survive = ~_hit_by(won, cols[:, :reach], thr)  # [reach]
        if reach < pos.numel():
            survive = torch.cat((survive, survive.new_ones(pos.numel() - reach)))
        cols, pos = cols[:, survive], pos[survive]
        labels = None if labels is None else labels[survive]
    return torch.cat(winners)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Exact greedy non-maximum suppression, vectorised (no Python loop over boxes).

    Visit boxes by decreasing score (stable sort: ties keep input order); keep a box unless a kept,
    higher-ranked box has IoU > ``iou_threshold`` with it. Same indices, same order as
    ``torchvision.ops.nms``, including ties and IoU exactly at the threshold (float32 IoUs are
    computed in torchvision's arithmetic order and compared with the float64 threshold).

    Args:
        boxes: [N, 4] (x1, y1, x2, y2), float32 or float64 (finite values).
        scores: [N], same dtype as boxes.
        iou_threshold: suppress boxes whose IoU with a kept box is strictly greater.

    Returns:
        [K] int64 indices of the kept boxes, by decreasing score.

    Cost: blocks of B = 128 boxes. Each block's winners are compared with every surviving lower
    box, so time is O(N * K) pair IoUs (K kept; torchvision's loop does the same work) plus
    O(B^2) per block and round of the fixed point. Memory: O(N) for the sorted boxes, O(B^2) per
    block and at most 4 Mi box pairs (a few float temporaries of 16 MiB) at a time, whatever N.
    Host synchronisations: a few per block and one per fixed-point round, none per box.
    """
    _check_nms_inputs(boxes, scores)
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    thr = _threshold_below(float(iou_threshold), boxes.dtype)
    keep = _greedy_keep(_sorted_columns(boxes, order), thr)
    return order[keep]


def _per_class_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS of each class on its own boxes (no coordinate offset), all classes in one pass."""
    by_score = torch.sort(scores, dim=0, descending=True, stable=True).indices
    by_class = torch.sort(idxs[by_score], dim=0, stable=True).indices
    order = by_score[by_class]  # [N] class ascending, then score descending, then index
    cols = _sorted_columns(boxes, order)
    keep = _greedy_keep(cols, _threshold_below(float(iou_threshold), boxes.dtype), idxs[order])
    kept = torch.sort(order[keep]).values  # ascending box index, like a boolean keep mask
    # same (non-stable) sort call as torchvision's per-class path, so ties come out alike
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
    same switch is what makes the result bit-identical to torchvision's.
    """
    _check_nms_inputs(boxes, scores)
    if not isinstance(idxs, Tensor) or idxs.shape != scores.shape:
        seen = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must be a tensor of shape [{boxes.shape[0]}] (N), got {seen}")
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    limit = _PER_CLASS_NUMEL.get(boxes.device.type, _PER_CLASS_NUMEL_OTHER)
    if boxes.numel() > limit:
        return _per_class_nms(boxes, scores, idxs, iou_threshold)
    offsets = idxs.to(boxes) * (boxes.max() + 1)  # [N] a category's shift, past every box
    return nms(boxes + offsets[:, None], scores, iou_threshold)
