"""An opt-in inference fast path: BatchNorm folded into the convolutions, channels-last memory.

In eval mode a (frozen) BatchNorm is one per-channel affine map, ``y = x * scale + shift`` with
``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``. When
it directly follows a convolution, the map can move into the convolution's weights:

    bn(conv(x)) = (w * x + b) * scale + shift = (w * scale) * x + (b * scale + shift)

so ``w' = w * scale[:, None, None, None]`` and ``b' = b * scale + shift`` (``b = 0`` for a
convolution without bias), and the normalisation layer becomes ``nn.Identity``: one pass less
over every trunk activation. Channels-last (NHWC) memory lets the CPU's convolution kernels
(oneDNN) work without reordering each activation to and from their blocked layout, and turns a
1 x 1 convolution into one matrix product over the pixels' channel rows
(:class:`ChannelsLastPointwiseConv2d`): PyTorch runs small-batch, single-thread 1 x 1
convolutions through a slower generic path that copies channels-last inputs.

Both change the float32 rounding, not the mathematics: detections stay within 1e-2 px of the
exact path (1e-8 in float64), which is why this is an opt-in and the default path stays exact.

Shapes: N images, D_in / D_out channels of a convolution, kh x kw its kernel.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from rcnn_lab.frozen_batchnorm import FrozenBatchNorm2d

__all__ = [
    "ChannelsLastPointwiseConv2d",
    "fold_batchnorm",
    "fold_conv_bn",
    "optimize_for_inference",
]

logger = logging.getLogger(__name__)

#: Normalisation layers that are a fixed per-channel affine map at inference time.
FOLDABLE_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)


def _affine_of(norm: nn.Module, name: str) -> tuple[Tensor, Tensor]:
    """(scale, shift) [D] of a frozen or eval-mode BatchNorm, computed in float64."""
    if isinstance(norm, nn.BatchNorm2d) and norm.running_mean is None:
        raise ValueError(
            f"{name}: BatchNorm2d without running statistics (track_running_stats=False) "
            "normalises with each batch's own statistics and cannot be folded"
        )
    mean, var = norm.running_mean.double(), norm.running_var.double()
    ones = torch.ones_like(mean)
    weight = ones if norm.weight is None else norm.weight.detach().double()
    bias = torch.zeros_like(mean) if norm.bias is None else norm.bias.detach().double()
    if not bool(torch.all(var + norm.eps > 0)):
        raise ValueError(f"{name}: running_var + eps must be positive to fold")
    scale = weight * torch.rsqrt(var + norm.eps)  # [D_out]
    return scale, bias - mean * scale


def fold_conv_bn(conv: nn.Conv2d, norm: nn.Module, name: str = "norm") -> nn.Conv2d:
    """A new convolution equal to ``norm(conv(x))``, with a bias (folded in float64).

    Args:
        conv: a plain ``nn.Conv2d`` (any stride, padding, dilation or groups).
        norm: a :class:`~rcnn_lab.frozen_batchnorm.FrozenBatchNorm2d`, or an ``nn.BatchNorm2d``
            with running statistics (its eval-mode map is folded, whatever its mode).
        name: the norm's name, for error messages.

    Raises:
        TypeError: if the layers are not a Conv2d and a foldable norm.
        ValueError: if their channels differ or the norm cannot be folded.
    """
    if not isinstance(conv, nn.Conv2d) or not isinstance(norm, FOLDABLE_NORMS):
        raise TypeError(
            f"{name}: expected an nn.Conv2d followed by one of "
            f"{[t.__name__ for t in FOLDABLE_NORMS]}, got {type(conv).__name__} "
            f"and {type(norm).__name__}"
        )
    if norm.running_mean is not None and norm.running_mean.numel() != conv.out_channels:
        raise ValueError(
            f"{name}: the norm has {norm.running_mean.numel()} channels, the convolution "
            f"{conv.out_channels}"
        )
    scale, shift = _affine_of(norm, name)
    weight = conv.weight.detach().double() * scale[:, None, None, None]  # [D_out, D_in, kh, kw]
    bias = shift if conv.bias is None else conv.bias.detach().double() * scale + shift  # [D_out]
    folded = copy.deepcopy(conv)
    dtype = conv.weight.dtype
    folded.weight = nn.Parameter(weight.to(dtype), requires_grad=conv.weight.requires_grad)
    folded.bias = nn.Parameter(bias.to(dtype), requires_grad=conv.weight.requires_grad)
    return folded


def _is_plain_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


class _ChildrenAsLeaves(fx.Tracer):
    """Traces one module's forward, treating every submodule it calls as an opaque call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _pairs_by_data_flow(parent: nn.Module, candidates: list[tuple[str, str]]):
    """The (conv, norm) child-name pairs where the trace of ``parent`` shows ``norm(conv(x))``.

    The norm must take the convolution's output as its only input, and nothing else may use
    that output (it would see the unfolded value). A module that cannot be traced (data-
    dependent Python control flow) gives no pairs: its layers are left as they are.
    """
    try:
        graph = _ChildrenAsLeaves().trace(parent)
    except Exception as error:  # noqa: BLE001 - any tracing failure means "do not fold here"
        logger.info("not folding inside %s: cannot trace it (%s)", type(parent).__name__, error)
        return []
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    pairs = []
    for conv_name, norm_name in candidates:
        conv_calls, norm_calls = calls.get(conv_name, []), calls.get(norm_name, [])
        if len(conv_calls) != 1 or len(norm_calls) != 1:
            continue
        conv_node, norm_node = conv_calls[0], norm_calls[0]
        if norm_node.args == (conv_node,) and not norm_node.kwargs and len(conv_node.users) == 1:
            pairs.append((conv_name, norm_name))
    return pairs


