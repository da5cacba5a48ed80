"""RoIAlign in plain PyTorch (Mask R-CNN, He et al. 2017, Sec. 3 "RoIAlign").

Every RoI is cut into ``ph x pw`` bins; each bin averages ``gh x gw`` bilinearly interpolated
samples of the feature map. The four corners of every sample, with their bilinear weights, are
gathered from a channels-last table of features by ``F.embedding_bag(mode="sum")``: one bag per
(RoI, bin), ``4 * gh * gw`` rows per bag, each row weighted by ``bilinear weight / (gh * gw)``.
The backward is the transposed gather, again by ``embedding_bag``: the (table row, bag, weight)
triples sorted by row form one bag per table row, which sums the weighted gradients of the bins
that read that row. Only the RoIs are saved for the backward, which rebuilds the bags; RoIs get
no gradient (as in torchvision).

Memory stays bounded by chunking: bags are built for about ``SAMPLE_BUDGET`` samples at a time
(``GRAD_SAMPLE_BUDGET`` in the backward, whose sort needs more per sample), so that a huge RoI
with the adaptive sampling ratio cannot take gigabytes; the table is made one slice of channels
at a time (``WORK_BUDGET``, at least ``MIN_CHANNELS`` channels) and the results are written
straight into the [K, D, ph, pw] output, so neither a full channels-last copy of the features
nor a [K*ph*pw, D] intermediate is ever held. The slicing does not change the result, bit for
bit. float16 and bfloat16 features are pooled in float32.

Shapes: N images, D channels, H x W feature map, K RoIs, ph x pw output bins (pooled height and
width), gh x gw sampling grid per bin, 4 bilinear corners per sample.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rcnn_lab.ops.boxes import autocast_float32, autocast_off

#: aligned=True subtracts half a feature pixel, since box coordinates count pixel edges, while
#: bilinear sampling reads pixel i at coordinate i (its centre).
HALF_PIXEL = 0.5
#: aligned=False (the legacy behaviour) forces RoIs to be at least one feature pixel wide.
LEGACY_MIN_ROI_SIZE = 1.0
#: A sample farther than one pixel outside the map contributes nothing (torchvision's rule).
OUTSIDE_MARGIN = 1.0
#: Samples whose bags (rows and weights of 4 corners) are built at once, at most (plus one
#: bin's); 32 bytes per sample in float32, so 8 MiB per chunk. A FPN level's 1000 RoIs with
#: 7 x 7 bins and 2 x 2 samples make 196 Ki samples: one chunk.
SAMPLE_BUDGET = 1 << 18
#: The same for the backward, whose sort of the (table row, bag) pairs holds about 24 bytes
#: per pair (96 per sample) while it runs: 6 MiB per chunk at most. Every further chunk costs
#: one more pass over the features' gradient, so a chunk is also kept to one sample per
#: GRAD_ELEMENTS_PER_SAMPLE elements of the gradient (a fifth of its float32 size, about as
#: long to sort as that pass takes), but never below 4096 samples.
GRAD_SAMPLE_BUDGET = 1 << 16
GRAD_ELEMENTS_PER_SAMPLE = 128
#: Elements of the per-channel-slice temporaries, [N*H*W + bins, dc] together, i.e. the
#: channels-last slice of the table plus a block of results (forward, blocks of WORK_BUDGET / 4
#: results), or the table's gradient plus the chunk's bin gradients (backward). 4 MiB in
#: float32, more when MIN_CHANNELS channels of the table alone take more.
WORK_BUDGET = 1 << 20
#: Channel slices are multiples of this many channels, since narrower table rows gather no
#: faster per row, and a fixed multiple keeps each channel in the same vector lanes (bit-exact).
MIN_CHANNELS = 32
#: The same for the backward, where narrower slices cost less (its gather reads every table
#: row's bag, empty or not) and the table's gradient per slice is often its largest buffer.
GRAD_MIN_CHANNELS = 16
#: Input dtypes computed in float32, since a bin sums 4 * gh * gw products, which 16-bit floats
#: round at every step (and float16 has no room for the sample positions of a large map).
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_input(input: Tensor) -> None:
    if not isinstance(input, Tensor) or input.dim() != 4:
        seen = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input must be a [N, D, H, W] tensor, got {seen}")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating-point tensor, got dtype {input.dtype}")


def convert_boxes_to_roi_format(boxes: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """Turn boxes into the [K, 5] (batch index, x1, y1, x2, y2) RoI format.

    Args:
        boxes: a [K, 5] tensor (returned as is) or a list of [L_i, 4] tensors, one per image;
            the i-th list entry gets batch index i.
    """
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes as a tensor must be [K, 5], got {tuple(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)) or len(boxes) == 0:
        raise ValueError(f"boxes must be a [K, 5] tensor or a non-empty list, got {boxes!r}")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
            seen = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"boxes[{i}] must be an [L, 4] tensor, got {seen}")
    coords = torch.cat(list(boxes), dim=0)  # [K, 4]
    counts = torch.tensor([len(b) for b in boxes], device=coords.device)
    ids = _owners(counts, coords.shape[0])  # [K] the image of every box
    return torch.cat([ids.to(coords.dtype)[:, None], coords], dim=1)  # [K, 5]


def _integer(name: str, value: object, expected: str) -> int:
    """``value`` as a Python int; TypeError naming ``name`` unless it is an integer."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value)  # as torchvision accepts: a one-element integer tensor
    raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")


