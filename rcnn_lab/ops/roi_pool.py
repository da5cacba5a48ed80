"""RoIPool in plain PyTorch (Fast R-CNN, Girshick 2015, Sec. 2.1 "The RoI pooling layer").

Max-pools every RoI of a feature map into a fixed grid, as ``torchvision.ops.roi_pool`` does.
A RoI is snapped to whole feature pixels and cut into ``ph x pw`` bins whose edges are rounded
outwards; each bin keeps the maximum of its pixels. Every bin is one bag of ``embedding_bag``'s
"max" mode over a channels-last table of the features: a bag lists its pixels row by row, and
the mode keeps the first maximum in that order, as the reference kernels do. The backward adds
each output gradient to that one pixel, with one ``scatter_add_``. RoIs get no gradient.

Shapes: N images, D channels, H x W feature map, K RoIs, ph x pw output bins (pooled height and
width), B = K*ph*pw bins in all, T pixels in all bins together.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch
from torch import Tensor, nn

from rcnn_lab.ops.roi_align import _owners, convert_boxes_to_roi_format

#: A non-empty bin starts its running maximum at -FLT_MAX (Caffe's and torchvision's kernels),
#: so a bin holding only NaN or values <= -FLT_MAX (-inf) gives -FLT_MAX and sends no gradient.
#: In a float16 kernel the constant itself is -inf.
MAX_FLOOR = -torch.finfo(torch.float32).max
#: A RoI snapped to the grid keeps at least one pixel per side ("force malformed RoIs to 1x1").
MIN_ROI_PIXELS = 1
#: The reference kernels hold the scaled, rounded box corners in a C int.
INT_LIMIT = 2**31
#: torch.embedding_bag's code for its "max" mode (0 sum, 1 mean, 2 max).
EMBEDDING_BAG_MAX = 2


def _output_size(output_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(ph, pw) from an int or a pair of ints, read as ``torch.nn.modules.utils._pair`` does."""

    def is_int(v: object) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    pair = (output_size, output_size) if is_int(output_size) else output_size
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"output_size must be an int or a pair of ints, got {output_size!r}")
    if not all(is_int(v) for v in pair):
        raise TypeError(f"output_size must hold integers, got {output_size!r}")
    if min(pair) < 0:
        raise ValueError(f"output_size must not be negative, got {output_size!r}")
    return int(pair[0]), int(pair[1])


def _check_arguments(input: Tensor, spatial_scale: float) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"input must be [N, D, H, W], got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {input.dtype}")
    if not isinstance(spatial_scale, numbers.Real) or not math.isfinite(spatial_scale):
        raise ValueError(f"spatial_scale must be a finite number, got {spatial_scale!r}")


def _autocast_enabled(device_type: str) -> bool:
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def _compute_dtype(input: Tensor, rois: Tensor) -> torch.dtype:
    """The dtype that the box arithmetic and the maximum run in.

    torchvision's autocast pools float16/bfloat16 as float32 and casts the output back (it
    registers that for CUDA only; on CPU it pools float16 in float16 and refuses bfloat16).
    Here any device does so under autocast, and bfloat16 always does.
    """
    autocast = _autocast_enabled(input.device.type)

    def cast(dtype: torch.dtype) -> torch.dtype:
        to_float = dtype == torch.bfloat16 or (autocast and dtype != torch.float64)
        return torch.float32 if to_float else dtype

    if not rois.is_floating_point():
        raise TypeError(f"boxes must be floating-point, got dtype {rois.dtype}")
    if cast(rois.dtype) != cast(input.dtype):
        raise ValueError(f"boxes must have the input's dtype {input.dtype}, got {rois.dtype}")
    if rois.device != input.device:
        raise ValueError(f"boxes must be on the input's device {input.device}, got {rois.device}")
    return cast(input.dtype)


def _round_half_away(v: Tensor) -> Tensor:
    """C's round(): a half goes away from zero (torch.round sends it to the even neighbour)."""
    whole = v.trunc()
    return whole + torch.sign(v) * ((v - whole).abs() >= 0.5)  # v - whole is exact


def _bin_edges(start: Tensor, end: Tensor, bins: int, size: int) -> tuple[Tensor, Tensor]:
    """First and one-past-last pixel of every bin along one axis, clipped to [0, size].

    Args:
        start, end: [K] RoI corners on the feature grid, in the compute dtype.
    Returns:
        low, high: [K, bins] int64; a bin is empty where high <= low.
    """
    first, last = _round_half_away(start).long(), _round_half_away(end).long()  # [K]
    length = (last - first + 1).clamp(min=MIN_ROI_PIXELS)  # [K] whole pixels
    # in the compute dtype, rounded where the reference kernels round: i * (length / bins)
    bin_size = length.to(start.dtype) / bins  # [K]
    edges = torch.arange(bins + 1, device=start.device, dtype=start.dtype) * bin_size[:, None]
    low = edges[:, :-1].floor().long() + first[:, None]  # [K, bins]
    high = edges[:, 1:].ceil().long() + first[:, None]
    return low.clamp(0, size), high.clamp(0, size)


