"""Input checks shared by every entry point: one message style, one rule for exception types.

Every message reads ``<argument>[<index>][<key>]: expected <what>, got <what was given>``, so it
names the argument, the image and the field that was wrong.

The rule for exception types: bad input raises ValueError. A wrong Python type or tensor dtype
raises :class:`InputTypeError`, which is a ValueError and also a TypeError (what torchvision
raises for some of these), so ``except ValueError`` and ``except TypeError`` both catch it.
Configuration mistakes in constructors (an unknown keyword, a part that is not callable) raise
TypeError, as Python does for a bad call.

:class:`~rcnn_lab.faster_rcnn.FasterRCNN`, :class:`~rcnn_lab.transform.GeneralizedRCNNTransform`,
:class:`~rcnn_lab.rpn.RegionProposalNetwork` and :class:`~rcnn_lab.roi_heads.RoIHeads` all
check their images and targets here. Shapes: G ground-truth boxes of an image.
"""

from __future__ import annotations

import torch
from torch import Tensor


class InputTypeError(ValueError, TypeError):
    """An input has the wrong Python type or dtype. A ValueError (this project's rule for bad
    input) that is also a TypeError, so either ``except`` clause catches it."""


def describe(value: object) -> str:
    """How a message shows what it got: a tensor's shape (and dtype), else the type's name."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def check_callables(**parts: object) -> None:
    """TypeError naming the keyword whose value is neither None nor callable."""
    for name, part in parts.items():
        if part is not None and not callable(part):
            raise TypeError(f"{name}: expected a callable or None, got {describe(part)}")


def check_images(images: object, channels: int | None = None) -> list[Tensor]:
    """A non-empty list (or tuple, or [N, D, H, W] tensor) of [D, H, W] float tensors with
    H, W > 0 (C = ``channels`` when given); returns them as a list.

    Raises:
        ValueError: no images, or an image of the wrong shape.
        InputTypeError: not a list of tensors, or an image that is not floating point.
    """
    if isinstance(images, Tensor) and images.dim() == 4:
        images = list(images)  # a batch tensor [N, D, H, W] is N images, as in torchvision
    if not isinstance(images, (list, tuple)):
        raise InputTypeError(
            f"images: expected a list of [D, H, W] tensors, got {describe(images)}"
        )
    if len(images) == 0:
        raise ValueError("images: expected a non-empty list of [D, H, W] tensors, got []")
    expected = "[D, H, W]" if channels is None else f"[{channels}, H, W]"
    for index, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise InputTypeError(f"images[{index}]: expected a Tensor, got {describe(image)}")
        wrong_channels = channels is not None and image.dim() == 3 and image.shape[0] != channels
        if image.dim() != 3 or wrong_channels or min(image.shape[1:]) == 0:
            raise ValueError(
                f"images[{index}]: expected a {expected} tensor with H, W > 0, "
                f"got shape {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise InputTypeError(
                f"images[{index}]: expected a floating-point tensor (values in [0, 1]), got "
                f"dtype {image.dtype}; convert with image.float() / 255"
            )
    return list(images)


def check_finite_images(images: list[Tensor]) -> None:
    """ValueError if any pixel is NaN or inf (one host sync for the whole batch)."""
    if images and not bool(torch.stack([torch.isfinite(img).all() for img in images]).all()):
        bad = next(i for i, img in enumerate(images) if not bool(torch.isfinite(img).all()))
        raise ValueError(f"images[{bad}]: expected finite pixel values, got NaN or inf")


def check_targets(
    targets: object,
    num_images: int,
    *,
    labels: bool = True,
    finite: bool = True,
    dtypes: bool = True,
) -> list[dict[str, Tensor]]:
    """Training targets: one dict per image with "boxes" [G, 4] float and, when ``labels``,
    "labels" [G] int64. ``finite`` also rejects NaN and inf coordinates (one sync per image);
    ``dtypes=False`` accepts any dtype (the transform only resizes the boxes).

    Raises:
        ValueError: no targets (None), a count other than ``num_images``, a missing key, a wrong
            shape, or a non-finite coordinate.
        InputTypeError: targets that are not dicts of tensors, float labels, integer boxes.
    """
    if targets is None:
        raise ValueError("targets should not be None in training mode (got None)")
    if not isinstance(targets, (list, tuple)):
        raise InputTypeError(f"targets: expected a list of dicts, got {describe(targets)}")
    if len(targets) != num_images:
        raise ValueError(
            f"targets: expected {num_images} dicts (one per image), got {len(targets)}"
        )
    for index, target in enumerate(targets):
        check_target(index, target, labels=labels, finite=finite, dtypes=dtypes)
    return list(targets)


def check_target(
    index: int, target: object, *, labels: bool = True, finite: bool = True, dtypes: bool = True
) -> None:
    """One image's target dict; see :func:`check_targets`."""
    where = f"targets[{index}]"
    if not isinstance(target, dict):
        raise InputTypeError(f"{where}: expected a dict, got {describe(target)}")
    keys = ("boxes", "labels") if labels else ("boxes",)
    for key in keys:
        if key not in target:
            raise ValueError(f"{where}: expected a {key!r} key, got keys {sorted(target)}")
    boxes = target["boxes"]
    if not isinstance(boxes, Tensor):
        raise InputTypeError(f"{where}['boxes']: expected a [G, 4] tensor, got {describe(boxes)}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{where}['boxes']: expected a [G, 4] tensor, got shape {tuple(boxes.shape)}"
        )
    if dtypes and not boxes.is_floating_point():
        raise InputTypeError(
            f"{where}['boxes']: expected a floating-point tensor, got dtype {boxes.dtype}"
        )
    if finite and not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{where}['boxes']: expected finite coordinates, got NaN or inf")
    if not labels:
        return
    classes = target["labels"]
    if not isinstance(classes, Tensor):
        raise InputTypeError(f"{where}['labels']: expected a [G] tensor, got {describe(classes)}")
    if classes.shape != boxes.shape[:1]:
        raise ValueError(
            f"{where}['labels']: expected a tensor of shape [{boxes.shape[0]}] (one per box), "
            f"got shape {tuple(classes.shape)}"
        )
    if dtypes and classes.dtype != torch.int64:
        raise InputTypeError(f"{where}['labels']: expected dtype torch.int64, got {classes.dtype}")


def check_label_range(targets: list[dict[str, Tensor]], num_classes: int) -> None:
    """Ground-truth labels must lie in [0, C): a larger one would index past the class logits.
    One host sync per training step: a wrong label must not train silently."""
    if not targets:
        return
    labels = torch.cat([t["labels"].reshape(-1) for t in targets])
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(labels[bad][0])
        image = next(
            i
            for i, t in enumerate(targets)
            if bool(((t["labels"] < 0) | (t["labels"] >= num_classes)).any())
        )
        raise ValueError(
            f"targets[{image}]['labels']: expected labels in [0, {num_classes}) for "
            f"num_classes={num_classes}, found label {first}"
        )
