"""The four Faster R-CNN builders of torchvision 0.29, with its weights (Faster R-CNN; FPN;
Li et al. 2021 "Benchmarking Detection Transfer Learning with Vision Transformers" for v2).

Each builder takes torchvision's keyword arguments and weight enums (or their names, e.g.
"COCO_V1" or "FasterRCNN_ResNet50_FPN_Weights.COCO_V1") and downloads weights through
torchvision's own machinery, so a checkpoint already in the torch hub cache loads offline.
torchvision's pre-0.13 calls work too, with its deprecation warnings: ``pretrained=True``,
``pretrained_backbone=False`` and positional arguments. A keyword that neither the builder nor
:class:`FasterRCNN` knows raises TypeError (torchvision ignores it silently).
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet50_Weights,
    WeightsEnum,
    mobilenet_v3_large,
    resnet50,
)
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
)

from rcnn_lab.anchors import FPN_SIZES, fpn_anchor_generator
from rcnn_lab.backbone import (
    BackboneWithFPN,
    _validate_trainable_layers,
    mobilenet_extractor,
    resnet_fpn_extractor,
)
from rcnn_lab.faster_rcnn import FasterRCNN, _default_anchor_generator, faster_rcnn_keywords
from rcnn_lab.frozen_batchnorm import FrozenBatchNorm2d
from rcnn_lab.ops.poolers import MultiScaleRoIAlign
from rcnn_lab.roi_heads import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from rcnn_lab.rpn import RPNHead
from rcnn_lab.small_trunk import SMALL_TRUNK_WIDTHS, SmallTrunk
from rcnn_lab.transform import reject_unknown_keywords

#: COCO's 80 classes in the 91-slot numbering of the original annotations, plus background.
COCO_NUM_CLASSES = 91
#: Trunk stages that may be unfrozen, ResNet conv1+layer1..4 (5), MobileNetV3 stages (6).
RESNET_STAGES, MOBILENET_STAGES = 5, 6
#: Stages trained by default when starting from pretrained weights.
DEFAULT_TRAINABLE_STAGES = 3
#: MobileNet FPN, all five anchor sizes at every one of its 3 levels.
MOBILENET_ANCHOR_SIZES = (FPN_SIZES,) * 3

# --- the small CPU detector (fasterrcnn_small_fpn) ---
#: ShapesDataset's six shape classes plus the background.
SMALL_NUM_CLASSES = 7
#: Channels of every pyramid level and width of the box head (256 and 1024 in ResNet-50-FPN).
SMALL_FPN_CHANNELS, SMALL_REPRESENTATION_SIZE = 64, 256
#: One anchor size per level (strides 4..64), for objects of 13..96 px in 160 px scenes.
SMALL_ANCHOR_SIZES = ((16,), (32,), (64,), (128,), (256,))
#: RoIAlign grid (7 x 7, as in the big models).
ROI_OUTPUT_SIZE = 7
#: A 64 px RoI maps to level 4 (224 px in the big models, where objects are larger).
SMALL_CANONICAL_SCALE = 64
#: FasterRCNN defaults of the small model (160 px images, fewer proposals and sampled RoIs).
SMALL_DEFAULTS: dict[str, Any] = {
    "min_size": 160,
    "max_size": 160,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "rpn_batch_size_per_image": 128,
    "box_batch_size_per_image": 128,
    "box_detections_per_img": 50,
}


def _positional_to_keywords(builder: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Name a legacy call's positional arguments after the builder's parameters, in order."""
    order = [name for name in inspect.signature(builder).parameters if name != "kwargs"]
    if len(args) > len(order):
        raise TypeError(
            f"{builder.__name__}() takes at most {len(order)} positional arguments, got {len(args)}"
        )
    named = order[: len(args)]
    clashes = [name for name in named if name in kwargs]
    if clashes:
        raise TypeError(f"{builder.__name__}() got multiple values for argument {clashes[0]!r}")
    quoted = [f"'{name}'" for name in named]  # listed as torchvision lists them
    listed = (
        " and ".join(quoted) if len(quoted) <= 2 else f"{', '.join(quoted[:-1])}, and {quoted[-1]}"
    )
    warnings.warn(
        f"Using {listed} as positional parameter(s) is deprecated since 0.13 and may be "
        "removed in the future. Please use keyword parameter(s) instead.",
        stacklevel=3,  # point at the caller of the builder
    )
    kwargs.update(zip(named, args, strict=True))


