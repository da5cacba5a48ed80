"""NMS for a whole batch of images at once, equal to torchvision's per-image ``batched_nms``.

The RPN and the RoI heads filter each image's candidates the same way: drop the invalid ones
(tiny boxes, low scores), run ``batched_nms`` with one group per pyramid level or per class,
keep the best n. torchvision loops over the images, and every step of that loop reads data
back to the host (the indices of the boxes that pass, NMS itself). Here the whole batch is
one call: invalid boxes are masked rather than removed, and the host reads a fixed number of
values whatever the batch size (two on an accelerator for the RPN; see
:func:`batched_nms_per_image`). The kept indices, and their order, are torchvision's bit for bit.

Shapes: N images, K candidates per image (padding marked invalid), M boxes kept by one image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rcnn_lab.ops import boxes as _boxes

# Box pairs compared at once when the band of overlaps is built (float32 temporaries of 4-8 MiB).
_BAND_PAIR_BUDGET = 1 << 21
# Pairs of the band of one image above which the valid boxes are gathered first (a host read):
# the RPN's 4663 candidates x 999 neighbours stay below it, the RoI heads' 90 000 do not.
_BAND_PAIRS_PER_IMAGE = 1 << 23


def _check_inputs(boxes: Tensor, scores: Tensor, idxs: Tensor, valid: Tensor) -> None:
    """ValueError naming the first argument whose shape or dtype does not fit the others."""
    if not isinstance(boxes, Tensor) or boxes.dim() != 3 or boxes.shape[-1] != 4:
        seen = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor of shape [N, K, 4], got {seen}")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating-point tensor, got dtype {boxes.dtype}")
    expected = tuple(boxes.shape[:2])
    for name, t in (("scores", scores), ("idxs", idxs), ("valid", valid)):
        if not isinstance(t, Tensor) or tuple(t.shape) != expected:
            seen = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"{name} must be a tensor of shape {list(expected)} (N, K), got {seen}"
            )
    if scores.dtype != boxes.dtype:
        raise ValueError(f"scores must have the dtype of boxes ({boxes.dtype}), got {scores.dtype}")
    if idxs.is_floating_point() or idxs.dtype == torch.bool:
        raise ValueError(f"idxs must be an integer tensor, got dtype {idxs.dtype}")
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")


def clip_boxes_to_images(boxes: Tensor, image_sizes: list[tuple[int, int]]) -> Tensor:
    """Clamp [N, ..., 4] (x1, y1, x2, y2) boxes of N images into their (height, width) sizes.

    Image n's boxes get exactly what ``clip_boxes_to_image(boxes[n], image_sizes[n])`` gives,
    in one call for the batch.
    """
    _boxes._check_boxes("boxes", boxes)
    if boxes.dim() < 2 or len(image_sizes) != boxes.shape[0]:
        raise ValueError(
            f"image_sizes must hold one (height, width) per image of boxes {tuple(boxes.shape)}, "
            f"got {len(image_sizes)}"
        )
    limits = torch.tensor(
        [(w, h) for h, w in image_sizes], dtype=boxes.dtype, device=boxes.device
    )  # [N, 2] (width, height); a host-to-device copy, not a read back
    limits = limits.reshape(-1, *([1] * (boxes.dim() - 2)), 1, 2)  # [N, 1.., 1, 2]
    corners = boxes.reshape(*boxes.shape[:-1], 2, 2).clamp(min=0)  # [..., 2, 2] (x, y) pairs
    return torch.minimum(corners, limits).reshape(boxes.shape)


def _shift_like_torchvision(boxes: Tensor, idxs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The coordinates torchvision's ``batched_nms`` would compare, and which images it shifts.

    torchvision shifts a small input's boxes by ``idx * (max coordinate + 1)`` so that groups
    cannot overlap, and runs NMS per group on a large one (:data:`_boxes._PER_CLASS_NUMEL`).
    The shift changes float rounding, so each image is decided as torchvision decides it, from
    its number of valid boxes and their largest coordinate, on the device. Returns the [N, K, 4]
    coordinates (float16 upcast to float32 after the shift, as :func:`_boxes.nms` does) and
    [N] bool: the images whose boxes are shifted.
    """
    limit = _boxes._PER_CLASS_NUMEL.get(boxes.device.type, _boxes._PER_CLASS_NUMEL_OTHER)
    shifted_images = valid.sum(dim=1) * 4 <= limit  # [N] small enough for one shifted NMS
    top = boxes.masked_fill(~valid[..., None], float("-inf")).amax(dim=(1, 2))  # [N]
    offsets = idxs.to(boxes) * (top[:, None] + 1)  # [N, K] a group's shift, past every box
    coordinates = torch.where(shifted_images[:, None, None], boxes + offsets[..., None], boxes)
    return _boxes._upcast(coordinates), shifted_images


