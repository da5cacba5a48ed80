"""Figures and the explorer of the chapter "Matcher and balanced sampler".

Shapes: G ground-truth boxes, P anchors, H x W anchor grid, A anchors per location.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor

from rcnn_lab.matcher import Matcher
from rcnn_lab.sampler import BalancedPositiveNegativeSampler
from rcnn_lab.viz.draw import draw_boxes, show_image

#: One colour per anchor label, used by every figure of the chapter.
LABEL_COLOURS = {"positive": "tab:green", "negative": "tab:blue", "ignored": "tab:orange"}

#: Colour of the ground-truth boxes, dark so that it shows on the light sky of the scenes.
GT_COLOUR = "black"


def plot_iou_matrix(ax: Axes, iou: Tensor, num_columns: int = 12, sort: bool = True) -> Axes:
    """Heat map of the [G, P] IoU matrix with every value written in its cell.

    With ``sort``, each ground truth contributes its ceil(num_columns / G) anchors of highest
    IoU (in order, without repeats; at most ``num_columns`` in all), so that every object's
    best anchors are on show; without it, the first ``num_columns`` anchors in their own
    order. Values are written at 9 pt, dark on the light (high) cells and white on the dark
    (low) ones.
    """
    if sort:
        per_gt = -(-num_columns // max(iou.shape[0], 1))
        top = iou.topk(min(per_gt, iou.shape[1]), dim=1).indices  # [G, per_gt]
        columns = torch.tensor(list(dict.fromkeys(top.flatten().tolist()))[:num_columns])
    else:
        columns = torch.arange(min(num_columns, iou.shape[1]))
    shown = iou[:, columns].detach().cpu()  # [G, num_columns]
    image = ax.imshow(shown.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for g in range(shown.shape[0]):
        for p in range(shown.shape[1]):
            value = float(shown[g, p])
            colour = "black" if value >= 0.5 else "white"  # viridis is light above ~0.5
            ax.text(p, g, f"{value:.2f}", ha="center", va="center", fontsize=9, color=colour)
    ax.set_xticks(range(len(columns)), [str(int(c)) for c in columns], fontsize=9)
    ax.set_yticks(range(shown.shape[0]), [f"gt {g}" for g in range(shown.shape[0])])
    ax.set_xlabel("anchor index")
    plt.colorbar(image, ax=ax, label="IoU")
    return ax


def plot_best_iou_maps(iou: Tensor, grid: tuple[int, int], num_anchors: int) -> plt.Figure:
    """For every ground truth, the best IoU over the A anchors of each grid cell, as an image."""
    height, width = grid
    per_cell = iou.reshape(iou.shape[0], height, width, num_anchors).amax(dim=-1)  # [G, H, W]
    fig, axes = plt.subplots(1, iou.shape[0], figsize=(3.2 * iou.shape[0], 2.8), squeeze=False)
    for g, ax in enumerate(axes[0]):
        image = ax.imshow(per_cell[g].cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"gt {g}: best IoU {float(per_cell[g].max()):.2f}")
        ax.set_xlabel("grid column")
    axes[0][0].set_ylabel("grid row")
    fig.colorbar(image, ax=axes[0].tolist(), label="best IoU of the cell's anchors")
    return fig


def label_masks(matches: Tensor) -> dict[str, Tensor]:
    """[P] matcher output -> boolean [P] masks ``positive``, ``negative``, ``ignored``."""
    return {
        "positive": matches >= 0,
        "negative": matches == Matcher.BELOW_LOW_THRESHOLD,
        "ignored": matches == Matcher.BETWEEN_THRESHOLDS,
    }


def draw_anchor_labels(
    ax: Axes,
    image: Tensor,
    anchors: Tensor,
    matches: Tensor,
    gt_boxes: Tensor,
    sampled: tuple[Tensor, Tensor] | None = None,
) -> dict[str, int]:
    """Draw positive anchors (boxes), ignored ones (thin boxes), negatives (dots at centres).

    With ``sampled`` = (pos_mask, neg_mask) of the sampler, only the sampled anchors are drawn
    and the ignored ones (never sampled) are hidden. Returns the number of anchors drawn per label.
    """
    show_image(image, ax=ax)
    masks = label_masks(matches)
    if sampled is not None:
        masks["positive"] = masks["positive"] & sampled[0].bool()
        masks["negative"] = masks["negative"] & sampled[1].bool()
        masks["ignored"] = torch.zeros_like(masks["ignored"])
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # [P, 2]
    negatives = centres[masks["negative"]].cpu()
    ax.scatter(negatives[:, 0], negatives[:, 1], s=3, color=LABEL_COLOURS["negative"], alpha=0.6)
    draw_boxes(ax, anchors[masks["ignored"]], LABEL_COLOURS["ignored"], linewidth=0.5, alpha=0.5)
    draw_boxes(ax, gt_boxes, GT_COLOUR, linewidth=1.5)
    draw_boxes(ax, anchors[masks["positive"]], LABEL_COLOURS["positive"], linewidth=2.5)
    ax.set_xlim(0, image.shape[-1])
    ax.set_ylim(image.shape[-2], 0)
    return {name: int(mask.sum()) for name, mask in masks.items()}


def matcher_explorer(image: Tensor, gt_boxes: Tensor, anchors: Tensor, iou: Tensor):
    """An ipywidgets explorer: fg/bg thresholds, low-quality toggle, sampler settings."""
    from ipywidgets import Checkbox, FloatSlider, IntSlider, interactive

    def redraw(fg_iou=0.7, bg_iou=0.3, low_quality=True, batch_size=256, positive_fraction=0.5):
        matcher = Matcher(fg_iou, min(bg_iou, fg_iou), allow_low_quality_matches=low_quality)
        matches = matcher(iou)
        labels = (matches >= 0).long() - (matches == Matcher.BETWEEN_THRESHOLDS).long()
        # the same draws on every redraw, without resetting the reader's global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            pos, neg = BalancedPositiveNegativeSampler(batch_size, positive_fraction)([labels])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
        counts = draw_anchor_labels(axes[0], image, anchors, matches, gt_boxes)
        axes[0].set_title(", ".join(f"{n} {k}" for k, n in counts.items()), fontsize=9)
        sampled = draw_anchor_labels(axes[1], image, anchors, matches, gt_boxes, (pos[0], neg[0]))
        axes[1].set_title(
            f"sampled: {sampled['positive']} positive, {sampled['negative']} negative",
            fontsize=9,
        )
        plt.show()

    return interactive(
        redraw,
        fg_iou=FloatSlider(value=0.7, min=0.3, max=0.95, step=0.05, description="fg IoU"),
        bg_iou=FloatSlider(value=0.3, min=0.0, max=0.7, step=0.05, description="bg IoU"),
        low_quality=Checkbox(value=True, description="low-quality matches"),
        batch_size=IntSlider(value=256, min=16, max=512, step=16, description="batch / image"),
        positive_fraction=FloatSlider(
            value=0.5, min=0.05, max=1.0, step=0.05, description="pos frac"
        ),
    )