def _real(name: str, value: object) -> float:
    """``value`` as a finite Python float; TypeError or ValueError naming ``name`` otherwise."""
    if not (isinstance(value, numbers.Real) or (isinstance(value, Tensor) and value.numel() == 1)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _pair(output_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(ph, pw) from an int or a pair of ints, each >= 0 (0 gives an empty output)."""
    expected = "an int or a pair of ints (ph, pw)"
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be {expected}, got {output_size!r}")
        pair = tuple(_integer("output_size", v, expected) for v in output_size)
    else:
        pair = (_integer("output_size", output_size, expected),) * 2
    if min(pair) < 0:
        raise ValueError(f"output_size must be >= 0, got {output_size!r}")
    return pair


def _roi_geometry(rois: Tensor, spatial_scale: float, aligned: bool) -> tuple[Tensor, Tensor]:
    """Start corners and sizes of the RoIs on the feature grid: ([K, 2] (y, x), [K, 2] (h, w))."""
    offset = HALF_PIXEL if aligned else 0.0
    start = rois[:, [2, 1]] * spatial_scale - offset  # [K, 2] (y1, x1)
    end = rois[:, [4, 3]] * spatial_scale - offset  # [K, 2] (y2, x2)
    size = end - start
    if not aligned:
        size = size.clamp(min=LEGACY_MIN_ROI_SIZE)
    return start, size


def bilinear_corners(pos: Tensor, size: int, index_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Bilinear corners of sample coordinates along one axis of length ``size``.

    Args:
        pos: [...] sample coordinates in feature pixels.
    Returns:
        index: [..., 2] (low, high) integer coordinates, always inside [0, size - 1].
        weight: [..., 2] their weights; 0 for a sample more than one pixel outside the map.
    """
    valid = (pos >= -OUTSIDE_MARGIN) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().to(index_dtype)
    at_border = low >= size - 1
    # past the last row both corners are the last row and the sample sits exactly on it
    low = low.clamp(max=size - 1)
    high = torch.where(at_border, low, low + 1)
    pos = torch.where(at_border, low.to(pos.dtype), pos)
    frac = pos - low.to(pos.dtype)
    weight = torch.stack([1 - frac, frac], dim=-1) * valid.unsqueeze(-1)  # [..., 2]
    return torch.stack([low, high], dim=-1), weight


def _sample_positions(
    start: Tensor, bin_size: Tensor, bins: Tensor, grid: float | Tensor, steps: Tensor
) -> Tensor:
    """Coordinates of samples: start + bin * bin_size + (step + 0.5) * bin_size / grid."""
    return start + bins * bin_size + (steps + 0.5) * bin_size / grid


def fixed_grid_bags(
    rois: Tensor,
    shape: tuple[int, int],
    out: tuple[int, int],
    grid: int,
    scale: float,
    aligned: bool,
    index_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Table rows and weights of every bag when each bin has ``grid x grid`` samples.

    Returns:
        rows: [K * ph * pw, (grid * 2) ** 2] indices into the [N*H*W, D] table.
        weights: same shape, bilinear weight / (grid * grid).
    """
    (height, width), (ph, pw), k = shape, out, rois.shape[0]
    start, size = _roi_geometry(rois, scale, aligned)
    bin_size = size / size.new_tensor([ph, pw])  # [K, 2]
    steps = torch.arange(grid, device=rois.device, dtype=rois.dtype)
    axes = []
    for axis, (bins, length) in enumerate(zip(out, shape)):
        bin_index = torch.arange(bins, device=rois.device, dtype=rois.dtype)[:, None]
        pos = _sample_positions(
            start[:, axis, None, None], bin_size[:, axis, None, None], bin_index, grid, steps
        )  # [K, bins, grid]
        index, weight = bilinear_corners(pos, length, index_dtype)  # [K, bins, grid, 2]
        axes.append((index.reshape(k, bins, 2 * grid), weight.reshape(k, bins, 2 * grid)))
    (y_idx, y_w), (x_idx, x_w) = axes
    image_base = rois[:, 0].to(index_dtype) * (height * width)  # [K]
    row_base = image_base[:, None, None] + y_idx * width  # [K, ph, 2*grid]
    # axes [K, ph, pw, (gy, cy), (gx, cx)]: few dims with 4-wide inner runs broadcast fast
    rows = row_base[:, :, None, :, None] + x_idx[:, None, :, None, :]
    weights = (y_w / (grid * grid))[:, :, None, :, None] * x_w[:, None, :, None, :]
    bag = 4 * grid * grid
    return rows.reshape(k * ph * pw, bag), weights.reshape(k * ph * pw, bag)  # [K*ph*pw, bag]


def _index_dtype(num_images: int, shape: tuple[int, int]) -> torch.dtype:
    """int32 table rows gather faster; int64 only if N*H*W could overflow them."""
    max_rows = num_images * shape[0] * shape[1]
    return torch.int32 if max_rows < torch.iinfo(torch.int32).max else torch.int64


def _owners(counts: Tensor, total: int) -> Tensor:
    """k repeated counts[k] times: [total] int64, like repeat_interleave(arange(K), counts).

    Built from bincount + cumsum, which run serially: repeat_interleave's CPU kernel opens a
    parallel region even for a handful of elements, and on a busy machine each such region can
    stall for milliseconds.
    """
    starts = torch.cumsum(counts, 0) - counts  # [K]; empty runs share the next run's start
    runs_starting_here = torch.bincount(starts, minlength=total + 1)[:total]  # [total]
    return torch.cumsum(runs_starting_here, 0) - 1


def _ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For counts [K], the owner k and the local index 0..counts[k]-1 of every one of sum(counts).

    One host sync: the total length decides the size of the result.
    """
    total = int(counts.sum())  # sync: the output size depends on the data
    owner = _owners(counts, total)  # [total]
    first = torch.cumsum(counts, 0) - counts  # [K] where each owner's run starts
    local = torch.arange(total, device=counts.device) - first[owner]  # [total]
    return owner, local


def _adaptive_axis(
    start: Tensor, bin_size: Tensor, grid: Tensor, bins: int, size: int, index_dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Corners along one axis when RoI k has ``grid[k]`` samples per bin (variable).

    Returns:
        index, weight: [sum_k bins * grid[k], 2] corners of the samples, RoI after RoI, each
            RoI's samples ordered (bin, step).
        first: [K] where RoI k's samples start in that list.
        owner: [sum_k bins * grid[k]] the RoI of every sample.
    """
    counts = bins * grid  # [K]
    owner, local = _ragged_arange(counts)
    g = grid[owner]
    dtype = start.dtype
    pos = _sample_positions(
        start[owner], bin_size[owner], (local // g).to(dtype), g.to(dtype), (local % g).to(dtype)
    )  # [sum_k bins * grid[k]]
    index, weight = bilinear_corners(pos, size, index_dtype)
    return index, weight, torch.cumsum(counts, 0) - counts, owner


class AdaptiveSamples(NamedTuple):
    """The samples of every bag when each RoI has its own grid (see :func:`adaptive_grid_bags`).

    The y and x corners are listed once per RoI and bin row / column (a few per feature pixel
    of the RoI's height or width); a bag's gh * gw samples pair them up, so the per-sample lists
    that ``embedding_bag`` needs are made only for a chunk of bags at a time (:func:`bag_samples`).
    """

    y_rows: Tensor  #: [Ly, 2] table row of the y corners' row start (image * H * W + y * W)
    y_weights: Tensor  #: [Ly, 2] their bilinear weights, already divided by gh * gw
    x_index: Tensor  #: [Lx, 2] the x corners
    x_weights: Tensor  #: [Lx, 2] their bilinear weights
    bags: Tensor  #: [K*ph*pw, 4] (first y sample, first x sample, gw, gh * gw) of every bag


def adaptive_grid_bags(
    rois: Tensor,
    shape: tuple[int, int],
    out: tuple[int, int],
    scale: float,
    aligned: bool,
    index_dtype: torch.dtype,
) -> AdaptiveSamples:
    """Corners of the samples of variable-size bags (grid = ceil(roi size / output size)).

    Returns the y and x corners of every RoI's sample rows and columns and, per (RoI, bin) bag,
    where its samples start in those lists and how many there are; :func:`bag_samples` turns
    a range of bags into the rows, weights and offsets of ``embedding_bag``.
    """
    (height, width), (ph, pw) = shape, out
    start, size = _roi_geometry(rois, scale, aligned)
    bin_size = size / size.new_tensor([ph, pw])  # [K, 2]
    # ceil of a negative size (aligned=True, x2 < x1) means no samples: an all-zero output
    grid = torch.ceil(bin_size).to(torch.int64).clamp(min=0)  # [K, 2] (gh, gw)
    gh, gw = grid[:, 0], grid[:, 1]
    y_idx, y_w, y_first, roi_of_y = _adaptive_axis(
        start[:, 0], bin_size[:, 0], gh, ph, height, index_dtype
    )
    x_idx, x_w, x_first, _ = _adaptive_axis(start[:, 1], bin_size[:, 1], gw, pw, width, index_dtype)
    per_bin = gh * gw  # [K] samples in each bin of RoI k
    image_base = rois[:, 0].to(index_dtype) * (height * width)
    y_rows = image_base[roi_of_y][:, None] + y_idx * width  # [Ly, 2]
    y_w = y_w / per_bin[roi_of_y].to(y_w.dtype)[:, None]  # fold in 1 / (gh * gw)
    bins = torch.arange(ph * pw, device=rois.device)
    bag_y = y_first[:, None] + (bins // pw)[None, :] * gh[:, None]  # [K, ph*pw]
    bag_x = x_first[:, None] + (bins % pw)[None, :] * gw[:, None]  # [K, ph*pw]
    bags = torch.stack(
        [bag_y, bag_x, gw[:, None].expand_as(bag_y), per_bin[:, None].expand_as(bag_y)], dim=-1
    ).reshape(-1, 4)  # [K*ph*pw, 4]
    return AdaptiveSamples(y_rows, y_w, x_idx, x_w, bags)


def bag_samples(samples: AdaptiveSamples, bags: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rows, weights and offsets of ``embedding_bag`` for some bags (variable lengths).

    Args:
        samples: the corners of all RoIs (:func:`adaptive_grid_bags`).
        bags: [B, 4] rows of ``samples.bags``, consecutive bags.

    Returns:
        (rows, weights, offsets): rows and weights [T * 4] list the 4 corners of the T samples
        of these bags, bag after bag, each bag's samples ordered (gy, gx); offsets [B] say where
        each bag starts in ``rows``.
    """
    bag_size = bags[:, 3]  # [B]
    bag_first = torch.cumsum(bag_size, 0) - bag_size  # [B] where each bag starts among T
    info = torch.cat([bags[:, :3], bag_first[:, None]], dim=1)  # [B, 4]
    total = int(bag_size.sum())  # sync: the number of samples decides the size of the result
    # one gather copies each bag's 4 numbers to all of its samples
    per_sample = info[_owners(bag_size, total)]  # [T, 4]
    local = torch.arange(total, device=bags.device) - per_sample[:, 3]  # [T]
    gy, gx = local // per_sample[:, 2], local % per_sample[:, 2]
    y_at, x_at = per_sample[:, 0] + gy, per_sample[:, 1] + gx  # [T] indices into the lists
    # corner-major [2, T] gathers then one stack: 1-D ops on T, no broadcast over 2 x 2 dims
    y_lo_hi = samples.y_rows.T.index_select(1, y_at)  # [2, T]
    x_lo_hi = samples.x_index.T.index_select(1, x_at)  # [2, T]
    wy = samples.y_weights.T.index_select(1, y_at)  # [2, T]
    wx = samples.x_weights.T.index_select(1, x_at)  # [2, T]
    corners = [(cy, cx) for cy in range(2) for cx in range(2)]
    rows = torch.stack([y_lo_hi[cy] + x_lo_hi[cx] for cy, cx in corners], dim=1)  # [T, 4]
    weights = torch.stack([wy[cy] * wx[cx] for cy, cx in corners], dim=1)  # [T, 4]
    return rows.reshape(-1), weights.reshape(-1), (4 * bag_first).to(rows.dtype)


def _bag_chunks(bag_size: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive ranges of bags with about ``budget`` samples each (at least one bag).

    A range holds the bags that end within one multiple of the budget, so it has at most
    ``budget`` samples plus those of its first bag. Always returns at least one range.
    """
    ends = torch.cumsum(bag_size, 0)  # [B] samples up to the end of each bag
    total = int(ends[-1]) if len(ends) else 0  # sync: the sizes decide the chunks
    if total <= budget:
        return [(0, len(bag_size))]
    marks = torch.arange(1, -(-total // budget), device=ends.device) * budget
    cuts = torch.searchsorted(ends, marks, right=True).tolist()  # sync: bags before each mark
    bounds = sorted({0, *cuts, len(bag_size)})
    return list(zip(bounds[:-1], bounds[1:]))


def _check_rois(input: Tensor, rois: Tensor, values: bool = True) -> None:
    """Raise ValueError unless ``rois`` [K, 5] match ``input`` and hold usable numbers.

    One host synchronisation per call (skipped for K = 0, or with ``values=False`` when the
    caller has checked the values itself): whether to raise depends on the values. It checks
    that batch indices are integers of existing images (a bad one would read another image's
    rows) and that coordinates are finite (a NaN or inf turns into a garbage table row or into
    a sample count of zero or 2**63). Under ``torch.jit.trace`` or
    ``torch.compile`` this branch on data is baked in or breaks the graph.
    """
    if rois.dtype != input.dtype:
        raise ValueError(f"boxes must have the input's dtype {input.dtype}, got {rois.dtype}")
    if rois.device != input.device:
        raise ValueError(f"boxes must be on the input's device {input.device}, got {rois.device}")
    if rois.shape[0] == 0 or not values:  # values=False: the caller checked them already
        return
    ids = rois[:, 0]
    bad = (ids < 0) | (ids >= input.shape[0]) | (ids != ids.floor())  # NaN != NaN: bad too
    flags = torch.stack([bad.any(), torch.isfinite(rois[:, 1:]).all()])
    bad_ids, finite = flags.tolist()  # sync: one transfer for both checks
    if bad_ids:
        raise ValueError(
            f"boxes' batch indices must be integers in [0, {input.shape[0] - 1}], "
            f"got {ids[bad][:5].tolist()}"
        )
    if not finite:
        bad_rows = (~torch.isfinite(rois[:, 1:])).any(dim=1).nonzero().squeeze(1)
        raise ValueError(
            f"boxes must have finite coordinates (no NaN or inf), got rows "
            f"{bad_rows[:5].tolist()}: {rois[bad_rows[:5]].tolist()}"
        )


class _Chunk(NamedTuple):
    """Consecutive bags (bins) whose rows and weights are built at once (see :func:`_chunks`)."""

    first: int  #: global index of the first bag: RoI * ph * pw + bin
    count: int  #: number of bags
    #: builds (rows, weights, offsets), i.e. rows and weights [count, bag] with offsets None
    #: (fixed grid), or flat [T * 4] with offsets [count] (adaptive grid, see bag_samples)
    bags: Callable[[], tuple[Tensor, Tensor, Tensor | None]]


def _chunks(
    rois: Tensor,
    shape: tuple[int, int],
    out: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    index_dtype: torch.dtype,
    budget: int,
) -> list[_Chunk]:
    """The bags of all RoIs, split into chunks of about ``budget`` samples each."""
    (ph, pw), k = out, rois.shape[0]
    bins = ph * pw
    if k == 0 or bins == 0:
        return []
    if sampling_ratio > 0:
        grid = sampling_ratio
        step = max(1, budget // (bins * grid * grid))  # RoIs per chunk
        return [
            _Chunk(
                i * bins,
                min(step, k - i) * bins,
                lambda r=rois[i : i + step]: (
                    *fixed_grid_bags(r, shape, out, grid, spatial_scale, aligned, index_dtype),
                    None,
                ),
            )
            for i in range(0, k, step)
        ]
    samples = adaptive_grid_bags(rois, shape, out, spatial_scale, aligned, index_dtype)
    return [
        _Chunk(i, j - i, lambda b=samples.bags[i:j]: bag_samples(samples, b))
        for i, j in _bag_chunks(samples.bags[:, 3], budget)
    ]


def _channel_slices(channels: int, per_channel: int, minimum: int) -> list[tuple[int, int]]:
    """Channel ranges whose temporaries (``per_channel`` elements per channel) fit WORK_BUDGET.

    Widths are multiples of ``minimum`` (a multiple of 16; but for the last range), never
    narrower: every channel is then summed by the same vector lanes of ``embedding_bag`` as
    without slicing, so the result does not depend on the slicing, bit for bit.
    """
    width = WORK_BUDGET // max(per_channel, 1)
    width = max(minimum, width - width % minimum)
    return [(c, min(c + width, channels)) for c in range(0, channels, width)]


class _Tables:
    """Channel slices of the features as channels-last tables [N*H*W, dc], made on demand.

    Rows must be contiguous: for N = 1 a reshape alone is a strided view (channel stride H*W),
    and gathering such rows is several times slower. Every slice is copied into one buffer,
    allocated once and refilled (a fresh allocation per slice can land in fresh pages); a
    channels_last input of the compute dtype needs no copy when one slice holds every channel.
    """

    def __init__(self, input: Tensor, dtype: torch.dtype) -> None:
        self.input, self.dtype = input, dtype
        self.buffer = input.new_empty(0, dtype=dtype)
        self.channels, self.table = None, None

    def __call__(self, channels: tuple[int, int]) -> Tensor:
        """[N*H*W, c1 - c0] channels c0..c1, valid until the next call."""
        if channels != self.channels:
            c0, c1 = channels
            nhwc = self.input[:, c0:c1].permute(0, 2, 3, 1)  # [N, H, W, c1 - c0]
            if not (nhwc.is_contiguous() and nhwc.dtype == self.dtype):
                if self.buffer.numel() < nhwc.numel():
                    self.table = None
                    self.buffer = torch.empty(nhwc.numel(), dtype=self.dtype, device=nhwc.device)
                nhwc = self.buffer[: nhwc.numel()].view(nhwc.shape).copy_(nhwc)
            self.channels, self.table = channels, nhwc.reshape(-1, c1 - c0)
        return self.table


def _bin_runs(first: int, count: int, bins: int):
    """Split bags first..first+count (RoI * bins + bin) into runs of whole or partial RoIs.

    Yields (at, (k0, k1), (b0, b1)): the run starts at bag ``first + at`` and covers bins
    b0..b1 of RoIs k0..k1 (several RoIs only with all their bins).
    """
    at, end = 0, count
    while at < end:
        k, b = divmod(first + at, bins)
        if b == 0 and end - at >= bins:  # whole RoIs
            n = (end - at) // bins
            yield at, (k, k + n), (0, bins)
            at += n * bins
        else:  # the tail of one RoI, or its head at the end of the chunk
            n = min(bins - b, end - at)
            yield at, (k, k + 1), (b, b + n)
            at += n


def _write_bins(out: Tensor, pooled: Tensor, first: int, c0: int) -> None:
    """Copy ``pooled`` [count, dc] into ``out`` [K, D, ph*pw], from bag ``first`` and channel c0."""
    dc = pooled.shape[1]
    for at, (k0, k1), (b0, b1) in _bin_runs(first, pooled.shape[0], out.shape[2]):
        run = pooled[at : at + (k1 - k0) * (b1 - b0)].view(k1 - k0, b1 - b0, dc)
        out[k0:k1, c0 : c0 + dc, b0:b1].copy_(run.transpose(1, 2))


def _read_bins(grad: Tensor, chunk: _Chunk, channels: tuple[int, int], buffer: Tensor) -> Tensor:
    """[count, dc] the gradient of a chunk's bags, channels c0..c1, from ``grad`` [K, D, ph*pw].

    Written into the start of ``buffer`` (flat, at least count * dc elements of the compute
    dtype; a float16 ``grad`` is converted on the way).
    """
    c0, c1 = channels
    rows = buffer[: chunk.count * (c1 - c0)].view(chunk.count, c1 - c0)
    for at, (k0, k1), (b0, b1) in _bin_runs(chunk.first, chunk.count, grad.shape[2]):
        run = rows[at : at + (k1 - k0) * (b1 - b0)].view(k1 - k0, b1 - b0, c1 - c0)
        run.copy_(grad[k0:k1, c0:c1, b0:b1].transpose(1, 2))
    return rows


def _pool(input: Tensor, chunks: list[_Chunk], out: Tensor, dtype: torch.dtype) -> None:
    """Fill ``out`` [K, D, ph*pw] with every bag's weighted sum of table rows (the forward).

    For each chunk of bags, the table is made channel slice by channel slice, and each slice's
    bags are pooled in blocks (fixed grid: of about WORK_BUDGET / 4 results), so neither a
    full channels-last copy of ``input`` nor a [K*ph*pw, D] result is ever held. With several
    chunks and several slices the slices are copied again for every chunk.
    """
    n, channels, height, width = input.shape
    bins = out.shape[2]
    tables = _Tables(input, dtype)
    block_budget = WORK_BUDGET // 4  # elements of one block of results
    # Large temporaries are kept until their successor of the same size is made: allocated
    # in between, the next chunk's bags would split the freed block, and the heap would grow.
    pooled = None
    for chunk in chunks:
        rows = weights = None
        rows, weights, offsets = chunk.bags()
        fixed = offsets is None  # 2-D rows and weights: any range of bags is a view
        per_channel = min(chunk.count, block_budget // MIN_CHANNELS) if fixed else chunk.count
        slices = _channel_slices(channels, n * height * width + per_channel, MIN_CHANNELS)
        block = max(1, block_budget // (slices[0][1] - slices[0][0])) if fixed else chunk.count
        if fixed and block > bins:
            block -= block % bins  # whole RoIs: one strided copy per block into ``out``
        for sl in slices:
            table = tables(sl)
            for b0 in range(0, chunk.count, block):
                b1 = min(b0 + block, chunk.count)
                pooled = None  # freed just before its successor, which can take its place
                pooled = F.embedding_bag(
                    rows[b0:b1] if fixed else rows,
                    table,
                    offsets,
                    mode="sum",
                    per_sample_weights=weights[b0:b1] if fixed else weights,
                )  # [b1 - b0, dc]
                _write_bins(out, pooled, chunk.first + b0, sl[0])


def _transposed_bags(chunk: _Chunk, table_rows: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """The transpose of a chunk's gather: for every table row, the bags (and weights) reading it.

    Returns (bags, weights, starts), or None when the chunk has no samples: ``bags`` and
    ``weights`` [E] list the chunk's E (bag, weight) pairs sorted by table row (stably: in bag
    order within a row), ``starts`` [N*H*W] where each table row's pairs start. Then
    ``embedding_bag(bags, gradient of the bags, starts, per_sample_weights=weights)`` is the
    gradient of the table, one bag per table row. Temporaries are freed as soon as possible:
    the sort holds about 24 bytes per pair.
    """
    rows, weights, offsets = chunk.bags()
    total = rows.numel()
    if total == 0:
        return None
    sorted_rows, order = torch.sort(rows.reshape(-1), stable=True)  # [E] each
    per_bag = rows.shape[1] if offsets is None else 0  # fixed grid: bags of equal length
    del rows
    weights = weights.reshape(-1)[order]
    starts = torch.searchsorted(
        sorted_rows, torch.arange(table_rows, device=order.device, dtype=sorted_rows.dtype)
    )  # [N*H*W]
    del sorted_rows
    if offsets is None:
        bags = order.div_(per_bag, rounding_mode="floor")
    else:
        sizes = torch.diff(offsets, append=offsets.new_tensor([total]))  # [count]
        bags = _owners(sizes, total)[order]
    del order
    dtype = torch.int32 if max(total, chunk.count) < torch.iinfo(torch.int32).max else torch.int64
    return bags.to(dtype), weights, starts.to(dtype)


def _scatter(
    grad: Tensor,
    chunks: list[_Chunk],
    input_shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    grad_dtype: torch.dtype,
) -> Tensor:
    """[N, D, H, W] the gradient of the features: every bag's gradient spread over its rows.

    Per chunk of bags the gather is transposed (:func:`_transposed_bags`); then, channel slice
    by channel slice, one ``embedding_bag`` gathers each table row's weighted bag gradients
    ([N*H*W, dc]) and the slice is copied (first chunk) or added into the result.
    """
    n, channels, height, width = input_shape
    table_rows = n * height * width
    # float16 gradients of several chunks are summed in float32 and rounded once at the end
    acc_dtype = dtype if len(chunks) > 1 else grad_dtype
    result = grad.new_empty(input_shape, dtype=acc_dtype)
    if not chunks:
        return result.zero_().to(grad_dtype)
    most = max(c.count for c in chunks)
    slices = _channel_slices(channels, table_rows + most, GRAD_MIN_CHANNELS)
    buffer = grad.new_empty(most * slices[0][1], dtype=dtype)  # one chunk's bag gradients
    fresh, table_grad = True, None  # table_grad: kept until its successor, as in _pool
    for chunk in chunks:
        transposed = _transposed_bags(chunk, table_rows)
        if transposed is None:
            continue
        bags, bag_weights, starts = transposed
        del transposed
        for sl in slices:
            bag_grad = _read_bins(grad, chunk, sl, buffer)  # [count, dc]
            table_grad = None
            table_grad = F.embedding_bag(
                bags, bag_grad, starts, mode="sum", per_sample_weights=bag_weights
            )  # [N*H*W, dc]
            target = result[:, sl[0] : sl[1]]  # [N, dc, H, W] <- [N, H, W, dc]
            update = table_grad.view(n, height, width, -1).permute(0, 3, 1, 2)
            target.copy_(update) if fresh else target.add_(update)
            del update  # a view: it would keep table_grad alive past its successor
        fresh = False
        del bags, bag_weights, starts
    if fresh:
        result.zero_()
    return result.to(grad_dtype)


class _RoIAlignFunction(torch.autograd.Function):
    """The pooling with its own backward: only the RoIs are saved, the bags are rebuilt."""

    @staticmethod
    def forward(ctx, input, rois, out, spatial_scale, sampling_ratio, aligned, dtype, result_dtype):
        """[K, D, ph, pw] in ``result_dtype``, computed in ``dtype``; saves only ``rois``."""
        n, channels, height, width = input.shape
        index_dtype = _index_dtype(n, (height, width))
        geometry = ((height, width), out, spatial_scale, sampling_ratio, aligned, index_dtype)
        ctx.save_for_backward(rois)
        ctx.geometry, ctx.dtypes, ctx.input_shape = geometry, (dtype, input.dtype), input.shape
        result = input.new_empty((rois.shape[0], channels, *out), dtype=result_dtype)
        bins = result.view(rois.shape[0], channels, out[0] * out[1])  # [K, D, ph*pw]
        _pool(input, _chunks(rois, *geometry, SAMPLE_BUDGET), bins, dtype)
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """The features' gradient [N, D, H, W]; none for the RoIs and the settings."""
        (rois,) = ctx.saved_tensors
        dtype, grad_dtype = ctx.dtypes
        with autocast_off(grad.device.type):
            features = math.prod(ctx.input_shape)
            budget = min(GRAD_SAMPLE_BUDGET, max(4096, features // GRAD_ELEMENTS_PER_SAMPLE))
            chunks = _chunks(rois, *ctx.geometry, budget)
            (ph, pw) = ctx.geometry[1]
            grad = grad.reshape(grad.shape[0], grad.shape[1], ph * pw)  # [K, D, ph*pw]
            grad_input = _scatter(grad, chunks, tuple(ctx.input_shape), dtype, grad_dtype)
        return grad_input, None, None, None, None, None, None, None


class SampleGrid(NamedTuple):
    """Where :func:`roi_align` samples one RoI (see :func:`sample_grid`)."""

    corners: tuple[float, float, float, float]  #: (x1, y1, x2, y2) on the feature grid
    ys: Tensor  #: [ph * gh] y coordinates of the sample rows, bin after bin
    xs: Tensor  #: [pw * gw] x coordinates of the sample columns, bin after bin


def sample_grid(
    box: Tensor | tuple[float, float, float, float],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> SampleGrid:
    """The sample points of one box, computed by the same geometry that :func:`roi_align` uses.

    Every pair (y in ``ys``, x in ``xs``) is one bilinear sample; a bin averages its gh x gw
    samples (gh = ``sampling_ratio``, or ceil(bin height) when it is <= 0). For drawing and
    teaching: the pooling itself never lists the points one by one.

    Args:
        box: (x1, y1, x2, y2) in input-image pixels; the other arguments as in :func:`roi_align`.
    """
    ph, pw = _pair(output_size)
    box = torch.as_tensor(box, dtype=torch.float64).reshape(1, 4)
    rois = torch.cat([box.new_zeros(1, 1), box], dim=1)  # [1, 5]
    start, size = _roi_geometry(rois, spatial_scale, aligned)  # [1, 2] (y, x) each
    bin_size = size / size.new_tensor([ph, pw])
    if sampling_ratio > 0:
        grid = (sampling_ratio, sampling_ratio)
    else:  # adaptive: as in adaptive_grid_bags
        gh, gw = torch.ceil(bin_size).to(torch.int64).clamp(min=0)[0].tolist()
        grid = (gh, gw)
    coords = []
    for axis, (bins, g) in enumerate(zip((ph, pw), grid)):
        steps = torch.arange(g, dtype=box.dtype)
        bin_index = torch.arange(bins, dtype=box.dtype)[:, None]
        pos = _sample_positions(start[0, axis], bin_size[0, axis], bin_index, float(g), steps)
        coords.append(pos.reshape(-1))  # [bins * g]
    (y1, x1), (h, w) = start[0].tolist(), size[0].tolist()
    return SampleGrid((x1, y1, x1 + w, y1 + h), coords[0], coords[1])


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign (Mask R-CNN, Sec. 3), same semantics as ``torchvision.ops.roi_align``.

    Args:
        input: [N, D, H, W] features (any memory format).
        boxes: [K, 5] (batch index, x1, y1, x2, y2) or a list of [L_i, 4] per image, in image
            pixels; ``spatial_scale`` maps them onto the feature grid.
        output_size: (ph, pw) or an int for both.
        spatial_scale: feature pixels per image pixel (e.g. 1/16).
        sampling_ratio: samples per bin along each axis; <= 0 uses ceil(roi size / output size)
            for each RoI and axis.
        aligned: shift boxes by -0.5 feature pixel so that samples hit pixel centres.

    Returns:
        [K, D, ph, pw] contiguous, the average of each bin's bilinear samples, in the dtype of
        ``input``.

    float16 and bfloat16 inputs are computed in float32 (sample positions, sums and the
    gradient's scatter) and the result is cast back, as torchvision does under autocast. Under
    autocast, like torchvision's autocast kernel, float16/bfloat16/float32 ``input`` and
    ``boxes`` are cast to float32 (float64 is left alone) and the result has ``input``'s dtype.

    Memory: besides the output (and, in the backward, the gradient of ``input``) the
    temporaries stay bounded, whatever K. The forward builds the bags for chunks of about
    SAMPLE_BUDGET samples, 4 corners x (index + weight) = 32 bytes per sample in float32 (6.3 MB
    for 1000 RoIs, 7 x 7 bins, 2 x 2 samples), and per slice of dc channels holds the
    channels-last copy of that slice [N*H*W, dc] and a block of results (WORK_BUDGET elements,
    but at least MIN_CHANNELS channels: 7 MB for a 200 x 272 map). The backward saves only the
    RoIs: it rebuilds the bags in smaller chunks (GRAD_SAMPLE_BUDGET), sorts their (row, bag)
    pairs (about 96 bytes per sample while sorting, 32 after) and holds, per slice of at least
    GRAD_MIN_CHANNELS channels, the table's gradient [N*H*W, dc] and the chunk's bin gradients.
    With several chunks and several slices, the forward copies every slice once per chunk and
    the backward adds every chunk into the gradient (one more pass over it per chunk). With the
    adaptive ratio the sample count follows the RoI area in feature pixels, about h*w per RoI.
    """
    return _roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)


def _roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    check_values: bool = True,
) -> Tensor:
    """:func:`roi_align`; ``check_values=False`` skips its one host read (the batch indices
    and the finiteness of the boxes), for a caller that has checked them already (the
    multi-scale pooler checks every level's boxes with one read)."""
    _check_input(input)
    out = _pair(output_size)
    spatial_scale = _real("spatial_scale", spatial_scale)
    sampling_ratio = _integer("sampling_ratio", sampling_ratio, "an int (<= 0: adaptive)")
    rois = convert_boxes_to_roi_format(boxes)
    result_dtype = input.dtype
    input, rois = autocast_float32(input, rois)  # what torchvision's autocast kernel does
    _check_rois(input, rois, values=check_values)
    # sums of 4 * gh * gw terms lose digits in 16 bits: pool float16/bfloat16 in float32
    compute_dtype = torch.float32 if input.dtype in LOW_PRECISION else input.dtype
    rois = rois.to(compute_dtype)
    n, c, height, width = input.shape
    num_rois = rois.shape[0]
    if c == 0:  # as torchvision: an empty result, still part of the graph
        return input.reshape(-1)[:0].reshape(num_rois, 0, *out).to(result_dtype)
    if n * height * width == 0:  # nothing to sample from
        return input.new_zeros((num_rois, c, *out), dtype=result_dtype)
    with autocast_off(input.device.type):  # the dtypes are settled above
        return _RoIAlignFunction.apply(
            input,
            rois.detach(),  # RoIs get no gradient, as in torchvision
            out,
            spatial_scale,
            sampling_ratio,
            aligned,
            compute_dtype,
            result_dtype,
        )  # [K, D, ph, pw]


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` (``torchvision.ops.RoIAlign``); holds no parameters."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        """Pool [K, D, ph, pw] features of ``rois`` ([K, 5] or a list of [L_i, 4])."""
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, "
            f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, "
            f"aligned={self.aligned})"
        )
