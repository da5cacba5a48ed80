"""Feature Pyramid Network (Lin et al. 2017, "Feature Pyramid Networks for Object Detection").

A trunk gives feature maps C2..C5 whose resolution halves and whose channel count grows at each
stage. The FPN (Sec. 3) turns them into maps P2..P5 that all have the same number of channels:
a 1x1 "lateral" conv brings each C_l to ``out_channels``, a top-down pass adds the 2x
nearest-upsampled coarser map, and a 3x3 conv smooths each sum (aliasing of the upsampling).
Faster R-CNN with FPN (Sec. 4.1) adds P6, a stride-2 subsampling of P5, used by the RPN only.

Shapes: N images, L levels, C_l input channels of level l, H_l x W_l its grid, D out_channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn


def conv_norm(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    norm_layer: Callable[..., nn.Module] | None = None,
) -> nn.Sequential:
    """A "same"-padded conv followed by an optional norm layer, as ``nn.Sequential``.

    Children are named ``0`` (conv) and ``1`` (norm), the keys torchvision's
    ``Conv2dNormActivation`` uses; the conv has a bias only when there is no norm after it
    (a norm's shift makes a bias redundant).
    """
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=(kernel_size - 1) // 2,  # keeps H x W for odd kernels
            bias=norm_layer is None,
        )
    ]
    if norm_layer is not None:
        layers.append(norm_layer(out_channels))
    return nn.Sequential(*layers)


class ExtraFPNBlock(nn.Module):
    """Base class of blocks that add levels on top of the pyramid (e.g. P6, or P6 and P7).

    ``forward(results, x, names)`` takes the FPN outputs, the trunk's input features and their
    names, and returns the extended outputs and names. ``names`` (a class attribute) lists the
    levels a block adds, so that their names are known before a forward pass.
    """

    #: Names of the levels this block appends (None when not declared, known only when it runs).
    names: tuple[str, ...] | None = None

    def forward(
        self, results: list[Tensor], x: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        """Return ``results`` and ``names`` extended with the extra levels."""
        raise NotImplementedError


class LastLevelMaxPool(ExtraFPNBlock):
    """Adds level ``"pool"`` (P6): the last output subsampled with stride 2 (FPN paper, Sec. 4.1).

    A max-pool with a 1x1 window and stride 2 picks every second pixel, nothing more.
    """

    names = ("pool",)

    def forward(
        self, results: list[Tensor], x: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        """Append the subsampled last level [N, D, ceil(H/2), ceil(W/2)] named ``"pool"``."""
        subsampled = F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0)
        return [*results, subsampled], [*names, "pool"]


class LastLevelP6P7(ExtraFPNBlock):
    """Adds P6 and P7 with two stride-2 3x3 convs, as RetinaNet does (Lin et al. 2017b, Sec. 4).

    P6 is computed from P5 when the channel counts agree, else from C5; P7 = conv(relu(P6)).
    """

    names = ("p6", "p7")

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.use_P5 = in_channels == out_channels

    def forward(
        self, results: list[Tensor], x: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        """Append P6 and P7 (each half the previous size), named ``"p6"`` and ``"p7"``."""
        source = results[-1] if self.use_P5 else x[-1]
        p6 = self.p6(source)
        p7 = self.p7(F.relu(p6))
        return [*results, p6, p7], [*names, "p6", "p7"]


class FeaturePyramidNetwork(nn.Module):
    """Top-down pathway with lateral connections over a dict of feature maps (FPN, Sec. 3).

    Args:
        in_channels_list: channels C_l of each input map, finest level first.
        out_channels: channels D of every output map.
        extra_blocks: optional :class:`ExtraFPNBlock` adding coarser levels.
        norm_layer: optional norm after each conv (``nn.BatchNorm2d`` in Faster R-CNN v2).

    ``state_dict`` keys mirror torchvision: ``inner_blocks.{l}.0.weight`` (1x1 lateral convs),
    ``layer_blocks.{l}.0.weight`` (3x3 output convs), ``.1.*`` for the norm when present.
    """

    # Version 2 stores each conv inside an nn.Sequential ("inner_blocks.0.0.weight"); version 1
    # checkpoints stored the bare conv ("inner_blocks.0.weight") and are renamed on load.
    _version = 2

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if any(c <= 0 for c in in_channels_list):
            raise ValueError(
                f"in_channels_list: expected positive channel counts, got {in_channels_list}"
            )
        if extra_blocks is not None and not isinstance(extra_blocks, ExtraFPNBlock):
            raise TypeError(f"extra_blocks: expected an ExtraFPNBlock, got {type(extra_blocks)}")
        self.inner_blocks = nn.ModuleList(
            conv_norm(c, out_channels, 1, norm_layer) for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            conv_norm(out_channels, out_channels, 3, norm_layer) for _ in in_channels_list
        )
        # Initialise before attaching extra_blocks, which initialise their own convs.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.extra_blocks = extra_blocks

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        if local_metadata.get("version", 1) < 2:
            for block in ("inner_blocks", "layer_blocks"):
                for i in range(len(self.inner_blocks)):
                    for kind in ("weight", "bias"):
                        old = f"{prefix}{block}.{i}.{kind}"
                        if old in state_dict:
                            state_dict[f"{prefix}{block}.{i}.0.{kind}"] = state_dict.pop(old)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Build the pyramid.

        Args:
            x: ordered dict name -> [N, C_l, H_l, W_l], finest level first.

        Returns:
            ordered dict name -> [N, D, H_l, W_l], same names and order (plus the extra levels).
        """
        names = list(x.keys())
        features = list(x.values())
        if len(features) != len(self.inner_blocks):
            raise ValueError(
                f"x: expected {len(self.inner_blocks)} feature maps, got {len(features)} ({names})"
            )
        # Coarsest level first: its lateral conv starts the top-down pathway.
        top_down = self.inner_blocks[-1](features[-1])  # [N, D, H_L, W_L]
        outputs = [self.layer_blocks[-1](top_down)]
        for level in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[level](features[level])  # [N, D, H_l, W_l]
            # Upsample to the lateral's exact size (not a fixed 2x): odd sizes round differently.
            upsampled = F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            top_down = lateral + upsampled
            outputs.insert(0, self.layer_blocks[level](top_down))
        if self.extra_blocks is not None:
            outputs, names = self.extra_blocks(outputs, features, names)
        return OrderedDict(zip(names, outputs))