def _translate_legacy(kwargs: dict[str, Any], new: str, old: str, default: WeightsEnum) -> None:
    """Replace ``old=flag`` (or a flag passed as ``new=``) by ``new=default`` if the flag is
    true, else ``new=None``, with torchvision's deprecation warnings."""
    value = kwargs.get(new)
    # since 0.13 weights= takes None, an enum or its name; "legacy" and booleans are flags
    modern = value is None or (isinstance(value, (WeightsEnum, str)) and value != "legacy")
    if old not in kwargs and modern:
        return
    if old in kwargs and new in kwargs:
        raise TypeError(f"got both '{new}' and its deprecated spelling '{old}': pass only '{new}'")
    if old in kwargs:
        warnings.warn(
            f"The parameter '{old}' is deprecated since 0.13 and may be removed in the future, "
            f"please use '{new}' instead.",
            stacklevel=3,
        )
    flag = kwargs.pop(old) if old in kwargs else kwargs.pop(new)
    weights = default if flag else None
    message = (
        f"Arguments other than a weight enum or `None` for '{new}' are deprecated since 0.13 "
        "and may be removed in the future. "
        f"The current behavior is equivalent to passing `{new}={weights}`."
    )
    if flag:
        message += (
            f" You can also use `{new}={type(weights).__name__}.DEFAULT` "
            "to get the most up-to-date weights."
        )
    warnings.warn(message, stacklevel=3)
    kwargs[new] = weights


def _legacy_interface(
    pretrained: WeightsEnum, pretrained_backbone: WeightsEnum
) -> Callable[[Callable[..., FasterRCNN]], Callable[..., FasterRCNN]]:
    """Let a builder take torchvision's pre-0.13 arguments, with torchvision's warnings.

    ``pretrained=True`` becomes ``weights=pretrained``, ``pretrained_backbone=True``
    ``weights_backbone=pretrained_backbone``, False becomes None (a boolean passed as
    ``weights=`` is read the same way), and positional arguments are named in signature order.
    A keyword that neither the builder nor FasterRCNN takes then raises TypeError, before any
    trunk is built or downloaded.
    """

    def decorate(builder: Callable[..., FasterRCNN]) -> Callable[..., FasterRCNN]:
        @functools.wraps(builder)
        def build(*args: Any, **kwargs: Any) -> FasterRCNN:
            if args:
                _positional_to_keywords(builder, args, kwargs)
            _translate_legacy(kwargs, "weights", "pretrained", pretrained)
            _translate_legacy(
                kwargs, "weights_backbone", "pretrained_backbone", pretrained_backbone
            )
            own = [name for name in inspect.signature(builder).parameters if name != "kwargs"]
            reject_unknown_keywords(builder.__name__, kwargs, [*own, *faster_rcnn_keywords()])
            return builder(**kwargs)

        return build

    return decorate


@contextmanager
def _explain_download_errors(weights: WeightsEnum) -> Iterator[None]:
    """Turn a failed download into a RuntimeError that says how to load the file offline."""
    try:
        yield
    except OSError as err:  # URLError, HTTPError and socket errors are all OSErrors
        filename = os.path.basename(weights.url)
        cache = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
        raise RuntimeError(
            f"could not download the weights {weights} from {weights.url} ({err}). "
            "Offline? Fetch that file on a machine with internet, then either copy it to "
            f"{cache} (weights= then loads it from there without a download), or build the "
            "model with weights=None, weights_backbone=None and load it yourself: "
            "model.load_state_dict(torch.load(path, weights_only=True))"
        ) from err


def _load_weights(model: nn.Module, weights: WeightsEnum, progress: bool) -> None:
    """Download (or read from the hub cache) ``weights`` and load them strictly."""
    with _explain_download_errors(weights):
        state_dict = weights.get_state_dict(progress=progress, check_hash=True)
    model.load_state_dict(state_dict)


def _trunk(
    make: Callable[..., nn.Module], weights_backbone: WeightsEnum | None, **kwargs: Any
) -> nn.Module:
    """A torchvision classification trunk, with a clear error if its download fails."""
    if weights_backbone is None:
        return make(weights=None, **kwargs)
    with _explain_download_errors(weights_backbone):
        return make(weights=weights_backbone, **kwargs)


