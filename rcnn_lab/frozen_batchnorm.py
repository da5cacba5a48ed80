"""FrozenBatchNorm2d: batch normalisation with fixed statistics and affine parameters.

Detection trains on a few large images per GPU (Faster R-CNN, Sec. 3.3; Mask R-CNN, Sec. 3.1
trains with 2 images per GPU), far too few to estimate per-channel batch statistics. The
ImageNet trunk's BatchNorm layers are therefore "frozen": their running mean/variance and their
scale/shift are kept as constants, and each layer is one per-channel affine map.

Shapes: N images, D channels, H x W feature grid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: torchvision's (and ``nn.BatchNorm2d``'s) default epsilon added to the variance.
DEFAULT_EPS = 1e-5


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are buffers, never trained.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, computed as one
    per-channel multiply-add. All four tensors are buffers (not parameters), so an optimiser
    never sees them and ``state_dict`` keys match ``nn.BatchNorm2d``'s, minus
    ``num_batches_tracked`` (silently dropped when loading a BatchNorm state_dict).

    Args:
        num_features: number of channels D of the expected [N, D, H, W] input.
        eps: added to the variance before the square root, for numerical stability.
    """

    def __init__(self, num_features: int, eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

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
        # A trained nn.BatchNorm2d carries a step counter we have no use for: drop it, so that a
        # BatchNorm checkpoint loads into the frozen layer under strict=True.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` [N, D, H, W] channel by channel; returns [N, D, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"x: expected [N, {self.weight.shape[0]}, H, W], got shape {tuple(x.shape)}"
            )
        # Fold the four vectors into one scale and one shift per channel: a single multiply-add
        # over the big tensor instead of four elementwise passes.
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)  # [D]
        shift = self.bias - self.running_mean * scale  # [D]
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)  # [N, D, H, W]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.weight.shape[0]}, eps={self.eps})"
