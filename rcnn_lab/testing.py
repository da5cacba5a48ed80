"""Helpers for parity tests and demonstrations with random weights (no trained weights needed).

A random detector in eval mode is a poor test subject: its BatchNorm statistics (mean 0,
variance 1) make activations explode or vanish, and its final layers score every box alike.
These helpers give it measured BatchNorm statistics and well-spread outputs, computed in float64
so that every CPU gets the same numbers. The parity tests (rcnn_lab == torchvision) and the
chapters' random-model figures use them; they restore every setting they touch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["HEAD_OUTPUT_STD", "build_in_float64", "calibrate_batchnorm", "spread_head_weights"]

#: Output standard deviation given to each final layer (spread logits, modest box deltas).
HEAD_OUTPUT_STD = {
    "rpn.head.cls_logits": 2.0,
    "rpn.head.bbox_pred": 0.2,
    "roi_heads.box_predictor.cls_score": 2.0,
    "roi_heads.box_predictor.bbox_pred": 0.2,
}


def build_in_float64(builder: Callable[..., nn.Module], **kwargs) -> nn.Module:
    """``builder(**kwargs)`` with every random weight drawn in float64, returned in float32.

    float32 normal draws (``kaiming_normal_``, ``normal_``) take a vectorised path with AVX2
    kernels and a scalar one with generic kernels, which differ in the last bit; float64 draws
    are the same on every CPU, and rounding them to float32 is exact arithmetic. So a chapter's
    random model, and every number printed from it, is the same on any machine.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = builder(**kwargs)
    finally:
        torch.set_default_dtype(previous)
    return model.float()


def calibrate_batchnorm(model: nn.Module, images: list[Tensor], targets: list[dict]) -> None:
    """Give every BatchNorm the statistics of one training pass on ``images``.

    A random trunk in eval mode (running mean 0, variance 1) lets activations explode or
    collapse; with measured statistics its features vary across the image like a trained one's.
    The pass runs on a float64 copy of the model, so the statistics are the same on every CPU
    (float32 sums round differently with AVX-512, AVX2 and generic kernels, and the chapters'
    printed numbers must hold on any machine); they are then stored in the model's own dtype.
    The global RNG (the samplers draw from it in training mode) is restored afterwards, and
    nothing of ``model`` but its BatchNorm buffers changes (not its mode, not its momentum).
    """
    work = _float64_copy(model)
    norms = [m for m in work.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one pass, exactly that pass's statistics
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        work.train()(_as_float64(images), _as_float64(targets))
    _copy_buffers(work, model)


def _float64_copy(model: nn.Module) -> nn.Module:
    """A float64 deep copy of ``model`` (the original is left untouched)."""
    return copy.deepcopy(model).double()


def _as_float64(items):
    """Images (tensors) or targets (dicts) with every floating tensor in float64."""
    if isinstance(items, dict):
        return {k: v.double() if v.is_floating_point() else v for k, v in items.items()}
    if isinstance(items, Tensor):
        return items.double() if items.is_floating_point() else items
    return [_as_float64(item) for item in items]


def _copy_buffers(source: nn.Module, target: nn.Module) -> None:
    """Copy every buffer of ``source`` into ``target``, cast to the target buffer's dtype."""
    with torch.no_grad():
        for (_, src), (_, dst) in zip(source.named_buffers(), target.named_buffers()):
            dst.copy_(src)


def spread_head_weights(model: nn.Module, images: list[Tensor], seed: int = 0) -> None:
    """Random final layers whose outputs have the standard deviations of HEAD_OUTPUT_STD.

    One evaluation pass (in float64, like ``calibrate_batchnorm``, so every CPU measures the
    same) measures the RMS of each final layer's input; the new weights are drawn in float64,
    scaled by it and stored in the layer's dtype, so scores are well spread whatever the
    backbone's feature magnitude. Uses its own generator (the global RNG is untouched) and
    changes only those layers' weights and biases (not the model's mode).
    """
    rms: dict[str, Tensor] = {}

    def record(name: str):
        def hook(module, inputs, output):  # the RPN head calls its layers once per level
            rms.setdefault(name, inputs[0].pow(2).mean().sqrt())

        return hook

    work = _float64_copy(model)
    hooks = [work.get_submodule(n).register_forward_hook(record(n)) for n in HEAD_OUTPUT_STD]
    with torch.no_grad():
        work.eval()(_as_float64(images))
    for hook in hooks:
        hook.remove()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, std in HEAD_OUTPUT_STD.items():
            layer = model.get_submodule(name)
            # float64 draws: float32 normal sampling has a vectorised path on some CPUs only
            shape = layer.weight.shape
            scale = std / (rms[name] * layer.weight[0].numel() ** 0.5)
            layer.weight.copy_(torch.randn(shape, generator=g, dtype=torch.float64) * scale)
            bias = 0.5 * std * torch.randn(layer.bias.shape, generator=g, dtype=torch.float64)
            layer.bias.copy_(bias)
