"""One image traced through every stage of a trained Faster R-CNN, drawn stage by stage
(chapter 0's explorer).

:func:`trace_image` runs the model's own public stages (``model.transform``,
``model.backbone``, ``model.rpn.predict``, ...) and keeps every intermediate;
:func:`draw_trace` draws any of :data:`TRACE_VIEWS`; :func:`trace_explorer` switches between
views and scenes.

Shapes: N images, R anchors of an image, A anchors per location, G ground-truth boxes, K RoIs
(proposals), C classes (background included), D channels, M detections of an image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from rcnn_lab.matcher import BELOW_LOW_THRESHOLD
from rcnn_lab.viz.backbone import LEVEL_NAMES, denormalize, feature_energy
from rcnn_lab.viz.detections import draw_detections, draw_ground_truth, draw_sampled_rois
from rcnn_lab.viz.draw import draw_boxes, show_image
from rcnn_lab.viz.matcher import draw_anchor_labels
from rcnn_lab.viz.roi_align import draw_roi_align
from rcnn_lab.viz.rpn import LEVEL_COLOURS, draw_proposals, proposal_stages

#: The views of a trace, in pipeline order (the explorer's stage selector).
TRACE_VIEWS = (
    "image",
    "anchors",
    "labelled anchors",
    "sampled anchors",
    "proposals before NMS",
    "proposals after NMS",
    "sampled RoIs",
    "RoIAlign",
    "class scores",
    "detections",
)
#: Score from which the "detections" view draws a detection (the model keeps 0.05 and up).
SHOWN_SCORE = 0.5


@torch.no_grad()
def trace_image(
    model: nn.Module, image: Tensor, target: Mapping[str, Tensor], seed: int = 0
) -> dict:
    """Run ``image`` through ``model``'s public stages one by one and keep every intermediate.

    Inference runs in eval mode; the training-only steps (matching anchors and proposals to
    ``target``'s boxes, sampling) run on the same tensors with the random generator seeded by
    ``seed`` inside a fork, so the caller's generator is left untouched.

    Returns:
        A dict: ``shown`` [3, h, w] (the transformed image, where every box lives), ``gt_boxes``
        [G, 4], ``features`` (by name), ``anchors`` [R, 4], ``anchors_per_level``, ``grids``,
        ``objectness`` [R, 1], ``deltas`` [R, 4], ``matches`` [R], ``anchor_labels`` [R],
        ``sampled_anchors`` (pos [R], neg [R]), ``before`` / ``after`` (proposal_stages),
        ``rois`` [S, 4], ``roi_labels`` [S], ``pooled`` [K, D, 7, 7], ``class_logits`` [K, C],
        ``box_regression`` [K, C*4], ``detections`` (boxes, labels, scores in input pixels),
        ``image``, ``target`` and ``class_names``.
    """
    was_training = model.training
    model.eval()
    try:
        dtype = next(model.parameters()).dtype
        original = [tuple(image.shape[-2:])]
        target = {k: (v.to(dtype) if k == "boxes" else v) for k, v in target.items()}
        images, targets = model.transform([image.to(dtype)], [target])
        features = model.backbone(images.tensors)
        rpn, heads = model.rpn, model.roi_heads
        predicted = rpn.predict(images, features)
        gt_boxes = targets[0]["boxes"]
        anchors = predicted.anchors[0]
        if len(gt_boxes):
            matches = rpn.proposal_matcher(rpn.box_similarity(gt_boxes, anchors))  # [R]
        else:  # an image without objects: every anchor is below the low threshold
            matches = torch.full((len(anchors),), BELOW_LOW_THRESHOLD, device=anchors.device)
        labels, _ = rpn.assign_targets_to_anchors(predicted.anchors, targets)
        stages = proposal_stages(rpn, images, features)
        proposals = stages["after_boxes"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            positive, negative = rpn.fg_bg_sampler(labels)
            rois, _, roi_labels, _ = heads.select_training_samples([proposals], targets)
        pooled = heads.box_roi_pool(features, [proposals], images.image_sizes)  # [K, D, 7, 7]
        class_logits, box_regression = heads.box_predictor(heads.box_head(pooled))
        boxes, scores, classes = heads.postprocess_detections(
            class_logits, box_regression, [proposals], images.image_sizes
        )
        found = [{"boxes": boxes[0], "labels": classes[0], "scores": scores[0]}]
        detections = model.transform.postprocess(found, images.image_sizes, original)[0]
    finally:
        model.train(was_training)
    height, width = images.image_sizes[0]
    shown = denormalize(images.tensors[0], model.transform.image_mean, model.transform.image_std)
    return {
        "image": image,
        "target": target,
        "class_names": getattr(model, "class_names", None),
        "shown": shown[:, :height, :width].clamp(0, 1),
        "gt_boxes": gt_boxes,
        "features": features,
        "anchors": anchors,
        "anchors_per_level": predicted.num_anchors_per_level,
        "grids": [tuple(f.shape[-2:]) for f in features.values()],
        "objectness": predicted.objectness,
        "deltas": predicted.pred_bbox_deltas,
        "matches": matches,
        "anchor_labels": labels[0],
        "sampled_anchors": (positive[0], negative[0]),
        "before": stages,
        "proposals": proposals,
        "rois": rois[0],
        "roi_labels": roi_labels[0],
        "pooled": pooled,
        "class_logits": class_logits,
        "box_regression": box_regression,
        "detections": detections,
        "pooler": heads.box_roi_pool,
    }


def _draw_anchors(ax: Axes, trace: Mapping) -> None:
    """The A anchors of the centre cell of every level, coloured by level."""
    show_image(trace["shown"], ax=ax)
    start = 0
    for level, ((rows, cols), count) in enumerate(zip(trace["grids"], trace["anchors_per_level"])):
        per_cell = count // (rows * cols)
        cell = (rows // 2) * cols + cols // 2
        first = start + cell * per_cell
        colour = LEVEL_COLOURS[level % len(LEVEL_COLOURS)]
        draw_boxes(ax, trace["anchors"][first : first + per_cell], colour, linewidth=1.4)
        start += count
    height, width = trace["shown"].shape[-2:]
    ax.set_xlim(-0.6 * width, 1.6 * width)
    ax.set_ylim(1.6 * height, -0.6 * height)
    ax.set_title(f"{len(trace['anchors'])} anchors; the centre cell's, one colour per level")


def _draw_roi_align(ax: Axes, trace: Mapping) -> None:
    """The best proposal on its pyramid level: the RoI, its 7 x 7 bins and sample points."""
    pooler, box = trace["pooler"], trace["proposals"][0]
    level = int(pooler.map_levels([box[None]])[0])
    name = list(trace["features"])[level]
    energy = feature_energy(trace["features"][name][0])  # [H_l, W_l]
    scale = pooler.scales[level]
    draw_roi_align(ax, energy, tuple(box.tolist()), pooler.output_size, scale,
                   pooler.sampling_ratio, aligned=False)  # fmt: skip
    (x1, y1, x2, y2), pad = (float(v) * scale for v in box), 2.0
    ax.set_xlim(x1 - pad, x2 + pad)
    ax.set_ylim(y2 + pad, y1 - pad)
    ax.set_title(f"best proposal on {LEVEL_NAMES.get(name, name)} (stride {round(1 / scale)})")


def _draw_class_scores(ax: Axes, trace: Mapping, rows: int = 8) -> None:
    """Softmax scores [K, C] of the first ``rows`` RoIs (the proposals of highest objectness)."""
    scores = torch.softmax(trace["class_logits"][:rows], dim=-1).cpu()  # [rows, C]
    ax.imshow(scores.numpy(), cmap="Greens", vmin=0, vmax=1, aspect="auto")
    for r in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            value = float(scores[r, c])
            colour = "white" if value > 0.6 else "black"
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    names = trace["class_names"] or [str(c) for c in range(scores.shape[1])]
    ax.set_xticks(range(scores.shape[1]), ["bg", *names[1 : scores.shape[1]]], rotation=45,
                  ha="right")  # fmt: skip
    ax.set_yticks(range(scores.shape[0]), [f"RoI {k}" for k in range(scores.shape[0])])
    ax.set_title(f"class scores of RoIs 0-{scores.shape[0] - 1} (softmax over C)")


def draw_trace(trace: Mapping, view: str, ax: Axes | None = None) -> Axes:
    """Draw one view of :func:`trace_image`'s result (a name from :data:`TRACE_VIEWS`)."""
    if view not in TRACE_VIEWS:
        raise ValueError(f"unknown view {view!r}: expected one of {TRACE_VIEWS}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    shown, gt = trace["shown"], trace["gt_boxes"]
    if view == "image":
        show_image(shown, ax=ax, title=f"input with its {len(gt)} ground-truth boxes (dashed)")
        draw_ground_truth(ax, gt)
    elif view == "anchors":
        _draw_anchors(ax, trace)
    elif view in ("labelled anchors", "sampled anchors"):
        sampled = trace["sampled_anchors"] if view == "sampled anchors" else None
        counts = draw_anchor_labels(ax, shown, trace["anchors"], trace["matches"], gt, sampled)
        ax.set_title(", ".join(f"{n} {k}" for k, n in counts.items() if n or not sampled))
    elif view == "proposals before NMS":
        before = trace["before"]
        title = f"{len(before['before_boxes'])} best per level, before NMS"
        draw_proposals(ax, shown, before["before_boxes"], before["before_scores"], gt,
                       before["before_levels"], title)  # fmt: skip
    elif view == "proposals after NMS":
        before = trace["before"]
        title = f"{len(before['after_boxes'])} proposals after NMS"
        draw_proposals(ax, shown, before["after_boxes"], before["after_scores"], gt, title=title)
    elif view == "sampled RoIs":
        labels = trace["roi_labels"]
        title = f"{int((labels > 0).sum())} foreground, {int((labels == 0).sum())} background RoIs"
        draw_sampled_rois(ax, shown, trace["rois"], labels, gt, title=title)
    elif view == "RoIAlign":
        _draw_roi_align(ax, trace)
    elif view == "class scores":
        _draw_class_scores(ax, trace)
    else:
        found = trace["detections"]
        keep = found["scores"] >= SHOWN_SCORE
        found = {key: value[keep] for key, value in found.items()}
        names = trace["class_names"] or [str(c) for c in range(trace["class_logits"].shape[1])]
        draw_detections(ax, trace["image"], found, names, target=trace["target"],
                        title=f"{int(keep.sum())} detections scoring >= {SHOWN_SCORE}")  # fmt: skip
    return ax


def trace_explorer(
    model: nn.Module,
    scenes: Sequence[tuple[Tensor, Mapping[str, Tensor]]],
    seed: int = 0,
    first_scene: int = 0,
):
    """ipywidgets explorer: a stage selector and a scene selector over traced images.

    Each scene is traced once (:func:`trace_image`) and cached, so switching stages is instant.
    """
    from ipywidgets import Dropdown, IntSlider, interactive

    traces: dict[int, dict] = {}

    def show(stage: str, scene: int) -> None:
        if scene not in traces:
            image, target = scenes[scene]
            traces[scene] = trace_image(model, image, target, seed=seed)
        fig, ax = plt.subplots(figsize=(5.2, 5.2))
        draw_trace(traces[scene], stage, ax)
        fig.tight_layout()
        plt.show()

    return interactive(
        show,
        stage=Dropdown(options=list(TRACE_VIEWS), value="detections", description="stage"),
        scene=IntSlider(
            value=min(first_scene, len(scenes) - 1), min=0, max=len(scenes) - 1, description="scene"
        ),
    )


__all__ = ["TRACE_VIEWS", "SHOWN_SCORE", "trace_image", "draw_trace", "trace_explorer"]