def _resolve_weights(
    weights_type: type[WeightsEnum],
    weights: Any,
    backbone_type: type[WeightsEnum],
    weights_backbone: Any,
    num_classes: int | None,
) -> tuple[WeightsEnum | None, WeightsEnum | None, int]:
    """Enums from names; detection weights replace the trunk's and fix num_classes."""
    weights = weights_type.verify(weights)
    weights_backbone = backbone_type.verify(weights_backbone)
    if weights is None:
        return None, weights_backbone, COCO_NUM_CLASSES if num_classes is None else num_classes
    expected = len(weights.meta["categories"])
    if num_classes is not None and num_classes != expected:
        raise ValueError(
            f"num_classes={num_classes} does not fit the weights {weights}, "
            f"which have {expected} classes"
        )
    return weights, None, expected


def _assemble(
    backbone: Callable[[int, Callable[..., nn.Module]], nn.Module],
    *,
    weights: WeightsEnum | None,
    weights_backbone: WeightsEnum | None,
    num_classes: int | None,
    progress: bool,
    trainable_backbone_layers: int | None,
    stages: int | None,
    parts: Callable[[nn.Module], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """The one builder pipeline: trainable stages -> backbone -> FasterRCNN -> weights.

    Args:
        backbone: ``(trainable stages, norm layer) -> backbone``; the norm layer is
            FrozenBatchNorm2d when starting from pretrained weights (their statistics stay
            fixed) and BatchNorm2d from scratch (the trunk learns them).
        weights, weights_backbone, num_classes, progress: as resolved by _resolve_weights.
        trainable_backbone_layers, stages: the requested and the available trunk stages
            (``stages=None``: a trunk without freezing, e.g. the small model's).
        parts: ``backbone -> extra FasterRCNN arguments`` (anchor generator, heads, pooler).
        **kwargs: the caller's FasterRCNN arguments (they win over ``parts``).
    """
    is_trained = weights is not None or weights_backbone is not None
    trainable = (
        _validate_trainable_layers(
            is_trained, trainable_backbone_layers, stages, DEFAULT_TRAINABLE_STAGES
        )
        if stages is not None
        else 0
    )
    norm_layer = FrozenBatchNorm2d if is_trained else nn.BatchNorm2d
    body = backbone(trainable, norm_layer)
    arguments = {**(parts(body) if parts is not None else {}), **kwargs}
    model = FasterRCNN(body, num_classes=num_classes, **arguments)
    if weights is not None:
        _load_weights(model, weights, progress)
    return model


@_legacy_interface(FasterRCNN_ResNet50_FPN_Weights.COCO_V1, ResNet50_Weights.IMAGENET1K_V1)
def fasterrcnn_resnet50_fpn(
    *,
    weights: FasterRCNN_ResNet50_FPN_Weights | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: ResNet50_Weights | str | None = ResNet50_Weights.IMAGENET1K_V1,
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN with a ResNet-50-FPN backbone (torchvision's, 37.0 box AP on COCO).

    Args:
        weights: detection weights (enum or name); None for random heads.
        progress: show a download progress bar.
        num_classes: classes including the background (91 by default and with COCO weights).
        weights_backbone: ImageNet weights of the trunk (ignored when ``weights`` is given).
        trainable_backbone_layers: 0..5 trunk stages to train (default 3 when pretrained).
        **kwargs: passed to :class:`FasterRCNN`.
    """
    weights, weights_backbone, num_classes = _resolve_weights(
        FasterRCNN_ResNet50_FPN_Weights, weights, ResNet50_Weights, weights_backbone, num_classes
    )

    def backbone(trainable: int, norm_layer: Callable[..., nn.Module]) -> nn.Module:
        trunk = _trunk(resnet50, weights_backbone, progress=progress, norm_layer=norm_layer)
        return resnet_fpn_extractor(trunk, trainable)

    model = _assemble(
        backbone,
        weights=weights,
        weights_backbone=weights_backbone,
        num_classes=num_classes,
        progress=progress,
        trainable_backbone_layers=trainable_backbone_layers,
        stages=RESNET_STAGES,
        **kwargs,
    )
    if weights == FasterRCNN_ResNet50_FPN_Weights.COCO_V1:
        # these weights were trained before torchvision added eps to FrozenBatchNorm2d
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = 0.0
    return model


@_legacy_interface(FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1, ResNet50_Weights.IMAGENET1K_V1)
def fasterrcnn_resnet50_fpn_v2(
    *,
    weights: FasterRCNN_ResNet50_FPN_V2_Weights | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: ResNet50_Weights | str | None = None,
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN v2: BatchNorm everywhere, a 2-conv RPN head and a 4conv1fc box head (46.7 AP).

    Args: as :func:`fasterrcnn_resnet50_fpn` (here ``weights_backbone`` defaults to None).
    """
    weights, weights_backbone, num_classes = _resolve_weights(
        FasterRCNN_ResNet50_FPN_V2_Weights, weights, ResNet50_Weights, weights_backbone, num_classes
    )

    def backbone(trainable: int, norm_layer: Callable[..., nn.Module]) -> nn.Module:
        # v2 trains BatchNorm everywhere, pretrained trunk or not
        trunk = _trunk(resnet50, weights_backbone, progress=progress)
        return resnet_fpn_extractor(trunk, trainable, norm_layer=nn.BatchNorm2d)

    def parts(body: nn.Module) -> dict[str, Any]:
        anchor_generator = _default_anchor_generator()
        num_anchors = anchor_generator.num_anchors_per_location()[0]
        return {
            "rpn_anchor_generator": anchor_generator,
            "rpn_head": RPNHead(body.out_channels, num_anchors, conv_depth=2),
            "box_head": FastRCNNConvFCHead(
                (body.out_channels, ROI_OUTPUT_SIZE, ROI_OUTPUT_SIZE),
                [256, 256, 256, 256],
                [1024],
                norm_layer=nn.BatchNorm2d,
            ),
        }

    return _assemble(
        backbone,
        weights=weights,
        weights_backbone=weights_backbone,
        num_classes=num_classes,
        progress=progress,
        trainable_backbone_layers=trainable_backbone_layers,
        stages=RESNET_STAGES,
        parts=parts,
        **kwargs,
    )


def _fasterrcnn_mobilenet_v3_large_fpn(
    weights: WeightsEnum | None,
    progress: bool,
    num_classes: int | None,
    weights_backbone: WeightsEnum | None,
    trainable_backbone_layers: int | None,
    **kwargs: Any,
) -> FasterRCNN:
    """The shared body of the two MobileNetV3-Large FPN builders."""

    def backbone(trainable: int, norm_layer: Callable[..., nn.Module]) -> nn.Module:
        trunk = _trunk(
            mobilenet_v3_large, weights_backbone, progress=progress, norm_layer=norm_layer
        )
        return mobilenet_extractor(trunk, True, trainable)

    return _assemble(
        backbone,
        weights=weights,
        weights_backbone=weights_backbone,
        num_classes=num_classes,
        progress=progress,
        trainable_backbone_layers=trainable_backbone_layers,
        stages=MOBILENET_STAGES,
        parts=lambda body: {"rpn_anchor_generator": fpn_anchor_generator(MOBILENET_ANCHOR_SIZES)},
        **kwargs,
    )


@_legacy_interface(
    FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1, MobileNet_V3_Large_Weights.IMAGENET1K_V1
)
def fasterrcnn_mobilenet_v3_large_fpn(
    *,
    weights: FasterRCNN_MobileNet_V3_Large_FPN_Weights | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: MobileNet_V3_Large_Weights | str | None = (
        MobileNet_V3_Large_Weights.IMAGENET1K_V1
    ),
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN with a MobileNetV3-Large FPN backbone, high resolution (32.8 AP).

    Args: as :func:`fasterrcnn_resnet50_fpn`; trainable_backbone_layers is 0..6. Defaults
    rpn_score_thresh=0.05 unless given.
    """
    weights, weights_backbone, num_classes = _resolve_weights(
        FasterRCNN_MobileNet_V3_Large_FPN_Weights,
        weights,
        MobileNet_V3_Large_Weights,
        weights_backbone,
        num_classes,
    )
    kwargs = {"rpn_score_thresh": 0.05, **kwargs}
    return _fasterrcnn_mobilenet_v3_large_fpn(
        weights, progress, num_classes, weights_backbone, trainable_backbone_layers, **kwargs
    )


@_legacy_interface(
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    MobileNet_V3_Large_Weights.IMAGENET1K_V1,
)
def fasterrcnn_mobilenet_v3_large_320_fpn(
    *,
    weights: FasterRCNN_MobileNet_V3_Large_320_FPN_Weights | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: MobileNet_V3_Large_Weights | str | None = (
        MobileNet_V3_Large_Weights.IMAGENET1K_V1
    ),
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN with a MobileNetV3-Large FPN backbone for 320 px images (22.8 AP).

    Args: as :func:`fasterrcnn_mobilenet_v3_large_fpn`. Defaults (unless given):
    min_size=320, max_size=640, rpn_pre/post_nms_top_n_test=150, rpn_score_thresh=0.05.
    """
    weights, weights_backbone, num_classes = _resolve_weights(
        FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
        weights,
        MobileNet_V3_Large_Weights,
        weights_backbone,
        num_classes,
    )
    low_resolution = {
        "min_size": 320,
        "max_size": 640,
        "rpn_pre_nms_top_n_test": 150,
        "rpn_post_nms_top_n_test": 150,
        "rpn_score_thresh": 0.05,
    }
    return _fasterrcnn_mobilenet_v3_large_fpn(
        weights,
        progress,
        num_classes,
        weights_backbone,
        trainable_backbone_layers,
        **{**low_resolution, **kwargs},
    )


def fasterrcnn_small_fpn(
    *,
    num_classes: int = SMALL_NUM_CLASSES,
    widths: tuple[int, ...] = SMALL_TRUNK_WIDTHS,
    fpn_channels: int = SMALL_FPN_CHANNELS,
    representation_size: int = SMALL_REPRESENTATION_SIZE,
    **kwargs: Any,
) -> FasterRCNN:
    """A small Faster R-CNN that trains from scratch on a CPU (rcnn_lab's own, not torchvision's).

    The same parts as the big builders, only narrower: a :class:`~rcnn_lab.small_trunk.SmallTrunk`
    with trainable BatchNorm (no pretrained weights exist offline, and FrozenBatchNorm from
    scratch normalises nothing), a ``fpn_channels``-wide FPN on its four stages (strides 4-32)
    plus the max-pool level, one anchor size per level, RoIAlign with a level mapper scaled to
    small objects, and a two-layer box head ``representation_size`` wide. Sized for the 160 px
    scenes of :class:`~rcnn_lab.data.ShapesDataset`; the shipped model was trained with it.

    Args:
        num_classes: classes including the background (ShapesDataset's by default).
        widths: channels of the trunk's stem and four stages.
        fpn_channels: channels D of every pyramid level.
        representation_size: width of the box head's two fully connected layers.
        **kwargs: passed to :class:`FasterRCNN`; they override the small defaults
            (``SMALL_DEFAULTS``: 160 px images, fewer proposals and sampled RoIs).
    """

    def backbone(trainable: int, norm_layer: Callable[..., nn.Module]) -> nn.Module:
        trunk = SmallTrunk(widths)  # trainable BatchNorm, nothing frozen
        return_layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
        return BackboneWithFPN(trunk, return_layers, trunk.stage_channels, fpn_channels)

    def parts(body: nn.Module) -> dict[str, Any]:
        pooler = MultiScaleRoIAlign(
            ["0", "1", "2", "3"], ROI_OUTPUT_SIZE, 2, canonical_scale=SMALL_CANONICAL_SCALE
        )
        return {
            **SMALL_DEFAULTS,
            "rpn_anchor_generator": fpn_anchor_generator(SMALL_ANCHOR_SIZES),
            "box_roi_pool": pooler,
            "box_head": TwoMLPHead(fpn_channels * ROI_OUTPUT_SIZE**2, representation_size),
            "box_predictor": FastRCNNPredictor(representation_size, num_classes),
        }

    return _assemble(
        backbone,
        weights=None,
        weights_backbone=None,
        num_classes=None,
        progress=False,
        trainable_backbone_layers=None,
        stages=None,
        parts=parts,
        **kwargs,
    )
