"""Drawing helpers and the ipywidgets explorer of the box-coder chapter (book/03_box_coder.ipynb).

Boxes are (x1, y1, x2, y2) in pixels; deltas are (dx, dy, dw, dh) as in rcnn_lab.BoxCoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor

from rcnn_lab.box_coder import DEFAULT_BBOX_XFORM_CLIP, BoxCoder
from rcnn_lab.viz.draw import draw_boxes

#: The two weight settings of torchvision's Faster R-CNN.
WEIGHT_PRESETS = {
    "RPN (1, 1, 1, 1)": (1.0, 1.0, 1.0, 1.0),
    "RoI heads (10, 10, 5, 5)": (10.0, 10.0, 5.0, 5.0),
}


def plot_box_move(
    anchor: Tensor,
    deltas: Sequence[float],
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    target: Tensor | None = None,
    clip: float = DEFAULT_BBOX_XFORM_CLIP,
    ax: Axes | None = None,
    extent: float = 200.0,
) -> Tensor:
    """Draw ``anchor`` [4] and the box that ``deltas`` (in the coder's weighted units) decode to.

    ``target`` [4], if given, is drawn too. Returns the decoded box [4].
    """
    coder = BoxCoder(tuple(weights), bbox_xform_clip=clip)
    codes = torch.tensor([list(deltas)], dtype=anchor.dtype)  # [1, 4]
    decoded = coder.decode(codes, [anchor[None]])[0, 0]  # [1, 1, 4] -> [4]
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    draw_boxes(ax, anchor[None], color="tab:blue", labels=["anchor"], linestyle="--")
    if target is not None:
        draw_boxes(ax, target[None], color="tab:green", labels=["target"], linewidth=2.5)
    draw_boxes(ax, decoded[None], color="tab:red", labels=["decoded"])
    centre = ((decoded[:2] + decoded[2:]) / 2).tolist()
    anchor_centre = ((anchor[:2] + anchor[2:]) / 2).tolist()
    ax.annotate("", centre, anchor_centre, arrowprops={"arrowstyle": "->", "color": "tab:red"})
    ax.set_xlim(0, extent)
    ax.set_ylim(extent, 0)
    ax.set_aspect("equal")
    return decoded


def plot_delta_histograms(deltas_by_name: dict[str, Tensor], bins: int = 40) -> plt.Figure:
    """One histogram panel per delta component (dx, dy, dw, dh), one series per setting."""
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8), sharey=True)
    for ax, name, column in zip(axes, ("dx", "dy", "dw", "dh"), range(4), strict=True):
        for label, deltas in deltas_by_name.items():
            ax.hist(deltas[:, column].numpy(), bins=bins, alpha=0.55, label=label)
        ax.set_title(name)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def box_coder_explorer(anchor: Tensor, target: Tensor | None = None, extent: float = 200.0):
    """ipywidgets explorer: four delta sliders move a box away from ``anchor``; pick the weights.

    Slider values are the coder's raw outputs (before dividing by the weights), so with the
    RoI-head weights the same slider moves the box 10x (centre) or 5x (size) less.
    """
    from ipywidgets import Checkbox, Dropdown, FloatSlider, interactive

    def show(weights, dx, dy, dw, dh, clamp):
        _, ax = plt.subplots(figsize=(5, 5))
        clip = DEFAULT_BBOX_XFORM_CLIP if clamp else float("inf")
        chosen = WEIGHT_PRESETS[weights]
        box = plot_box_move(anchor, (dx, dy, dw, dh), chosen, target, clip, ax, extent)
        if target is not None:
            wanted = BoxCoder(chosen).encode_single(target[None], anchor[None])[0]  # [4]
            ax.set_title("deltas to reach the target: " + ", ".join(f"{v:.2f}" for v in wanted))
        ax.set_xlabel("decoded box: " + ", ".join(f"{v:.1f}" for v in box.tolist()))
        plt.show()

    def slider(name, high=3.0):
        return FloatSlider(value=0.0, min=-3.0, max=high, step=0.05, description=name)

    return interactive(
        show,
        weights=Dropdown(options=list(WEIGHT_PRESETS), value="RPN (1, 1, 1, 1)"),
        dx=slider("dx"),
        dy=slider("dy"),
        dw=slider("dw", high=6.0),  # past log(1000/16) = 4.14 to show the clamp
        dh=slider("dh", high=6.0),
        clamp=Checkbox(value=True, description="clamp dw, dh at log(1000/16)"),
    )