def _bins(scaled: Tensor, shape: tuple[int, int], out: tuple[int, int], zero_row: int) -> Tensor:
    """Every bin as (pixel count, table row of its top-left pixel, width in pixels).

    Args:
        scaled: [K, 5] (batch index, x1, y1, x2, y2) on the feature grid.
        zero_row: the table row that holds zeros; an empty bin holds that one pixel.
    Returns:
        [B, 3] int64, bins ordered (RoI, bin row, bin column).
    """
    (height, width), (ph, pw) = shape, out
    y_low, y_high = _bin_edges(scaled[:, 2], scaled[:, 4], ph, height)  # [K, ph]
    x_low, x_high = _bin_edges(scaled[:, 1], scaled[:, 3], pw, width)  # [K, pw]
    bin_h = (y_high - y_low).clamp(min=0)[:, :, None]  # [K, ph, 1]
    bin_w = (x_high - x_low).clamp(min=0)[:, None, :]  # [K, 1, pw]
    area = bin_h * bin_w  # [K, ph, pw]
    image_row = scaled[:, 0].long() * (height * width)  # [K]
    top_left = image_row[:, None, None] + y_low[:, :, None] * width + x_low[:, None, :]
    empty = area == 0
    count = area.clamp(min=1)
    top_left = torch.where(empty, zero_row, top_left)
    bin_w = torch.where(empty, 1, bin_w)
    return torch.stack([count, top_left, bin_w], dim=-1).reshape(-1, 3)  # [B, 3]


