"""Multi-scale RoI pooling over a feature pyramid (FPN, Lin et al. 2017, Sec. 4.2, eq. 1).

Each RoI is pooled from one pyramid level, chosen by its size: a 224 x 224 box (an ImageNet
image) goes to the canonical level k0 = 4, a box half as wide to level 3, twice as wide to 5.
:class:`MultiScalePooler` does the level bookkeeping and calls one per-level pooling function;
:class:`MultiScaleRoIAlign` (torchvision's) plugs in RoIAlign, :class:`MultiScaleRoIPool` Fast
R-CNN's RoIPool, and any ``pool(feature, rois, output_size, spatial_scale)`` callable drops in.

Shapes: N images, D channels, K RoIs over the batch, L pyramid levels, ph x pw output bins.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from rcnn_lab.ops.roi_align import _pair, _roi_align, convert_boxes_to_roi_format, roi_align
from rcnn_lab.ops.roi_pool import roi_pool

#: FPN eq. 1's constants, where a box of CANONICAL_SCALE pixels maps to level CANONICAL_LEVEL.
CANONICAL_SCALE, CANONICAL_LEVEL = 224, 4
#: Nudges log2 ratios that land a hair below an integer (224 * 2**j boxes) onto that integer.
LEVEL_EPS = 1e-6


class LevelMapper:
    """FPN eq. 1: level k = floor(k0 + log2(sqrt(w * h) / 224)), clamped to [k_min, k_max].

    Args:
        k_min, k_max: the pyramid levels available (e.g. 2 and 5 for P2..P5).
        canonical_scale, canonical_level: the 224 and k0 = 4 of the paper.
        eps: added before the floor, as torchvision does.
    """

    def __init__(
        self,
        k_min: int,
        k_max: int,
        canonical_scale: int = CANONICAL_SCALE,
        canonical_level: int = CANONICAL_LEVEL,
        eps: float = LEVEL_EPS,
    ) -> None:
        self.k_min = k_min
        self.k_max = k_max
        self.s0 = canonical_scale
        self.lvl0 = canonical_level
        self.eps = eps

    def __call__(self, boxlists: list[Tensor]) -> Tensor:
        """Level index, counted from k_min, of every box: [K] int64 for boxes [L_i, 4] per image."""
        boxes = torch.cat(list(boxlists), dim=0)  # [K, 4]
        side = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))  # [K]
        eps = torch.tensor(self.eps, dtype=side.dtype, device=side.device)
        levels = torch.floor(self.lvl0 + torch.log2(side / self.s0) + eps)
        levels = torch.clamp(levels, min=self.k_min, max=self.k_max)
        return levels.to(torch.int64) - self.k_min

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(k_min={self.k_min}, k_max={self.k_max}, "
            f"canonical_scale={self.s0}, canonical_level={self.lvl0}, eps={self.eps})"
        )


def infer_scale(feature: Tensor, original_size: tuple[int, int]) -> float:
    """The power of two nearest to feature height / image height (e.g. 1/4 for a stride-4 map)."""
    approx = float(feature.shape[-2]) / float(original_size[0])
    # round log2 in float32, as torchvision does, so that odd sizes pick the same power of two
    return 2 ** float(torch.tensor(approx, dtype=torch.float32).log2().round())


def setup_scales(
    features: list[Tensor],
    image_shapes: list[tuple[int, int]],
    canonical_scale: int = CANONICAL_SCALE,
    canonical_level: int = CANONICAL_LEVEL,
) -> tuple[list[float], LevelMapper]:
    """Scales of the levels (from the largest image of the batch) and the matching LevelMapper."""
    if len(image_shapes) == 0:
        raise ValueError("image_shapes must list at least one (height, width), got []")
    largest = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
    scales = [infer_scale(f, largest) for f in features]
    k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
    return scales, LevelMapper(k_min, k_max, canonical_scale, canonical_level)


#: The per-level pooling function's signature, (feature [N, D, H, W], rois [K, 5],
#: output_size (ph, pw), spatial_scale) -> [K, D, ph, pw].
PoolFunction = Callable[[Tensor, Tensor, tuple[int, int], float], Tensor]


class MultiScalePooler(nn.Module):
    """Pool every RoI from the pyramid level that suits its size, with any per-level pooler.

    Args:
        featmap_names: keys of the feature dict to pool from, finest level first.
        output_size: (ph, pw) or an int for both.
        pool: ``pool(feature, rois, output_size, spatial_scale) -> [K, D, ph, pw]`` for one level,
            with rois [K, 5] (batch index, x1, y1, x2, y2) in input-image pixels. None uses
            :meth:`pool_level` (override it in a subclass instead of passing a function).
        canonical_scale, canonical_level: FPN eq. 1's 224 and k0.

    The scales are inferred on the first call (from feature and image sizes) and then kept,
    like torchvision's ``scales`` and ``map_levels`` attributes. Holds no parameters or buffers.
    Feature maps that ``x`` lacks are skipped (the MobileNet FPN returns "0", "1" and "pool"
    while the default pooler lists "0".."3"); none present at all is an error.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int] | list[int],
        pool: PoolFunction | None = None,
        *,
        canonical_scale: int = CANONICAL_SCALE,
        canonical_level: int = CANONICAL_LEVEL,
    ) -> None:
        super().__init__()
        if isinstance(featmap_names, str) or not all(isinstance(n, str) for n in featmap_names):
            raise TypeError(f"featmap_names must be a list of str, got {featmap_names!r}")
        if pool is not None and not callable(pool):
            raise TypeError(f"pool must be callable or None, got {type(pool).__name__}")
        self.featmap_names = featmap_names
        self.output_size = _pair(output_size)  # TypeError naming output_size if not ints
        self.pool = pool
        self.scales: list[float] | None = None
        self.map_levels: LevelMapper | None = None
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def pool_level(self, feature: Tensor, rois: Tensor, spatial_scale: float) -> Tensor:
        """Pool ``rois`` [K, 5] from one level's ``feature`` [N, D, H, W] -> [K, D, ph, pw]."""
        if self.pool is None:
            raise NotImplementedError(
                f"{type(self).__name__}: pass pool=... or override pool_level()"
            )
        return self.pool(feature, rois, self.output_size, spatial_scale)

    def _pool_checked_level(self, feature: Tensor, rois: Tensor, spatial_scale: float) -> Tensor:
        """:meth:`pool_level` for RoIs whose values :meth:`forward` has checked already (finite,
        existing images): a pooler that can skip its own check of them overrides this."""
        return self.pool_level(feature, rois, spatial_scale)

    def _filter(self, x: dict[str, Tensor]) -> list[Tensor]:
        """The maps named in featmap_names, in the dict's own order (as torchvision takes them)."""
        if not isinstance(x, dict):
            raise ValueError(f"x must be a dict of feature maps by name, got {type(x).__name__}")
        maps = [v for k, v in x.items() if k in self.featmap_names]
        if not maps:
            raise ValueError(
                f"x has none of the feature maps {self.featmap_names}; it has keys {list(x)}"
            )
        return maps

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Pool every box from its level.

        Args:
            x: feature maps [N, D, H_l, W_l] by name.
            boxes: [L_i, 4] (x1, y1, x2, y2) per image, in pixels of the (padded) input image.
            image_shapes: (height, width) of every image before the backbone.

        Returns:
            [K, D, ph, pw], the RoIs in input order (image after image).
        """
        features = self._filter(x)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = convert_boxes_to_roi_format(boxes)  # [K, 5]
        if len(features) == 1:
            return self.pool_level(features[0], rois, self.scales[0])
        # boxes of image n read row n of the maps: none may belong to an image they lack
        batch = int(features[0].shape[0])
        if any(len(b) for b in boxes[batch:]):  # host-side lengths
            raise ValueError(
                f"boxes lists {len(boxes)} images but the features hold a batch of "
                f"{batch}: the boxes of images beyond it have no features"
            )
        levels = self.map_levels(boxes)  # [K]
        # A box of negative area has a NaN level (log of a negative): it maps to no level and
        # its features stay zero, as in torchvision. A non-finite box would too, and the
        # pooler's own check would never see it: that is an error. Each kind gets a bin after
        # the L levels. One host read for the batch: the bin sizes.
        num_levels = len(features)
        finite = torch.isfinite(rois[:, 1:]).all(dim=1)  # [K]
        mapped = (levels >= 0) & (levels < num_levels)  # [K] False for a NaN level
        bins = torch.where(mapped, levels, num_levels).masked_fill(~finite, num_levels + 1)
        counts = torch.bincount(bins, minlength=num_levels + 2).tolist()  # sync
        if counts[-1]:
            bad = (~finite).nonzero().squeeze(1)[:5]
            raise ValueError(
                f"boxes must have finite coordinates (no NaN or inf), got rows {bad.tolist()}"
            )
        by_level = torch.sort(bins, stable=True).indices.split(counts)[:num_levels]  # ascending
        first = features[0]
        result = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        # a loop over the (few) pyramid levels; each level pools all its RoIs in one call
        for in_level, feature, scale in zip(by_level, features, self.scales, strict=True):
            pooled = self._pool_checked_level(feature, rois[in_level], scale)
            result[in_level] = pooled.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, pool={self.pool!r})"
        )


class MultiScaleRoIAlign(MultiScalePooler):
    """RoIAlign from the pyramid level that suits each box (``torchvision.ops.MultiScaleRoIAlign``).

    Args:
        featmap_names: keys of the feature dict to pool from, finest level first.
        output_size: (ph, pw) or an int for both.
        sampling_ratio: samples per bin and axis (<= 0: adaptive), as in :func:`roi_align`.
        canonical_scale, canonical_level: FPN eq. 1's 224 and k0.

    See :class:`MultiScalePooler` for the level bookkeeping.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int] | list[int],
        sampling_ratio: int,
        *,
        canonical_scale: int = CANONICAL_SCALE,
        canonical_level: int = CANONICAL_LEVEL,
    ) -> None:
        super().__init__(
            featmap_names,
            output_size,
            canonical_scale=canonical_scale,
            canonical_level=canonical_level,
        )
        self.sampling_ratio = sampling_ratio

    def pool_level(self, feature: Tensor, rois: Tensor, spatial_scale: float) -> Tensor:
        """:func:`roi_align` of one level (aligned=False, as torchvision's poolers use it)."""
        return roi_align(feature, rois, self.output_size, spatial_scale, self.sampling_ratio)

    def _pool_checked_level(self, feature: Tensor, rois: Tensor, spatial_scale: float) -> Tensor:
        """:meth:`pool_level` without roi_align's own host read of the RoIs' values."""
        out, ratio = self.output_size, self.sampling_ratio
        return _roi_align(feature, rois, out, spatial_scale, ratio, check_values=False)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )


class MultiScaleRoIPool(MultiScalePooler):
    """Fast R-CNN's RoIPool (max over quantised bins) from the pyramid level of each box.

    Args: as :class:`MultiScalePooler`, without ``pool``. A drop-in ``box_roi_pool`` for
    :class:`~rcnn_lab.faster_rcnn.FasterRCNN` that trades RoIAlign's bilinear sampling for the
    original paper's quantised max pooling.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int] | list[int],
        *,
        canonical_scale: int = CANONICAL_SCALE,
        canonical_level: int = CANONICAL_LEVEL,
    ) -> None:
        super().__init__(
            featmap_names,
            output_size,
            canonical_scale=canonical_scale,
            canonical_level=canonical_level,
        )

    def pool_level(self, feature: Tensor, rois: Tensor, spatial_scale: float) -> Tensor:
        """:func:`roi_pool` of one level."""
        return roi_pool(feature, rois, self.output_size, spatial_scale)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size})"
        )
