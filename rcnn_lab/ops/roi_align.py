"""RoIAlign in plain PyTorch (Mask R-CNN, He et al. 2017, Sec. 3 "RoIAlign").

Every RoI is cut into ``ph x pw`` bins; each bin averages ``gh x gw`` bilinearly interpolated
samples of the feature map. The four corners of every sample, with their bilinear weights, are
gathered from a channels-last table of features by ``F.embedding_bag(mode="sum")``: one bag per
(RoI, bin), ``4 * gh * gw`` rows per bag, each row weighted by ``bilinear weight / (gh * gw)``.
embedding_bag's backward scatters the output gradient into the table, which is the feature
gradient; RoIs get no gradient (as in torchvision).

Shapes: N images, C channels, H x W feature map, K RoIs, ph x pw output bins (pooled height and
width), gh x gw sampling grid per bin, 4 bilinear corners per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: aligned=True subtracts half a feature pixel, since box coordinates count pixel edges, while
#: bilinear sampling reads pixel i at coordinate i (its centre).
HALF_PIXEL = 0.5
#: aligned=False (the legacy behaviour) forces RoIs to be at least one feature pixel wide.
LEGACY_MIN_ROI_SIZE = 1.0
#: A sample farther than one pixel outside the map contributes nothing (torchvision's rule).
OUTSIDE_MARGIN = 1.0


def _check_input(input: Tensor) -> None:
    if not isinstance(input, Tensor) or input.dim() != 4:
        seen = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input must be a [N, C, H, W] tensor, got {seen}")
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


def _pair(output_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    if len(output_size) != 2:
        raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
    return int(output_size[0]), int(output_size[1])


def _roi_geometry(rois: Tensor, spatial_scale: float, aligned: bool) -> tuple[Tensor, Tensor]:
    """Start corners and sizes of the RoIs on the feature grid: ([K, 2] (y, x), [K, 2] (h, w))."""
    offset = HALF_PIXEL if aligned else 0.0
    start = rois[:, [2, 1]] * spatial_scale - offset  # [K, 2] (y1, x1)
    end = rois[:, [4, 3]] * spatial_scale - offset  # [K, 2] (y2, x2)
    size = end - start
    if not aligned:
        size = size.clamp(min=LEGACY_MIN_ROI_SIZE)
    return start, size


def _corners(pos: Tensor, size: int, index_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
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


def _fixed_grid_bags(
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
        rows: [K * ph * pw, (grid * 2) ** 2] indices into the [N*H*W, C] table.
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
        index, weight = _corners(pos, length, index_dtype)  # [K, bins, grid, 2]
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


def _repeat_each(values: Tensor, times: int) -> Tensor:
    """[K] -> [K * times], every value repeated ``times`` times in place (a broadcast copy)."""
    return values[:, None].expand(-1, times).reshape(-1)


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
    index, weight = _corners(pos, size, index_dtype)
    return index, weight, torch.cumsum(counts, 0) - counts, owner


def _bag_samples(
    y_first: Tensor, x_first: Tensor, gh: Tensor, gw: Tensor, out: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Which y and x sample every sample of every bag combines (variable-length bags).

    Args:
        y_first, x_first: [K] where RoI k's samples start in the y and x sample lists.
        gh, gw: [K] samples per bin along y and x.
    Returns:
        y_at, x_at: [T] indices into the y and x sample lists, bag after bag, each bag's
            samples ordered (gy, gx).
        bag_first: [K * ph * pw] where each bag starts among the T samples.
    """
    ph, pw = out
    bins = torch.arange(ph * pw, device=gh.device)
    bag_y = (y_first[:, None] + (bins // pw)[None, :] * gh[:, None]).reshape(-1)  # [K*ph*pw]
    bag_x = (x_first[:, None] + (bins % pw)[None, :] * gw[:, None]).reshape(-1)  # [K*ph*pw]
    bag_size = _repeat_each(gh * gw, ph * pw)  # [K*ph*pw]
    bag_first = torch.cumsum(bag_size, 0) - bag_size
    info = torch.stack([bag_y, bag_x, _repeat_each(gw, ph * pw), bag_first], dim=1)
    total = int(bag_size.sum())  # sync: the number of samples decides the size of the result
    # one gather copies each bag's 4 numbers to all of its samples
    per_sample = info[_owners(bag_size, total)]  # [T, 4]
    local = torch.arange(total, device=gh.device) - per_sample[:, 3]  # [T]
    gy, gx = local // per_sample[:, 2], local % per_sample[:, 2]
    return per_sample[:, 0] + gy, per_sample[:, 1] + gx, bag_first


def _adaptive_grid_bags(
    rois: Tensor,
    shape: tuple[int, int],
    out: tuple[int, int],
    scale: float,
    aligned: bool,
    index_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rows, weights and offsets of variable-length bags (grid = ceil(roi size / output size)).

    Returns:
        rows, weights: [T * 4], the corners of all T samples, bag after bag.
        offsets: [K * ph * pw] where each (RoI, bin) bag starts in ``rows``.
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
    y_at, x_at, bag_first = _bag_samples(y_first, x_first, gh, gw, out)
    # corner-major [2, T] gathers then one stack: 1-D ops on T, no broadcast over 2 x 2 dims
    y_lo_hi, x_lo_hi = y_rows.T.index_select(1, y_at), x_idx.T.index_select(1, x_at)  # [2, T]
    wy, wx = y_w.T.index_select(1, y_at), x_w.T.index_select(1, x_at)  # [2, T]
    corners = [(cy, cx) for cy in range(2) for cx in range(2)]
    rows = torch.stack([y_lo_hi[cy] + x_lo_hi[cx] for cy, cx in corners], dim=1)  # [T, 4]
    weights = torch.stack([wy[cy] * wx[cx] for cy, cx in corners], dim=1)  # [T, 4]
    return rows.reshape(-1), weights.reshape(-1), (4 * bag_first).to(index_dtype)


def _check_rois(input: Tensor, rois: Tensor) -> None:
    if rois.dtype != input.dtype:
        raise ValueError(f"boxes must have the input's dtype {input.dtype}, got {rois.dtype}")
    if rois.device != input.device:
        raise ValueError(f"boxes must be on the input's device {input.device}, got {rois.device}")
    if rois.shape[0] == 0:
        return
    ids = rois[:, 0]
    # one sync: a bad batch index would otherwise read another image's rows without an error
    bad = (ids < 0) | (ids >= input.shape[0]) | (ids != ids.floor())
    if bool(bad.any()):
        raise ValueError(
            f"boxes' batch indices must be integers in [0, {input.shape[0] - 1}], "
            f"got {ids[bad][:5].tolist()}"
        )


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
        input: [N, C, H, W] features (any memory format).
        boxes: [K, 5] (batch index, x1, y1, x2, y2) or a list of [L_i, 4] per image, in image
            pixels; ``spatial_scale`` maps them onto the feature grid.
        output_size: (ph, pw) or an int for both.
        spatial_scale: feature pixels per image pixel (e.g. 1/16).
        sampling_ratio: samples per bin along each axis; <= 0 uses ceil(roi size / output size)
            for each RoI and axis.
        aligned: shift boxes by -0.5 feature pixel so that samples hit pixel centres.

    Returns:
        [K, C, ph, pw] contiguous, the average of each bin's bilinear samples.

    Memory: the forward holds 4 corners x (index + weight) per sample, i.e. K*ph*pw*gh*gw*32
    bytes in float32 (3.2 MB for 512 RoIs, 7 x 7 bins, 2 x 2 samples), besides the channels-last
    copy of ``input`` and the output. With the adaptive ratio the sample count follows the RoI
    area in feature pixels (about h*w per RoI), so huge RoIs on a fine map cost much memory.
    """
    _check_input(input)
    rois = convert_boxes_to_roi_format(boxes)
    _check_rois(input, rois)
    out = _pair(output_size)
    n, c, height, width = input.shape
    num_rois = rois.shape[0]
    if n * height * width == 0:  # nothing to sample from
        return input.new_zeros((num_rois, c, *out))
    # rows must be contiguous: for N = 1 the reshape alone is a strided view (C stride H*W),
    # and gathering such rows is several times slower; channels_last input costs no copy
    table = input.permute(0, 2, 3, 1).reshape(n * height * width, c).contiguous()  # [N*H*W, C]
    index_dtype = _index_dtype(n, (height, width))
    with torch.no_grad():  # RoIs get no gradient, as in torchvision
        rois = rois.detach()
        if sampling_ratio > 0:
            rows, weights = _fixed_grid_bags(
                rois, (height, width), out, sampling_ratio, spatial_scale, aligned, index_dtype
            )
            offsets = None
        else:
            rows, weights, offsets = _adaptive_grid_bags(
                rois, (height, width), out, spatial_scale, aligned, index_dtype
            )
    pooled = F.embedding_bag(
        rows, table, offsets, mode="sum", per_sample_weights=weights
    )  # [K*ph*pw, C]
    # a 3-D transpose copies about 3x faster than the equivalent 4-D permute
    pooled = pooled.reshape(num_rois, out[0] * out[1], c).transpose(1, 2).contiguous()
    return pooled.reshape(num_rois, c, *out)  # [K, C, ph, pw]


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
        """Pool [K, C, ph, pw] features of ``rois`` ([K, 5] or a list of [L_i, 4])."""
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, "
            f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, "
            f"aligned={self.aligned})"
        )
