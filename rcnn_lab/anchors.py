"""Anchor boxes: a fixed set of reference boxes tiled over every feature-map location.

Faster R-CNN (Ren et al. 2015, Sec. 3.1.1) places k = 3 scales x 3 aspect ratios = 9 anchors
at each position of the last feature map; FPN (Lin et al. 2017, Sec. 4.1) gives each pyramid
level one scale (32 px on P2 ... 512 px on P6) and the same three ratios.

Shapes: N images, L levels, A anchors per location (sizes x ratios of a level),
H x W feature grid of a level, R = sum over levels of H*W*A anchors of one image.
Boxes are (x1, y1, x2, y2) in input-image pixels; aspect ratio means height / width.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rcnn_lab.image_list import ImageList

#: The anchor sizes of the FPN detectors in pixels, one per level P2..P6 (FPN, Sec. 4.1) in the
#: ResNet-50-FPN models, all five on each level in the MobileNet ones.
FPN_SIZES = (32, 64, 128, 256, 512)
#: Height / width ratios of the anchors at every location (Faster R-CNN, Sec. 3.1.1).
ASPECT_RATIOS = (0.5, 1.0, 2.0)

# Grid anchors are cached per (level, grid, stride, dtype, device); training with many image
# sizes would grow the cache without bound, so only the most recent entries are kept.
_MAX_CACHED_GRIDS = 32


def _as_levels(sizes: Sequence, aspect_ratios: Sequence) -> tuple[tuple, tuple]:
    """Normalise the single-level shorthands to one tuple per level, as torchvision does.

    ``sizes=(32, 64)`` means one size per level (two levels); a flat ``aspect_ratios`` is
    shared by every level.
    """
    if len(sizes) == 0:
        raise ValueError(
            "sizes: expected at least one level of anchor sizes, got an empty sequence"
        )
    if len(aspect_ratios) == 0:
        raise ValueError("aspect_ratios: expected at least one aspect ratio, got an empty sequence")
    if not isinstance(sizes[0], (list, tuple)):
        sizes = tuple((size,) for size in sizes)
    if not isinstance(aspect_ratios[0], (list, tuple)):
        aspect_ratios = (aspect_ratios,) * len(sizes)
    if len(sizes) != len(aspect_ratios):
        raise ValueError(
            f"sizes and aspect_ratios must describe the same number of levels: got "
            f"{len(sizes)} levels of sizes and {len(aspect_ratios)} levels of aspect_ratios"
        )
    return sizes, aspect_ratios


class AnchorGenerator(nn.Module):
    """Anchors for every location of every feature map, the same for every image of a batch.

    Args:
        sizes: per level, the anchor sizes (the square root of the area, in pixels).
            A flat tuple means one size per level.
        aspect_ratios: per level, the ratios height / width. A flat tuple is shared by all levels.

    The module has no parameters or buffers (its ``state_dict`` is empty, like torchvision's).
    """

    def __init__(
        self,
        sizes: Sequence = ((128, 256, 512),),
        aspect_ratios: Sequence = (ASPECT_RATIOS,),
    ) -> None:
        super().__init__()
        sizes, aspect_ratios = _as_levels(sizes, aspect_ratios)
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        # computed once in float32, like torchvision, then cast per device/dtype on demand
        levels = zip(sizes, aspect_ratios, strict=True)
        self.cell_anchors = [self.generate_anchors(size, ratios) for size, ratios in levels]
        self._cells_source: list[Tensor] | None = None
        self._cells_cache: dict[tuple, list[Tensor]] = {}
        self._grid_cache: OrderedDict[tuple, Tensor] = OrderedDict()

    def generate_anchors(
        self,
        scales: Sequence[float],
        aspect_ratios: Sequence[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> Tensor:
        """Zero-centred cell anchors, [len(aspect_ratios) * len(scales), 4], rounded to pixels.

        Ratio-major order: all scales of the first ratio, then all scales of the second, ...
        A ratio r = h / w of area s^2 gives h = s * sqrt(r) and w = s / sqrt(r).
        """
        scales_t = torch.as_tensor(scales, dtype=dtype, device=device)  # [S]
        ratios_t = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # [Q]
        height_factor = torch.sqrt(ratios_t)
        width_factor = 1 / height_factor
        widths = (width_factor[:, None] * scales_t[None, :]).reshape(-1)  # [Q*S]
        heights = (height_factor[:, None] * scales_t[None, :]).reshape(-1)  # [Q*S]
        half_sizes = torch.stack([widths, heights], dim=1) / 2  # [Q*S, 2]
        return torch.cat([-half_sizes, half_sizes], dim=1).round()  # [Q*S, 4]

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        """Cast ``cell_anchors`` in place to ``dtype`` on ``device`` (torchvision's method)."""
        self.cell_anchors = [cell.to(dtype=dtype, device=device) for cell in self.cell_anchors]

    def num_anchors_per_location(self) -> list[int]:
        """A for each level: number of sizes times number of aspect ratios."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def _cells_for(self, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
        """Cell anchors of every level cast to ``dtype``/``device``, cached per pair."""
        if self._cells_source is not self.cell_anchors:  # cell_anchors was replaced: start over
            self._cells_source = self.cell_anchors
            self._cells_cache.clear()
            self._grid_cache.clear()
        key = (dtype, device)
        if key not in self._cells_cache:
            self._cells_cache[key] = [c.to(dtype=dtype, device=device) for c in self.cell_anchors]
        return self._cells_cache[key]

    @staticmethod
    def _tile(cell: Tensor, grid: tuple[int, int], stride: tuple[int, int]) -> Tensor:
        """Shift the [A, 4] ``cell`` anchors to every grid location: [H*W*A, 4], row-major."""
        (height, width), (stride_y, stride_x) = grid, stride
        # integer shifts, added to the float cell anchors (same arithmetic as torchvision)
        xs = torch.arange(width, dtype=torch.int64, device=cell.device) * stride_x  # [W]
        ys = torch.arange(height, dtype=torch.int64, device=cell.device) * stride_y  # [H]
        xs, ys = xs[None, :].expand(height, width), ys[:, None].expand(height, width)
        shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)  # [H*W, 1, 4]
        return (shifts + cell[None, :, :]).reshape(-1, 4)  # [H*W*A, 4]

    def grid_anchors(
        self, grid_sizes: list[Sequence[int]], strides: list[Sequence[int | Tensor]]
    ) -> list[Tensor]:
        """Anchors of each level, [H_l*W_l*A_l, 4], for the given grids and (y, x) strides."""
        cells = self.cell_anchors
        if not len(grid_sizes) == len(strides) == len(cells):
            raise ValueError(
                f"grid_sizes, strides and the anchor levels must have the same length: got "
                f"{len(grid_sizes)} grid sizes, {len(strides)} strides, {len(cells)} levels"
            )
        # int() accepts torchvision's 0-dim stride tensors too (one sync per level, not per box)
        return [
            self._tile(cell, (int(g[0]), int(g[1])), (int(s[0]), int(s[1])))
            for g, s, cell in zip(grid_sizes, strides, cells, strict=True)
        ]

    def _level_anchors(
        self, level: int, cell: Tensor, grid: tuple[int, int], stride: tuple[int, int]
    ) -> Tensor:
        """Grid anchors of one level, from the cache when this grid was seen before."""
        key = (level, grid, stride, cell.dtype, cell.device)
        anchors = self._grid_cache.get(key)
        if anchors is None:
            anchors = self._tile(cell, grid, stride)
            self._grid_cache[key] = anchors
            if len(self._grid_cache) > _MAX_CACHED_GRIDS:
                self._grid_cache.popitem(last=False)  # drop the least recently used grid
        else:
            self._grid_cache.move_to_end(key)
        return anchors

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors of every image: N tensors [R, 4], level-major, then row-major, then cell.

        Args:
            image_list: the padded batch; its ``tensors`` [N, 3, H_img, W_img] give the strides.
            feature_maps: L tensors [N, D, H_l, W_l]; the first one sets dtype and device.
        """
        if len(feature_maps) != len(self.cell_anchors):
            raise ValueError(
                f"feature_maps: expected one feature map per anchor level "
                f"({len(self.cell_anchors)} levels), got {len(feature_maps)} feature maps"
            )
        image_height, image_width = image_list.tensors.shape[-2:]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        cells = self._cells_for(dtype, device)
        per_level = []
        for level, (feature, cell) in enumerate(zip(feature_maps, cells, strict=True)):
            height, width = int(feature.shape[-2]), int(feature.shape[-1])
            if height == 0 or width == 0:
                raise ValueError(
                    f"feature_maps[{level}]: expected a non-empty grid, got shape "
                    f"{tuple(feature.shape)}"
                )
            # the stride is how many input pixels one feature cell spans (integer division)
            stride = (int(image_height) // height, int(image_width) // width)
            per_level.append(self._level_anchors(level, cell, (height, width), stride))
        # torch.cat copies, so every image owns its tensor and the cache stays untouched
        return [torch.cat(per_level) for _ in range(len(image_list.image_sizes))]


def fpn_anchor_generator(sizes_per_level: Sequence[Sequence[int]]) -> AnchorGenerator:
    """An AnchorGenerator with the given sizes on each level and :data:`ASPECT_RATIOS` on all."""
    return AnchorGenerator(
        tuple(tuple(sizes) for sizes in sizes_per_level), (ASPECT_RATIOS,) * len(sizes_per_level)
    )