def _bag_rows(bins: Tensor, total: int, width: int) -> tuple[Tensor, Tensor]:
    """Table rows of all T pixels, bag after bag and row-major inside a bag: [T]; offsets: [B]."""
    count = bins[:, 0]
    first = torch.cumsum(count, 0) - count  # [B] where each bag starts
    info = torch.cat([bins[:, 1:], first[:, None]], dim=1)  # [B, 3]
    per_pixel = info[_owners(count, total)]  # [T, 3] one gather copies a bag's numbers
    local = torch.arange(total, device=bins.device) - per_pixel[:, 2]  # [T] place in its bag
    bin_w = per_pixel[:, 1]
    return per_pixel[:, 0] + (local // bin_w) * width + local % bin_w, first


def _plan(
    input: Tensor, rois: Tensor, out: tuple[int, int], spatial_scale: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor, bool]:
    """Checks ``rois`` and lists the pixels of every bin: (rows [T], offsets [B], clean).

    ``clean`` says that ``input`` has no NaN and nothing <= MAX_FLOOR (the usual case).
    """
    n, _, height, width = input.shape
    rois = rois.detach().to(dtype)
    ids, corners = rois[:, 0], rois[:, 1:]
    # the kernels round the scale to the compute dtype, then multiply in it
    scale = torch.tensor(spatial_scale, dtype=dtype, device=rois.device)
    scaled = torch.cat([ids[:, None], corners * scale], dim=1)  # [K, 5]
    zero_row = n * height * width
    bins = _bins(scaled, (height, width), out, zero_row)  # [B, 3]
    bad_ids = (ids < 0) | (ids >= n) | (ids != ids.trunc())  # [K]
    flags = torch.stack(
        [
            bins[:, 0].sum(),
            bad_ids.any(),
            # catches NaN and inf too
            ~(scaled[:, 1:].abs() < INT_LIMIT).all(),
            (input > _floor(input)).all(),
        ]
    )
    # the one host sync: the pixel count sizes the bags, and bad boxes must raise first
    total, any_bad_id, any_bad_box, clean = flags.tolist()
    if any_bad_id:
        bad = ids[bad_ids][:5].tolist()  # the error path may sync
        raise ValueError(f"boxes' batch indices must be integers in [0, {n - 1}], got {bad}")
    if any_bad_box:
        raise ValueError(
            f"boxes must be finite, with |coordinate * spatial_scale| < 2**31, got "
            f"{corners[~(scaled[:, 1:].abs() < INT_LIMIT).all(1)][:5].tolist()}"
        )
    rows, offsets = _bag_rows(bins, total, width)
    index_dtype = torch.int32 if zero_row < torch.iinfo(torch.int32).max else torch.int64
    return rows.to(index_dtype), offsets.to(index_dtype), bool(clean)


def _floor(like: Tensor) -> Tensor:
    """MAX_FLOOR as a 0-dim tensor of ``like``'s dtype (-inf in float16 and bfloat16)."""
    return torch.tensor(MAX_FLOOR, device=like.device).to(like.dtype)


class _BinMax(torch.autograd.Function):
    """Maximum of every bin; the backward sends each gradient to the first maximum.

    A custom backward: embedding_bag's own one for "max" runs one index_add_ per channel, which
    is several times slower than one scatter_add_ over all of them.
    """

    @staticmethod
    def forward(
        ctx,
        input: Tensor,
        rows: Tensor,
        offsets: Tensor,
        num_rois: int,
        out: tuple[int, int],
        clean: bool,
    ) -> Tensor:
        n, c, height, width = input.shape
        pixels = input.permute(0, 2, 3, 1).reshape(n * height * width, c)  # [N*H*W, D]
        table = torch.cat([pixels, pixels.new_zeros(1, c)])  # [N*H*W + 1, D], last row: zeros
        if not clean:  # the reference scan never picks NaN: it never compares greater
            table.masked_fill_(torch.isnan(table), float("-inf"))
        pooled, _, _, argmax = torch.embedding_bag(
            table, rows, offsets, False, EMBEDDING_BAG_MAX, False, None, False, None
        )  # [B, D] each, argmax: the table row of the first maximum
        if not clean:
            floor = _floor(pooled)
            below = ~(pooled > floor)
            pooled.masked_fill_(below, floor)
            argmax.masked_fill_(below, n * height * width)  # its gradient goes nowhere
        bins = out[0] * out[1]

        def per_roi(bags: Tensor) -> Tensor:  # [B, D] -> [K, D, ph*pw]
            # a 3-D transpose copies faster than the equivalent 4-D permute
            return bags.reshape(num_rois, bins, c).transpose(1, 2).contiguous()

        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(per_roi(argmax))  # like the output, for the backward
            ctx.input_shape = input.shape
        return per_roi(pooled).reshape(num_rois, c, *out)  # [K, D, ph, pw]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (argmax,) = ctx.saved_tensors  # [K, D, ph*pw]
        n, c, height, width = ctx.input_shape
        # channel-major [D, B] for one scatter along the rows of a [D, N*H*W + 1] table: runs
        # of ph*pw values copy fast (a [B, D] -> [D, B] transpose of integers does not)
        grad_bins = grad.reshape(argmax.shape).transpose(0, 1).reshape(c, -1)  # [D, B]
        index = argmax.transpose(0, 1).reshape(c, -1).long()  # [D, B]
        grad_table = grad.new_zeros(c, n * height * width + 1)  # [D, N*H*W + 1]
        if grad.dtype == torch.float16:
            # scatter_add_ sums float16 in float32 and rounds once; the reference kernel rounds
            # after every addition, as the serial index_add_ does
            flat = index + torch.arange(c, device=grad.device)[:, None] * grad_table.shape[1]
            grad_table.view(-1).index_add_(0, flat.view(-1), grad_bins.reshape(-1))
        else:
            grad_table.scatter_add_(1, index, grad_bins)
        grad_input = grad_table[:, :-1].reshape(c, n, height, width).transpose(0, 1)
        return grad_input, None, None, None, None, None


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoIPool (Fast R-CNN, Sec. 2.1), same semantics as ``torchvision.ops.roi_pool``.

    Args:
        input: [N, D, H, W] features, float16/32/64 or bfloat16 (any memory format).
        boxes: [K, 5] (batch index, x1, y1, x2, y2) or a list of [L_i, 4] per image, in image
            pixels; ``spatial_scale`` maps them onto the feature grid.
        output_size: (ph, pw) or an int for both.
        spatial_scale: feature pixels per image pixel (e.g. 1/16).

    Returns:
        [K, D, ph, pw] contiguous: the maximum of each bin, 0 for an empty bin (outside the
        map). Exact ties go to the first maximum in row-major order (value and gradient), as
        in torchvision; NaN features are skipped; a bin of -inf gives -FLT_MAX (-inf in
        float16) and no gradient.

    Bin geometry, as in the reference kernels: box corners are scaled and rounded (halves away
    from zero) to whole pixels, a RoI side is x2 - x1 + 1 pixels (at least 1), bin i of p spans
    [floor(i * side / p), ceil((i + 1) * side / p)) from the RoI's first pixel, clipped to the
    map; all in the compute dtype (the input's; float32 for bfloat16 and under autocast).

    Memory: a channels-last copy of ``input``; while the bags are listed, about 48 bytes per
    pixel of all bins (T, about K*ph*pw*(side/p + 1)^2: 160k, 8 MB, for 512 RoIs of 2..28
    pixels at 7 x 7); the maxima and their argmax as [B, D] and as [K, D, ph, pw]. The argmax
    (4 bytes per output value, 8 if N*H*W >= 2^31) is kept for the backward.
    """
    _check_arguments(input, spatial_scale)
    out = _output_size(output_size)
    rois = convert_boxes_to_roi_format(boxes)
    dtype = _compute_dtype(input, rois)
    device_type = input.device.type
    # the dtype is chosen above: autocast must not recast the steps below
    guard = (
        torch.autocast(device_type, enabled=False)
        if _autocast_enabled(device_type)
        else contextlib.nullcontext()
    )
    with guard:
        with torch.no_grad():  # RoIs get no gradient, as in torchvision
            rows, offsets, clean = _plan(input, rois, out, spatial_scale, dtype)
        pooled = _BinMax.apply(input.to(dtype), rows, offsets, rois.shape[0], out, clean)
    return pooled.to(input.dtype)


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool` (``torchvision.ops.RoIPool``); holds no parameters."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        """Pool [K, D, ph, pw] features of ``rois`` ([K, 5] or a list of [L_i, 4])."""
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, "
            f"spatial_scale={self.spatial_scale})"
        )
