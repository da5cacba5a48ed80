"""A narrow convolutional trunk that trains from scratch on a CPU in minutes.

No pretrained weights exist offline, and FrozenBatchNorm from scratch normalises nothing, so the
small detector's trunk is a plain ResNet-style stack (He et al. 2016, Sec. 3.3) with trainable
BatchNorm: a strided stem and four stages, each halving the resolution and then refining with
one residual block. Its children are named like a torchvision ResNet's stages, so the same
:class:`~rcnn_lab.backbone.BackboneWithFPN` cuts it and the same FPN sits on top.

Shapes: N images, 3 x H x W input; ``stem`` gives stride 2, ``layer1..layer4`` strides 4..32.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

#: Channels of the stem and of layer1..layer4 (about 0.5 M trunk parameters).
SMALL_TRUNK_WIDTHS = (16, 32, 64, 96, 128)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: BatchNorm has one), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers added to their input, then ReLU (a ResNet basic block).

    The second BatchNorm starts at zero scale, so each block begins as the identity and the
    trunk trains like a shallower network at first (Goyal et al. 2017, Sec. 5.1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """[N, D, H, W] -> [N, D, H, W]."""
        return self.relu(x + self.bn2(self.conv2(self.conv1(x))))


class SmallTrunk(nn.Sequential):
    """Stem and four stages, children ``stem, layer1, layer2, layer3, layer4``.

    Args:
        widths: channels of the stem and of each of the four stages.

    Attributes:
        stage_channels: output channels of ``layer1..layer4`` (the FPN's ``in_channels_list``).
    """

    def __init__(self, widths: tuple[int, ...] = SMALL_TRUNK_WIDTHS) -> None:
        if len(widths) != 5 or any(int(w) != w or w < 1 for w in widths):
            raise ValueError(f"widths: expected 5 positive ints (stem + 4 stages), got {widths}")
        stages: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn_relu(3, widths[0], 2))
        for i in range(1, 5):
            stages[f"layer{i}"] = nn.Sequential(
                conv_bn_relu(widths[i - 1], widths[i], stride=2), ResidualBlock(widths[i])
            )
        super().__init__(stages)
        self.stage_channels = list(widths[1:])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