def _groups_apart(boxes: Tensor, idxs: Tensor, valid: Tensor, by_group: Tensor) -> Tensor:
    """[N] bool: in each image, no valid box reaches past the left edge of a box of a later group.

    torchvision's shift puts group g at g * (max coordinate + 1), beyond every box of the
    groups before it, but only when no coordinate is below -1 (and its rounding allows): a box
    starting at -5 reaches back into the previous group, and there torchvision's single NMS
    does let groups suppress each other. When every box of a later group starts at or after
    the right edge of every box of the earlier ones, their overlap has width <= 0 and IoU 0,
    and NMS group by group is the same NMS. ``boxes`` [N, K, 4] (shifted); ``by_group`` [N, K]
    each image's order by group.
    """
    inf = float("inf")
    left = boxes[..., 0].masked_fill(~valid, inf).gather(1, by_group)  # [N, K] x1 by group
    right = boxes[..., 2].masked_fill(~valid, -inf).gather(1, by_group)  # [N, K] x2 by group
    groups = idxs.gather(1, by_group)  # [N, K] ascending in each row
    reach = right.cummax(dim=1).values  # [N, K] largest x2 up to each position
    starts = torch.searchsorted(groups, groups)  # [N, K] where each box's group starts
    before = reach.gather(1, (starts - 1).clamp(min=0))  # largest x2 of the earlier groups
    return ((starts == 0) | (left >= before)).all(dim=1)  # a NaN edge: not apart


def _set_ids(image: Tensor, label: Tensor) -> Tensor:
    """[V] ascending ids of the runs of equal (image, label) in a list sorted by both."""
    new_set = (image[1:] != image[:-1]) | (label[1:] != label[:-1])  # [V - 1]
    return torch.cat((new_set.new_zeros(min(1, image.numel())), new_set)).cumsum(0)


def _windows(t: Tensor, width: int, fill: float) -> Tensor:
    """[..., V, width] view: entry t of row p is column p - width + t of ``t`` [..., V]
    (the ``width`` columns before p), ``fill`` before the first column."""
    pad = t.new_full((*t.shape[:-1], width), fill)
    return torch.cat((pad, t), dim=-1).unfold(-1, width, 1)[..., :-1, :]