def _foldable_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """Names of the direct children (conv, norm) of ``parent`` where norm follows conv."""
    children = list(parent.named_children())
    candidates = [
        (conv_name, norm_name)
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:])
        if _is_plain_conv(conv) and isinstance(norm, FOLDABLE_NORMS)
    ]
    if not candidates or _is_plain_sequential(parent):
        return candidates  # a Sequential feeds each child into the next
    return _pairs_by_data_flow(parent, candidates)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold, in place, every foldable norm that directly follows a Conv2d; return their names.

    Walks the module tree. Inside an ``nn.Sequential`` a norm right after a convolution is fed
    by it (torchvision's ``Conv2dNormActivation``, a ResNet ``downsample``); inside any other
    module, children registered as (conv, norm) are folded only when a trace of the module's
    forward shows ``norm(conv(x))`` with no other use of the convolution's output (a ResNet
    ``Bottleneck``'s conv1/bn1, conv2/bn2, conv3/bn3; the stem's conv1/bn1). The convolution is
    replaced by its folded copy and the norm by ``nn.Identity``.
    """
    folded = []
    for parent_name, parent in list(model.named_modules()):
        for conv_name, norm_name in _foldable_pairs(parent):
            name = f"{parent_name}.{norm_name}" if parent_name else norm_name
            conv, norm = parent.get_submodule(conv_name), parent.get_submodule(norm_name)
            setattr(parent, conv_name, fold_conv_bn(conv, norm, name))
            setattr(parent, norm_name, nn.Identity())
            folded.append(name)
    return folded


class ChannelsLastPointwiseConv2d(nn.Conv2d):
    """A 1 x 1, stride-1 convolution computed as one matrix product on channels-last inputs.

    A channels-last [N, D_in, H, W] tensor is an [N, H, W, D_in] table in memory, so the
    convolution is ``F.linear`` over its rows, with no copy in or out; any other input takes
    ``nn.Conv2d``'s path. Same parameters and ``state_dict`` keys as the ``nn.Conv2d`` it
    replaces (see :meth:`from_conv`).
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> ChannelsLastPointwiseConv2d:
        """The same layer, sharing ``conv``'s weight and bias; ValueError unless pointwise."""
        if not _is_pointwise(conv):
            raise ValueError(f"expected a 1x1, stride-1, ungrouped nn.Conv2d, got {conv}")
        layer = cls(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
        layer.weight, layer.bias = conv.weight, conv.bias
        return layer

    def forward(self, x: Tensor) -> Tensor:
        """[N, D_in, H, W] -> [N, D_out, H, W] (channels-last when ``x`` is)."""
        if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        rows = x.permute(0, 2, 3, 1)  # [N, H, W, D_in], contiguous: no copy
        out = F.linear(rows, self.weight.flatten(1), self.bias)  # [N, H, W, D_out]
        return out.permute(0, 3, 1, 2)  # [N, D_out, H, W] in channels-last memory


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        _is_plain_conv(conv)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


def _pointwise_as_matmul(model: nn.Module) -> int:
    """Replace every pointwise ``nn.Conv2d`` by a :class:`ChannelsLastPointwiseConv2d`."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_pointwise(child):
                setattr(parent, name, ChannelsLastPointwiseConv2d.from_conv(child))
                replaced += 1
    return replaced


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the module's image batch in channels-last memory format."""
    x, *rest = args
    if isinstance(x, Tensor) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *rest)


def optimize_for_inference(
    model: nn.Module, *, channels_last: bool = True, inplace: bool = False
) -> nn.Module:
    """An eval-mode model with BatchNorm folded into its convolutions, run channels-last.

    Detections equal the exact path's up to float32 rounding (labels identical, boxes within
    1e-2 px on the parity images; 1e-8 in float64). For inference only: folded norms no longer
    exist, so do not train the result.

    Args:
        model: a :class:`~rcnn_lab.faster_rcnn.FasterRCNN` (or any module). A model in training
            mode is fine: the result is switched to eval mode (the folded BatchNorm is its
            eval-mode map, with the running statistics).
        channels_last: also store every 4-d weight channels-last, feed the backbone (the
            model's ``backbone`` if it has one, else the model itself) channels-last images,
            so that every convolution reads and writes NHWC activations, and compute 1 x 1
            convolutions as matrix products (:class:`ChannelsLastPointwiseConv2d`).
        inplace: change ``model`` itself; by default a deep copy is changed and ``model`` is
            left as it was.

    Raises:
        TypeError: for a TorchScript module (its code cannot be rewritten) or a non-module.
        ValueError: for a norm that cannot be folded (see :func:`fold_conv_bn`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "model: a TorchScript module cannot be rewritten; optimise it before scripting"
        )
    if getattr(model, "_rcnn_lab_fast_path", False):
        raise ValueError("model: already optimised by optimize_for_inference")
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    folded = fold_batchnorm(target)
    logger.info("folded %d norms into their convolutions", len(folded))
    if channels_last:
        _pointwise_as_matmul(target)
        target.to(memory_format=torch.channels_last)
        getattr(target, "backbone", target).register_forward_pre_hook(_to_channels_last)
    target._rcnn_lab_fast_path = True
    return target
