"""Helpers for chapters 7 (RoI heads and the four losses) and 9 (assembling Faster R-CNN).

Random-weight models for demonstrations (realistic BatchNorm statistics, well-spread head
outputs), the FasterRCNN argument table, RoI drawing and the detection explorer.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from rcnn_lab.viz.draw import draw_boxes, show_image

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
    """
    work = _float64_copy(model)
    norms = [m for m in work.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one pass, exactly that pass's statistics
    with torch.no_grad():
        work.train()(_as_float64(images), _as_float64(targets))
    _copy_buffers(work, model)
    model.eval()


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
    backbone's feature magnitude.
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
    model.eval()


def argument_table(cls: type) -> str:
    """A Markdown table of ``cls.__init__``'s arguments: name, default, meaning (docstring)."""
    meanings = _docstring_args(inspect.getdoc(cls) or "")
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        name = f"**{param.name}" if param.kind is param.VAR_KEYWORD else param.name
        if param.kind is param.VAR_KEYWORD:
            default = ""
        elif param.default is inspect.Parameter.empty:
            default = "(required)"
        else:
            default = f"`{param.default!r}`"
        meaning = meanings.get(param.name, "").replace("|", "\\|")
        rows.append(f"| `{name}` | {default} | {meaning} |")
    return "\n".join(rows)


def _docstring_args(doc: str) -> dict[str, str]:
    """``{name: meaning}`` from a Google-style "Args:" section (continuation lines joined)."""
    section = doc.split("Args:", 1)[-1]
    meanings: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^\s{4}\**(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            meanings[current] = match.group(2).strip()
        elif current and line.startswith(" " * 8):
            meanings[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return meanings


def draw_detections(
    ax: Axes, image: Tensor, detections: dict[str, Tensor], class_names, title: str = ""
) -> Axes:
    """An image with its detections, each labelled "class score"."""
    show_image(image, ax=ax, title=title)
    names = [
        f"{class_names[int(c)] if int(c) < len(class_names) else int(c)} {float(s):.2f}"
        for c, s in zip(detections["labels"], detections["scores"], strict=True)
    ]
    draw_boxes(ax, detections["boxes"], color="tab:orange", labels=names)
    return ax


def draw_sampled_rois(
    ax: Axes, image: Tensor, rois: Tensor, labels: Tensor, gt_boxes: Tensor, title: str = ""
) -> Axes:
    """Sampled RoIs coloured by role: foreground (blue), background (grey); GT in green."""
    show_image(image, ax=ax, title=title)
    background = labels == 0
    draw_boxes(ax, rois[background], color="0.6", linewidth=0.6, alpha=0.6)
    draw_boxes(ax, rois[~background], color="tab:blue", linewidth=1.0)
    draw_boxes(ax, gt_boxes, color="tab:green", linewidth=2.0)
    return ax


def detection_explorer(model: nn.Module, image: Tensor, class_names):
    """ipywidgets explorer: score threshold, NMS threshold and detections per image."""
    import ipywidgets as widgets

    heads = model.roi_heads

    def show(score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100):
        saved = heads.score_thresh, heads.nms_thresh, heads.detections_per_img
        heads.score_thresh, heads.nms_thresh = score_thresh, nms_thresh
        heads.detections_per_img = detections_per_img
        try:
            with torch.no_grad():
                detections = model.eval()([image])[0]
        finally:
            heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved
        _, ax = plt.subplots(figsize=(6, 4.5))
        title = f"{len(detections['boxes'])} detections"
        draw_detections(ax, image, detections, class_names, title=title)
        plt.show()

    return widgets.interact(
        show,
        score_thresh=widgets.FloatSlider(value=0.05, min=0.0, max=0.95, step=0.05),
        nms_thresh=widgets.FloatSlider(value=0.5, min=0.05, max=1.0, step=0.05),
        detections_per_img=widgets.IntSlider(value=100, min=1, max=100),
    )
