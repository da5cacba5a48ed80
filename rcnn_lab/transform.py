"""GeneralizedRCNNTransform: normalise, resize and pad images into one batch, and map boxes back.

Faster R-CNN (Ren et al. 2015, Sec. 3.3) rescales every image so that its shorter side is
``min_size`` pixels (600 in the paper, 800 in torchvision), unless that would make the longer side
exceed ``max_size`` (1000 / 1333); then the longer side is ``max_size``. The FPN paper (Lin et al.
2017, Sec. 5.1) uses the same rule. Training may pick ``min_size`` at random from several values
(multi-scale training). The resized images are padded with zeros at the bottom and right to a
common size divisible by ``size_divisible`` (32 = the coarsest FPN stride, so every level's
grid lines up), and the ground-truth boxes are scaled with their image. After detection,
``postprocess`` scales the predicted boxes back to the original image sizes.

Shapes: N images, D = 3 colour channels, H x W an image's size, G ground-truth boxes.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcnn_lab.checks import InputTypeError, check_images, check_targets
from rcnn_lab.image_list import ImageList

#: The keyword arguments GeneralizedRCNNTransform reads from ``**kwargs`` (torchvision's).
EXTRA_KEYWORDS = ("_skip_resize",)


def reject_unknown_keywords(owner: str, kwargs: Mapping[str, Any], known: Iterable[str]) -> None:
    """TypeError naming the first keyword of ``kwargs`` not in ``known``, as Python words it for
    a function without ``**kwargs``, plus the closest known name when one is close."""
    known = list(known)
    unknown = [name for name in kwargs if name not in known]
    if not unknown:
        return
    message = f"{owner}() got an unexpected keyword argument {unknown[0]!r}"
    close = difflib.get_close_matches(unknown[0], known, n=1)
    raise TypeError(message + (f"; did you mean {close[0]!r}?" if close else ""))


#: Raised for an image that is not floating point, InputTypeError (a ValueError and a
#: TypeError), under the name earlier versions exported.
ImageDtypeError = InputTypeError


def _size_ratios(original_size: tuple[int, int], new_size: tuple[int, int], like: Tensor) -> Tensor:
    """[2] new/original ratios (height, width), computed in float32 like torchvision.

    The ratio is rounded to float32 even for float64 boxes: that is how torchvision scales, and
    keeping its rounding keeps the boxes bit-identical.
    """
    new = torch.tensor(list(new_size), dtype=torch.float32, device=like.device)
    old = torch.tensor(list(original_size), dtype=torch.float32, device=like.device)
    ratios = new / old  # [2] (h, w)
    return ratios.to(like.dtype) if like.is_floating_point() else ratios


def resize_boxes(
    boxes: Tensor, original_size: tuple[int, int], new_size: tuple[int, int]
) -> Tensor:
    """Scale [G, 4] (x1, y1, x2, y2) boxes from an image of ``original_size`` (h, w) to
    ``new_size``.

    Returns a new [G, 4] tensor; ``boxes`` is left untouched.
    """
    ratio_h, ratio_w = _size_ratios(original_size, new_size, boxes)
    scale = torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])  # [4], x scales with w, y with h
    return boxes * scale


def resize_keypoints(
    keypoints: Tensor, original_size: tuple[int, int], new_size: tuple[int, int]
) -> Tensor:
    """Scale [G, K, 3] (x, y, visibility) keypoints like :func:`resize_boxes`; a new tensor."""
    ratio_h, ratio_w = _size_ratios(original_size, new_size, keypoints)
    one = torch.ones_like(ratio_h)
    return keypoints * torch.stack([ratio_w, ratio_h, one])  # [G, K, 3], visibility unchanged


class GeneralizedRCNNTransform(nn.Module):
    """Turn a list of images (and targets) into a normalised, resized, padded :class:`ImageList`.

    Args:
        min_size: the shorter side after resizing; a list/tuple gives the choices of multi-scale
            training (one drawn per image; evaluation uses the last one).
        max_size: cap on the longer side after resizing.
        image_mean, image_std: per-channel normalisation, ``(image - mean) / std``.
        size_divisible: the padded batch's H and W are multiples of this.
        fixed_size: optional (width, height) to resize every image to, ignoring the rules above.
        _skip_resize (keyword): in training, keep images at their own size. Any other extra
            keyword raises TypeError (torchvision ignores it silently).
    """

    def __init__(
        self,
        min_size: int | list[int] | tuple[int, ...],
        max_size: int,
        image_mean: list[float],
        image_std: list[float],
        size_divisible: int = 32,
        fixed_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.min_size = min_size if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.image_mean = image_mean
        self.image_std = image_std
        self.size_divisible = size_divisible
        self.fixed_size = fixed_size
        # torchvision reads only _skip_resize from **kwargs and silently drops any other keyword;
        # here a misspelt keyword (FasterRCNN forwards its extra ones) is an error instead
        named = ("min_size", "max_size", "image_mean", "image_std", "size_divisible", "fixed_size")
        reject_unknown_keywords(type(self).__name__, kwargs, (*named, *EXTRA_KEYWORDS))
        self._skip_resize = kwargs.get("_skip_resize", False)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        """Normalise, resize and batch ``images``; resize ``targets``' boxes to match.

        Args:
            images: N tensors [3, H_i, W_i], float, values in [0, 1].
            targets: optional N dicts with ``"boxes"`` [G_i, 4] in pixels (and optionally
                ``"masks"`` [G_i, H_i, W_i], ``"keypoints"`` [G_i, K, 3]); copied, not mutated.

        Returns:
            ``(ImageList(tensors [N, 3, H, W], image_sizes [(h_i, w_i)]), targets or None)``,
            with ``image_sizes`` the resized sizes before padding.
        """
        self._check_inputs(images, targets)
        targets = (
            None if targets is None else [dict(t) for t in targets]
        )  # never touch the caller's
        resized = []
        for i, image in enumerate(images):
            target = None if targets is None else targets[i]
            image, target = self.resize(self.normalize(image), target)
            resized.append(image)
            if targets is not None:
                targets[i] = target
        image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized]
        batch = self.batch_images(resized, size_divisible=self.size_divisible)
        return ImageList(batch, image_sizes), targets

    def _check_inputs(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None) -> None:
        """ValueError for an empty list, non-[D, H, W] images or targets that do not fit (the
        shared checks of :mod:`rcnn_lab.checks`; only boxes are needed here)."""
        check_images(images, channels=len(self.image_mean))
        if targets is not None:
            check_targets(targets, len(images), labels=False, finite=False, dtypes=False)

    def normalize(self, image: Tensor) -> Tensor:
        """``(image - mean) / std`` per channel, in the image's dtype and device; [3, H, W]."""
        if not image.is_floating_point():
            raise ImageDtypeError(
                "image: expected a floating-point tensor with values in [0, 1] "
                f"(e.g. uint8 / 255), got dtype {image.dtype}"
            )
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]  # [D, 1, 1] broadcast over H, W

    def torch_choice(self, k: list[int] | tuple[int, ...]) -> int:
        """A uniform random element of ``k``, drawn from torch's global RNG (seeded by
        ``torch.manual_seed``) with exactly one ``uniform_`` call, as torchvision draws it."""
        draw = torch.empty(1).uniform_(0.0, float(len(k)))
        return k[int(draw.item())]  # .item(): a Python index into a Python list, once per image

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Resize one [D, H, W] image (and its target, in place in ``target``) by the size rules."""
        height, width = image.shape[-2:]
        if self.training:
            if self._skip_resize:
                return image, target
            short_side = self.torch_choice(self.min_size)
        else:
            short_side = self.min_size[-1]
        image, target = self._resize_image_and_masks(image, short_side, target)
        if target is None:
            return image, target
        new_size = tuple(image.shape[-2:])
        target["boxes"] = resize_boxes(target["boxes"], (height, width), new_size)
        if "keypoints" in target:
            target["keypoints"] = resize_keypoints(target["keypoints"], (height, width), new_size)
        return image, target

    def _resize_image_and_masks(
        self, image: Tensor, short_side: int, target: dict[str, Tensor] | None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Bilinear resize of [D, H, W] by one scale (or to ``fixed_size``); masks nearest."""
        if self.fixed_size is not None:
            size = [self.fixed_size[1], self.fixed_size[0]]  # fixed_size is (w, h)
            scale, recompute = None, None
        else:
            size = None
            h, w = image.shape[-2:]
            # The shorter side becomes short_side, unless the longer side would pass max_size.
            scale = min(short_side / min(h, w), self.max_size / max(h, w))
            if min(math.floor(h * scale), math.floor(w * scale)) < 1:
                raise ValueError(
                    f"images: an image of size {h} x {w} would be resized to "
                    f"{math.floor(h * scale)} x {math.floor(w * scale)} pixels (min_size="
                    f"{short_side}, max_size={self.max_size}); its aspect ratio is too extreme"
                )
            # The output is floor(H * scale) x floor(W * scale); recomputing the sampling scale
            # from those integer sizes (not the requested float) fixes the bilinear sample points.
            recompute = True
        image = F.interpolate(
            image[None],  # [1, D, H, W]
            size=size,
            scale_factor=scale,
            mode="bilinear",
            recompute_scale_factor=recompute,
            align_corners=False,
        )[0]
        if target is not None and "masks" in target:
            masks = F.interpolate(
                target["masks"][:, None].float(),  # [G, 1, H, W]
                size=size,
                scale_factor=scale,
                recompute_scale_factor=recompute,
            )
            target["masks"] = masks[:, 0].byte()  # [G, H', W']
        return image, target

    def batch_images(self, images: list[Tensor], size_divisible: int = 32) -> Tensor:
        """Zero-pad [D, H_i, W_i] images at the bottom/right into one [N, D, H, W] tensor,
        with H and W the largest sizes rounded up to multiples of ``size_divisible``."""
        channels = max(img.shape[0] for img in images)
        height = max(img.shape[1] for img in images)
        width = max(img.shape[2] for img in images)
        height = -(-height // size_divisible) * size_divisible  # ceil to a multiple
        width = -(-width // size_divisible) * size_divisible
        batch = images[0].new_zeros((len(images), channels, height, width))
        for index, img in enumerate(images):
            # index the batch directly, not through `for slot in batch`: iterating unbinds it
            # into views that autograd forbids writing to when an image requires grad
            batch[index, : img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
        return batch

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Scale detections' ``boxes`` (and ``keypoints``) from the resized to the original sizes.

        In training the detections are returned unchanged. Returns new dicts (the input dicts are
        not modified). Masks (Mask R-CNN) are not supported.
        """
        if self.training:
            return result
        out = []
        for pred, resized_size, original_size in zip(result, image_shapes, original_image_sizes):
            if "masks" in pred:
                raise NotImplementedError("postprocess: pasting Mask R-CNN masks is not supported")
            pred = dict(pred)
            pred["boxes"] = resize_boxes(pred["boxes"], resized_size, original_size)
            if "keypoints" in pred:
                pred["keypoints"] = resize_keypoints(pred["keypoints"], resized_size, original_size)
            out.append(pred)
        return out

    def __repr__(self) -> str:
        indent = "\n    "
        return (
            f"{type(self).__name__}("
            f"{indent}Normalize(mean={self.image_mean}, std={self.image_std})"
            f"{indent}Resize(min_size={self.min_size}, max_size={self.max_size}, mode='bilinear')"
            "\n)"
        )
