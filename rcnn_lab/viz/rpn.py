"""Figures and the explorer of the chapter "The Region Proposal Network".

Shapes: N images, R anchors of an image (all levels), K proposals kept before NMS, A anchors
per location, L levels, H_l x W_l the grid of level l.
"""

from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor

from rcnn_lab.image_list import ImageList
from rcnn_lab.ops.boxes import clip_boxes_to_image
from rcnn_lab.rpn import RegionProposalNetwork
from rcnn_lab.viz.draw import draw_boxes, show_image

#: Colours of the proposals of pyramid level 0, 1, 2, ...
LEVEL_COLOURS = ("tab:red", "tab:cyan", "tab:olive", "tab:purple", "tab:pink")


@torch.no_grad()
def proposal_stages(
    rpn: RegionProposalNetwork, images: ImageList, features: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The inference path of ``rpn`` for the first image, stage by stage.

    Returns a dict with ``before_boxes`` [K, 4] (the pre-NMS top-n of every level, clipped),
    ``before_scores`` [K], ``before_levels`` [K], and ``after_boxes`` / ``after_scores``, what
    ``rpn`` returns (post-NMS top-n). Uses the rpn's current mode (call ``rpn.eval()`` first).
    """
    predicted = rpn.predict(images, features)
    proposals, per_level = predicted.proposals, predicted.num_anchors_per_level
    objectness = predicted.objectness.view(len(predicted.anchors), -1)  # [N, R]
    top = rpn.select_top_n(proposals, objectness, per_level)  # the pre-NMS candidates
    after_boxes, after_scores = rpn.filter_proposals(
        proposals, objectness, images.image_sizes, per_level
    )
    return {
        "before_boxes": clip_boxes_to_image(top.boxes[0], images.image_sizes[0]),
        "before_scores": top.scores[0],
        "before_levels": top.levels[0],
        "after_boxes": after_boxes[0],
        "after_scores": after_scores[0],
    }


def draw_proposals(
    ax: Axes,
    image: Tensor,
    boxes: Tensor,
    scores: Tensor,
    gt_boxes: Tensor | None = None,
    levels: Tensor | None = None,
    title: str | None = None,
    gt_colour: str = "white",
    colour: str = "tab:red",
) -> Axes:
    """Draw proposals on ``image``, their opacity growing with the score.

    ``levels`` colours each box by its pyramid level (else all are drawn in ``colour``); the
    ground truth, if given, is drawn in ``gt_colour``.
    """
    show_image(image, ax=ax, title=title)
    if gt_boxes is not None:
        draw_boxes(ax, gt_boxes, gt_colour, linewidth=2)
    for index in scores.argsort().tolist():  # best boxes drawn last, on top
        box_colour = (
            LEVEL_COLOURS[int(levels[index]) % len(LEVEL_COLOURS)] if levels is not None else colour
        )
        alpha = 0.15 + 0.85 * float(scores[index])
        draw_boxes(ax, boxes[index : index + 1], box_colour, linewidth=1.0, alpha=alpha)
    ax.set_xlim(0, image.shape[-1])
    ax.set_ylim(image.shape[-2], 0)
    return ax


@torch.no_grad()
def objectness_maps(rpn: RegionProposalNetwork, features: dict[str, Tensor]) -> list[Tensor]:
    """The objectness probability the RPN head gives the first image, level by level.

    Returns:
        L maps [H_l, W_l]: at every position, the highest sigmoid(logit) of its A anchors.
    """
    logits, _ = rpn.head(list(features.values()))  # L tensors [N, A, H_l, W_l]
    return [torch.sigmoid(level[0]).amax(dim=0) for level in logits]


def stretch_to_image(maps: list[Tensor], image_size: tuple[int, int]) -> Tensor:
    """The pixelwise maximum of ``maps``, each stretched over an image of ``image_size``.

    Level l covers the image with cells of ``image_size // (H_l, W_l)`` pixels, the stride the
    anchor generator gives that level; pixels past the last cell read the last cell.

    Returns:
        [H, W] with ``(H, W) = image_size``.
    """
    height, width = image_size
    heat = maps[0].new_zeros(height, width)
    for level_map in maps:
        rows, cols = level_map.shape
        y = (torch.arange(height, device=heat.device) // (height // rows)).clamp(max=rows - 1)
        x = (torch.arange(width, device=heat.device) // (width // cols)).clamp(max=cols - 1)
        heat = torch.maximum(heat, level_map[y[:, None], x[None, :]])  # [H, W]
    return heat


def draw_objectness(
    ax: Axes,
    image: Tensor,
    maps: list[Tensor],
    gt_boxes: Tensor | None = None,
    title: str | None = None,
    alpha: float = 0.6,
):
    """Overlay on ``image`` the objectness heat map of ``maps`` (see :func:`stretch_to_image`).

    The colour scale runs from 0 (dark) to 1 (bright); the ground truth, if given, is drawn
    dashed in cyan. Returns the ``AxesImage`` of the heat map (for a colour bar).
    """
    show_image(image, ax=ax, title=title)
    heat = stretch_to_image(maps, tuple(image.shape[-2:]))
    shown = ax.imshow(heat.detach().cpu().float().numpy(), cmap="inferno", vmin=0.0, vmax=1.0,
                      alpha=alpha)  # fmt: skip
    if gt_boxes is not None:
        draw_boxes(ax, gt_boxes, "cyan", linewidth=1.5, linestyle="--")
    return shown


def rpn_explorer(
    rpn: RegionProposalNetwork,
    image: Tensor,
    features: dict[str, Tensor],
    gt_boxes: Tensor | None = None,
):
    """An ipywidgets explorer: pre/post-NMS top-n, NMS and score thresholds, surviving proposals.

    Works on a copy of ``rpn`` in eval mode, so the settings of ``rpn`` itself never change.
    """
    from ipywidgets import FloatSlider, IntSlider, interactive

    explored = copy.deepcopy(rpn).eval()
    images = ImageList(image[None], [tuple(image.shape[-2:])])

    def redraw(pre_nms_top_n=300, post_nms_top_n=20, nms_thresh=0.7, score_thresh=0.0):
        explored.set_top_n(pre_nms_top_n, post_nms_top_n)
        explored.nms_thresh, explored.score_thresh = nms_thresh, score_thresh
        stages = proposal_stages(explored, images, features)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
        draw_proposals(
            axes[0], image, stages["before_boxes"], stages["before_scores"], gt_boxes,
            stages["before_levels"], f"before NMS: {len(stages['before_boxes'])} boxes",
        )  # fmt: skip
        draw_proposals(
            axes[1], image, stages["after_boxes"], stages["after_scores"], gt_boxes,
            title=f"after NMS and top-n: {len(stages['after_boxes'])} proposals",
        )  # fmt: skip
        plt.show()

    return interactive(
        redraw,
        pre_nms_top_n=IntSlider(value=300, min=1, max=2000, step=1, description="pre-NMS n"),
        post_nms_top_n=IntSlider(value=20, min=1, max=300, step=1, description="post-NMS n"),
        nms_thresh=FloatSlider(value=0.7, min=0.05, max=1.0, step=0.05, description="NMS IoU"),
        score_thresh=FloatSlider(value=0.0, min=0.0, max=0.99, step=0.01, description="min score"),
    )
