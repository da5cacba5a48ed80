"""Multi-scale RoIAlign over a feature pyramid (FPN, Lin et al. 2017, Sec. 4.2, eq. 1).

Each RoI is pooled from one pyramid level, chosen by its size: a 224 x 224 box (an ImageNet
image) goes to the canonical level k0 = 4, a box half as wide to level 3, twice as wide to 5.

Shapes: N images, C channels, K RoIs over the batch, L pyramid levels, ph x pw output bins.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rcnn_lab.ops.roi_align import _pair, convert_boxes_to_roi_format, roi_align

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


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign from the pyramid level that suits each box (``torchvision.ops.MultiScaleRoIAlign``).

    Args:
        featmap_names: keys of the feature dict to pool from, finest level first.
        output_size: (ph, pw) or an int for both.
        sampling_ratio: samples per bin and axis (<= 0: adaptive), as in :func:`roi_align`.
        canonical_scale, canonical_level: FPN eq. 1's 224 and k0.

    The scales are inferred on the first call (from feature and image sizes) and then kept,
    like torchvision's ``scales`` and ``map_levels`` attributes. Holds no parameters or buffers.
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
        super().__init__()
        self.featmap_names = featmap_names
        self.sampling_ratio = sampling_ratio
        self.output_size = _pair(output_size)  # TypeError naming output_size if not ints
        self.scales: list[float] | None = None
        self.map_levels: LevelMapper | None = None
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def _filter(self, x: dict[str, Tensor]) -> list[Tensor]:
        """The maps named in featmap_names, in the dict's own order (as torchvision takes them)."""
        if not isinstance(x, dict):
            raise ValueError(f"x must be a dict of feature maps by name, got {type(x).__name__}")
        # Names that x lacks are skipped, as torchvision does: the MobileNet FPN returns levels
        # "0", "1" and "pool" while FasterRCNN's default pooler lists "0".."3".
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
            x: feature maps [N, C, H_l, W_l] by name.
            boxes: [L_i, 4] (x1, y1, x2, y2) per image, in pixels of the (padded) input image.
            image_shapes: (height, width) of every image before the backbone.

        Returns:
            [K, C, ph, pw], the RoIs in input order (image after image).
        """
        features = self._filter(x)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = convert_boxes_to_roi_format(boxes)  # [K, 5]
        if len(features) == 1:
            return roi_align(
                features[0], rois, self.output_size, self.scales[0], self.sampling_ratio
            )
        # The level mapper sends a NaN box to no level (its log is NaN), so roi_align's own
        # check would never see it and its features would silently stay zero. One host sync.
        if rois.shape[0] and not bool(torch.isfinite(rois[:, 1:]).all()):
            bad = (~torch.isfinite(rois[:, 1:])).any(dim=1).nonzero().squeeze(1)[:5]
            raise ValueError(
                f"boxes must have finite coordinates (no NaN or inf), got rows {bad.tolist()}"
            )
        levels = self.map_levels(boxes)  # [K]
        first = features[0]
        result = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        # a loop over the (few) pyramid levels; each level pools all its RoIs in one call
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            in_level = torch.where(levels == level)[0]
            pooled = roi_align(
                feature, rois[in_level], self.output_size, scale, self.sampling_ratio
            )
            result[in_level] = pooled.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )
