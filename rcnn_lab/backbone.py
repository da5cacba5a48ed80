"""Backbones for Faster R-CNN: a classification trunk cut into stages, topped by an FPN.

The trunk (ResNet-50 or MobileNetV3-Large, supplied by ``torchvision.models``) is cut after the
stages whose outputs feed the Feature Pyramid Network (Lin et al. 2017, Sec. 3-4): C2..C5 for
ResNet (strides 4, 8, 16, 32), the last two strided stages for MobileNetV3. The early stages are
frozen (``trainable_layers``): they learn generic edges and textures that ImageNet already taught
them, and freezing them saves memory (Faster R-CNN, Sec. 4; FPN, Sec. 5.1).

Shapes: N images, 3 x H x W input, D = ``out_channels`` (256) of every pyramid level.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import WeightsEnum, mobilenet, resnet

from rcnn_lab.fpn import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool
from rcnn_lab.frozen_batchnorm import FrozenBatchNorm2d

#: Channels of every pyramid level (FPN paper, Sec. 3, d = 256).
FPN_OUT_CHANNELS = 256
#: ResNet stage names, last stage first; ``trainable_layers=k`` trains the first k of them.
RESNET_STAGES_LAST_FIRST = ("layer4", "layer3", "layer2", "layer1", "conv1")


class IntermediateLayerGetter(nn.ModuleDict):
    """Runs a model's direct children in order and returns the outputs of some of them.

    Children after the last requested one are dropped, so a classifier head (``avgpool``,
    ``fc``) costs nothing and does not appear in the ``state_dict``; kept children keep their
    names (``conv1``, ``layer1``...), so the trunk's weights load unchanged.

    Args:
        model: a module whose direct children are applied one after another in ``forward``.
        return_layers: child name -> name of its output in the returned dict.
    """

    def __init__(self, model: nn.Module, return_layers: dict[str, str]) -> None:
        children = OrderedDict(model.named_children())
        missing = set(return_layers) - set(children)
        if missing:
            raise ValueError(
                f"return_layers: {sorted(missing)} are not children of the model "
                f"(children: {list(children)})"
            )
        wanted = {str(k): str(v) for k, v in return_layers.items()}
        kept: OrderedDict[str, nn.Module] = OrderedDict()
        for name, child in children.items():
            kept[name] = child
            if all(n in kept for n in wanted):
                break
        super().__init__(kept)
        self.return_layers = wanted

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Apply the kept children to ``x``; returns ordered dict out_name -> feature map."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, child in self.items():
            x = child(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class BackboneWithFPN(nn.Module):
    """A trunk cut by :class:`IntermediateLayerGetter` (``body``) followed by an FPN (``fpn``).

    Args:
        backbone: the trunk; its direct children named in ``return_layers`` feed the FPN.
        return_layers: child name -> output name ("0", "1", ...).
        in_channels_list: channels of each returned map, in order.
        out_channels: channels D of every pyramid level.
        extra_blocks: extra levels; default :class:`LastLevelMaxPool` (adds ``"pool"``).
        norm_layer: optional norm inside the FPN convs.

    Attributes:
        out_channels: D, read by the RPN and RoI heads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        return_layers: dict[str, str],
        in_channels_list: list[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(backbone, return_layers=return_layers)
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=in_channels_list,
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
            norm_layer=norm_layer,
        )
        self.out_channels = out_channels

    @property
    def featmap_names(self) -> list[str] | None:
        """Names of the levels :meth:`forward` returns, known without running it."""
        extra = self.fpn.extra_blocks
        extra_names = () if extra is None else getattr(extra, "names", None)
        if extra_names is None:
            return None
        return [*self.body.return_layers.values(), *extra_names]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Images [N, 3, H, W] -> ordered dict level name -> [N, D, H_l, W_l]."""
        return self.fpn(self.body(x))


def _freeze_all_but(module: nn.Module, trainable_prefixes: list[str]) -> None:
    """``requires_grad=False`` on every parameter whose name starts with none of the prefixes."""
    for name, parameter in module.named_parameters():
        if not any(name.startswith(prefix) for prefix in trainable_prefixes):
            parameter.requires_grad_(False)


def resnet_fpn_extractor(
    backbone: resnet.ResNet,
    trainable_layers: int,
    returned_layers: list[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
    norm_layer: Callable[..., nn.Module] | None = None,
) -> BackboneWithFPN:
    """Freeze a ResNet's early stages and put an FPN on ``layer{returned_layers}``.

    Args:
        backbone: a torchvision ResNet (its children ``conv1, bn1, relu, maxpool, layer1..4``).
        trainable_layers: 0..5, how many stages stay trainable counting from ``layer4`` back
            (5 also trains ``conv1`` and ``bn1``).
        returned_layers: stages 1..4 feeding the FPN; default all four (C2..C5).
        extra_blocks: extra pyramid levels; default :class:`LastLevelMaxPool`.
        norm_layer: optional norm inside the FPN convs (``nn.BatchNorm2d`` for v2).
    """
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers: expected an int in [0, 5], got {trainable_layers}")
    trainable = list(RESNET_STAGES_LAST_FIRST[:trainable_layers])
    if trainable_layers == 5:
        trainable.append("bn1")  # the stem's norm trains only when everything does
    _freeze_all_but(backbone, trainable)

    returned_layers = [1, 2, 3, 4] if returned_layers is None else list(returned_layers)
    if not returned_layers or min(returned_layers) < 1 or max(returned_layers) > 4:
        raise ValueError(f"returned_layers: expected values in [1, 4], got {returned_layers}")
    return_layers = {f"layer{stage}": str(i) for i, stage in enumerate(returned_layers)}
    # After the trunk is built, ``inplanes`` holds layer4's output channels (2048 for
    # ResNet-50, 512 for ResNet-18); each stage halves the channels going back: layer1 = /8.
    layer1_channels = backbone.inplanes // 8
    in_channels_list = [layer1_channels * 2 ** (stage - 1) for stage in returned_layers]
    return BackboneWithFPN(
        backbone,
        return_layers,
        in_channels_list,
        FPN_OUT_CHANNELS,
        extra_blocks=extra_blocks,
        norm_layer=norm_layer,
    )


def resnet_fpn_backbone(
    *,
    backbone_name: str,
    weights: WeightsEnum | None = None,
    norm_layer: Callable[..., nn.Module] = FrozenBatchNorm2d,
    trainable_layers: int = 3,
    returned_layers: list[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
) -> BackboneWithFPN:
    """Build ``torchvision.models.<backbone_name>`` and wrap it with an FPN.

    Args:
        backbone_name: a ResNet builder name, e.g. ``"resnet50"``.
        weights: a torchvision weights enum for the trunk, or None (random init).
        norm_layer: the trunk's norm layer; frozen BN by default (few images per batch).
        trainable_layers, returned_layers, extra_blocks: see :func:`resnet_fpn_extractor`.
    """
    if backbone_name not in resnet.__all__ or not backbone_name[0].islower():
        raise ValueError(f"backbone_name: expected a ResNet builder name, got {backbone_name!r}")
    trunk = getattr(resnet, backbone_name)(weights=weights, norm_layer=norm_layer)
    return resnet_fpn_extractor(trunk, trainable_layers, returned_layers, extra_blocks)


def _validate_trainable_layers(
    is_trained: bool,
    trainable_backbone_layers: int | None,
    max_value: int,
    default_value: int,
) -> int:
    """The number of trainable trunk stages a detection builder should use.

    Untrained trunks train every stage (``max_value``; a warning if the caller asked for
    something else); pretrained ones default to ``default_value``. Raises ValueError outside
    ``[0, max_value]``.
    """
    if not is_trained:
        if trainable_backbone_layers is not None:
            warnings.warn(
                "trainable_backbone_layers has no effect without pretrained weights "
                f"(weights or weights_backbone); using {max_value} so that all layers train",
                stacklevel=2,
            )
        trainable_backbone_layers = max_value
    if trainable_backbone_layers is None:
        trainable_backbone_layers = default_value
    if not 0 <= trainable_backbone_layers <= max_value:
        raise ValueError(
            f"trainable_backbone_layers: expected an int in [0, {max_value}], "
            f"got {trainable_backbone_layers}"
        )
    return trainable_backbone_layers


def _mobilenet_stage_starts(features: nn.Sequential) -> list[int]:
    """Indices in ``features`` where a stage starts: the stem, each strided block, the last conv.

    torchvision marks blocks that halve the resolution with ``_is_cn = True``.
    """
    strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    return [0, *strided, len(features) - 1]


def mobilenet_extractor(
    backbone: mobilenet.MobileNetV2 | mobilenet.MobileNetV3,
    fpn: bool,
    trainable_layers: int,
    returned_layers: list[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
    norm_layer: Callable[..., nn.Module] | None = None,
) -> nn.Module:
    """Freeze a MobileNet's early stages and, with ``fpn``, put an FPN on two of its stages.

    Args:
        backbone: a torchvision MobileNetV2/V3; only ``backbone.features`` is used.
        fpn: True -> :class:`BackboneWithFPN`; False -> the features plus a 1x1 conv to 256
            channels (``nn.Sequential``, one output map).
        trainable_layers: 0..S, how many of the S stages stay trainable, counting from the last.
        returned_layers: stage indices 0..S-1 feeding the FPN; default the last two.
        extra_blocks: extra pyramid levels; default :class:`LastLevelMaxPool`.
        norm_layer: optional norm inside the FPN convs.
    """
    features = backbone.features
    stage_starts = _mobilenet_stage_starts(features)
    num_stages = len(stage_starts)
    if not 0 <= trainable_layers <= num_stages:
        raise ValueError(
            f"trainable_layers: expected an int in [0, {num_stages}], got {trainable_layers}"
        )
    first_trained = (
        len(features) if trainable_layers == 0 else stage_starts[num_stages - trainable_layers]
    )
    for block in features[:first_trained]:
        block.requires_grad_(False)

    if not fpn:
        # A 1x1 conv mixes the last stage's channels down to 256 (a single-level backbone).
        model = nn.Sequential(features, nn.Conv2d(features[-1].out_channels, FPN_OUT_CHANNELS, 1))
        model.out_channels = FPN_OUT_CHANNELS
        return model
    if returned_layers is None:
        returned_layers = [num_stages - 2, num_stages - 1]
    if not returned_layers or min(returned_layers) < 0 or max(returned_layers) >= num_stages:
        raise ValueError(
            f"returned_layers: expected values in [0, {num_stages - 1}], got {returned_layers}"
        )
    return_layers = {str(stage_starts[stage]): str(i) for i, stage in enumerate(returned_layers)}
    in_channels_list = [features[stage_starts[stage]].out_channels for stage in returned_layers]
    return BackboneWithFPN(
        features,
        return_layers,
        in_channels_list,
        FPN_OUT_CHANNELS,
        extra_blocks=extra_blocks,
        norm_layer=norm_layer,
    )


def mobilenet_backbone(
    *,
    backbone_name: str,
    weights: WeightsEnum | None = None,
    fpn: bool,
    norm_layer: Callable[..., nn.Module] = FrozenBatchNorm2d,
    trainable_layers: int = 2,
    returned_layers: list[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
) -> nn.Module:
    """Build ``torchvision.models.<backbone_name>`` (a MobileNet) and cut it for detection.

    See :func:`mobilenet_extractor` for ``fpn``, ``trainable_layers``, ``returned_layers``
    and ``extra_blocks``.
    """
    if backbone_name not in mobilenet.__all__ or not backbone_name[0].islower():
        raise ValueError(f"backbone_name: expected a MobileNet builder name, got {backbone_name!r}")
    trunk = getattr(mobilenet, backbone_name)(weights=weights, norm_layer=norm_layer)
    return mobilenet_extractor(trunk, fpn, trainable_layers, returned_layers, extra_blocks)