def _band_hitters(cols: Tensor, sets: Tensor, thr: float, width: int) -> Tensor:
    """[V, width] float: 1.0 where box p - width + t is in p's set and overlaps p above thr.

    ``cols`` [5, V] and ``sets`` [V] are sorted by set, then by decreasing score, so the boxes
    that can suppress p are the at most ``width`` boxes just before it.
    """
    v = cols.shape[1]
    before = _windows(cols, width, 0.0)  # [5, V, width]
    same_set = _windows(sets, width, -1) == sets[:, None]  # [V, width]
    hit = torch.empty((v, width), dtype=torch.float32, device=cols.device)
    rows = max(1, _BAND_PAIR_BUDGET // width)
    for start in range(0, v, rows):
        part = slice(start, start + rows)
        over = _boxes._iou_of(cols[:, part, None], before[:, part]) > thr  # [rows, width]
        hit[part] = over & same_set[part]
    return hit


def _banded_keep(cols: Tensor, sets: Tensor, thr: float, width: int, valid: Tensor | None):
    """[V] bool: greedy NMS of boxes sorted by set, then by decreasing score, or None.

    The dense resolution of :func:`_boxes._dense_keep`, but each box is compared only with
    the ``width`` boxes before it: a set of at most ``width + 1`` boxes is a diagonal block of
    width + 1, so a band of [V, width] pairs holds every overlap, and a round is one
    [V, width] x [V, width, 2] product. ``valid`` [V] (or None): invalid boxes take no part.
    The host reads one flag per ``_DENSE_ROUNDS`` rounds, which also says whether some set is
    wider than the band; None when it is, or when ``_DENSE_CHECKS`` checks leave a box
    undecided (the caller then takes the blocked path).
    """
    v = cols.shape[1]
    if v == 0:
        return torch.zeros(0, dtype=torch.bool, device=cols.device)
    undecided = torch.ones(v, device=cols.device) if valid is None else valid.float()
    hit = _band_hitters(cols, sets, thr, width)  # [V, width]
    starts = torch.searchsorted(sets, sets)  # [V] first position of each box's set
    too_wide = (torch.arange(v, device=sets.device) - starts).amax() > width
    kept, undecided = _band_rounds(hit, torch.zeros_like(undecided), undecided, width)
    # sync: two flags, read together; outside any loop, so that torch.compile breaks its
    # graph here once
    wide, pending = torch.stack((too_wide, undecided.any())).to(torch.int64).tolist()
    if wide:
        return None
    for _ in range(_boxes._DENSE_CHECKS - 1):  # a chain of suppressions: more rounds
        if not pending:
            break
        kept, undecided = _band_rounds(hit, kept, undecided, width)
        pending = bool(undecided.any())  # sync
    return None if pending else kept.bool()


def _band_rounds(hit: Tensor, kept: Tensor, undecided: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """``_DENSE_ROUNDS`` rounds of the banded resolution, with no host read: new (kept,
    undecided), [V] floats of 0.0 and 1.0, from the band ``hit`` [V, width]."""
    for _ in range(_boxes._DENSE_ROUNDS):
        state = _windows(torch.stack((kept, undecided)), width, 0.0)  # [2, V, width]
        counts = torch.einsum("vt,cvt->vc", hit, state)  # [V, 2] kept, undecided hitters
        kept, undecided = _boxes._settle_round(kept, undecided, counts)
    return kept, undecided


def _blocked_keep(cols: Tensor, sets: Tensor, thr: float) -> Tensor:
    """[V] bool: greedy NMS of boxes sorted by set, then by decreasing score, on the host's
    terms (:func:`_boxes._greedy_keep`, a few reads per block of 128 boxes)."""
    keep = torch.zeros(cols.shape[1], dtype=torch.bool, device=cols.device)
    if cols.shape[1]:
        keep[_boxes._greedy_keep(cols, thr, sets)] = True  # overwrites cols and sets
    return keep


def _final_order(
    keep: Tensor, scores: Tensor, shifted_images: Tensor, top_n: int | None
) -> list[Tensor]:
    """Each image's kept indices [M] in torchvision's order, at most ``top_n`` of them.

    A shifted image (one NMS call) returns its boxes by a stable sort of the scores; a large
    one (NMS per group) sorts its ascending kept indices by score with the default, unstable
    sort, and ties come out in that sort's order. Both are computed and the image's own is
    chosen on the device. One sync: the number of boxes each image keeps.
    """
    counts = keep.sum(dim=1).tolist()  # sync: sizes of the per-image results
    ascending = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices  # kept first
    result = []
    for n, count in enumerate(counts):  # no host read inside: N slices, N small sorts
        kept = ascending[n, :count]  # [M] ascending positions
        kept_scores = scores[n, kept]
        stable = kept[torch.sort(kept_scores, descending=True, stable=True).indices]
        unstable = kept[kept_scores.sort(descending=True)[1]]
        result.append(torch.where(shifted_images[n], stable, unstable)[:top_n])
    return result


def batched_nms_per_image(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    valid: Tensor,
    iou_threshold: float,
    top_n: int | None = None,
    max_group_size: int | None = None,
) -> list[Tensor]:
    """``batched_nms`` on the valid boxes of each of N images, the whole batch in one call.

    For image n the result equals ``v[batched_nms(boxes[n][v], scores[n][v], idxs[n][v],
    iou_threshold)][:top_n]`` with ``v = valid[n].nonzero()``: torchvision's per-image call,
    same indices, same order (ties too), including torchvision's switch between shifting the
    groups apart and NMS group by group.

    Args:
        boxes: [N, K, 4] (x1, y1, x2, y2), floating point.
        scores: [N, K], the dtype of boxes.
        idxs: [N, K] integer group of each box (a level, a class): groups never interact.
        valid: [N, K] bool: the boxes that take part (the others are as if removed).
        iou_threshold: suppress boxes whose IoU with a kept box of their group is greater.
        top_n: keep at most this many per image (None: all).
        max_group_size: how many candidates one group of one image holds at most (the RPN's
            pre-NMS top-n, the RoI heads' RoIs per image), valid or not; None: K. Only the
            speed depends on it: a group found larger falls back to a slower path.

    Returns:
        N tensors [M_n] int64 of indices into K, by decreasing score.

    How: each image's boxes are sorted by group, then by decreasing score, so a box can only
    be suppressed by the at most ``max_group_size - 1`` boxes just before it. On an
    accelerator every box is compared with those at once (a band of pairs), and boxes are
    decided in rounds of one product each (:func:`_banded_keep`); on a CPU the valid boxes
    run :func:`rcnn_lab.ops.boxes.nms`'s blocked path, all groups of all images in one pass.

    Host syncs on an accelerator, for a batch of any size: two for typical scenes (a flag
    every 16 rounds, then the per-image counts) when the band of K candidates fits
    (K x max_group_size <= 2**23 pairs, as for the RPN); one more otherwise, to keep only the
    valid boxes (the RoI heads' candidates, K RoIs x C - 1 classes). On a CPU, reads are cheap
    and the blocked path makes a few per block of 128 boxes.
    """
    _check_inputs(boxes, scores, idxs, valid)
    thr = _boxes._threshold_value(iou_threshold)
    n, k = scores.shape
    if n == 0 or k == 0:
        return [torch.empty((0,), dtype=torch.int64, device=boxes.device) for _ in range(n)]
    width = max(1, min(k, max_group_size or k) - 1)  # boxes before another of its group
    if k * width <= _BAND_PAIRS_PER_IMAGE:
        return _solve(boxes, scores, idxs, valid, thr, top_n, width)
    # too many candidates for a band of all of them (the RoI heads' K x (C - 1)): keep only
    # the valid ones of each image, in index order, padded to the most valid ones of an image
    counts = valid.sum(dim=1).tolist()  # sync: how many are valid in each image
    if max(counts) == 0:
        return [torch.empty((0,), dtype=torch.int64, device=boxes.device) for _ in range(n)]
    where = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices[:, : max(counts)]
    kept = _solve(
        boxes.gather(1, where[..., None].expand(-1, -1, 4)),
        scores.gather(1, where),
        idxs.gather(1, where),
        valid.gather(1, where),
        thr,
        top_n,
        width,
    )
    return [w[i] for w, i in zip(where, kept, strict=True)]


def _solve(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    valid: Tensor,
    thr: float,
    top_n: int | None,
    width: int,
) -> list[Tensor]:
    """:func:`batched_nms_per_image` of [N, K] candidates, with a band ``width`` (the most
    boxes of a group before another) and the threshold ``thr`` as given."""
    n, k = scores.shape
    coordinates, shifted_images = _shift_like_torchvision(boxes, idxs, valid)
    thr = _boxes._threshold_below(thr, coordinates.dtype)
    # each image's boxes by decreasing score, ties in index order (the order of torchvision's
    # stable sort), then by group; invalid boxes last in their group: they take no part
    ranked = _boxes._upcast(scores).masked_fill(~valid, float("-inf"))
    by_score = torch.sort(ranked, dim=1, descending=True, stable=True).indices  # [N, K]
    by_group = by_score.gather(1, torch.sort(idxs.gather(1, by_score), dim=1, stable=True).indices)
    # a shifted image's groups are solved apart only where the shift did keep them apart
    grouped = ~shifted_images | (_groups_apart(coordinates, idxs, valid, by_group) & (thr >= 0))
    order = torch.where(grouped[:, None], by_group, by_score)  # [N, K]
    labels = idxs.gather(1, order).masked_fill(~grouped[:, None], 0).reshape(-1)  # [N*K]
    sorted_boxes = coordinates.gather(1, order[..., None].expand(-1, -1, 4)).reshape(-1, 4)
    x1, y1, x2, y2 = sorted_boxes.unbind(-1)
    cols = torch.stack((x1, y1, x2, y2, (x2 - x1) * (y2 - y1)))  # [5, N*K]
    sorted_valid = valid.gather(1, order).reshape(-1)
    image = torch.arange(n, device=boxes.device).repeat_interleave(k)  # [N*K]
    # the band on accelerators, and under torch.compile (the blocked path's reads per block
    # would each break the graph)
    dense = boxes.device.type not in _boxes._BLOCKED_DEVICES or torch.compiler.is_compiling()
    with _boxes.autocast_off(boxes.device.type):
        keep = None
        if dense and k * width <= _BAND_PAIRS_PER_IMAGE:  # every candidate, invalid ones masked
            keep = _banded_keep(cols, _set_ids(image, labels), thr, width, sorted_valid)
        if keep is None:  # gather the valid boxes first
            flat = sorted_valid.nonzero().squeeze(1)  # sync: [V] still by image, group, score
            sets = _set_ids(image[flat], labels[flat])
            if dense:
                keep_valid = _banded_keep(cols[:, flat], sets, thr, width, None)
            if not dense or keep_valid is None:
                keep_valid = _blocked_keep(cols[:, flat], sets, thr)
            keep = torch.zeros_like(sorted_valid).index_put_((flat,), keep_valid)
    keep = keep.reshape(n, k)
    keep = torch.zeros_like(valid).scatter_(1, order, keep)  # [N, K] at the original positions
    return _final_order(keep, scores, shifted_images, top_n)
