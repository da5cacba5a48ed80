"""The whole detector at a glance: the architecture diagram, the chapters' "you are here" strips,
and one image traced through every stage of a trained model (chapter 0).

The diagram and the strips are drawn from :data:`STAGES` and :data:`CHAPTER_STAGES`, so the
picture, the strips of the chapters and the chapter map cannot drift apart. The trace runs the
model's own public stages (``model.transform``, ``model.backbone``, ``model.rpn.predict``, ...)
and keeps every intermediate for the drawings and the explorer.

Shapes: N images, R anchors of an image, A anchors per location, G ground-truth boxes, K RoIs
(proposals), C classes (background included), D channels, M detections of an image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import Tensor, nn

from rcnn_lab.matcher import BELOW_LOW_THRESHOLD
from rcnn_lab.viz.backbone import LEVEL_NAMES, denormalize, feature_energy
from rcnn_lab.viz.detections import draw_detections, draw_ground_truth, draw_sampled_rois
from rcnn_lab.viz.draw import draw_boxes, show_image
from rcnn_lab.viz.matcher import draw_anchor_labels
from rcnn_lab.viz.roi_align import draw_roi_align
from rcnn_lab.viz.rpn import LEVEL_COLOURS, draw_proposals, proposal_stages

#: The stages of Faster R-CNN with FPN, in the order an image meets them.
STAGES = (
    "data",
    "transform",
    "backbone",
    "fpn",
    "anchors",
    "rpn_head",
    "proposals",
    "sampler",
    "roi_align",
    "box_head",
    "predictor",
    "postprocess",
    "losses",
)
#: Stages that run only in training (drawn with a dashed outline).
TRAINING_STAGES = ("sampler", "losses")
#: Short labels of the stages in the strips (at most two lines of nine characters).
STAGE_LABELS = {
    "data": "data",
    "transform": "transform",
    "backbone": "backbone",
    "fpn": "FPN",
    "anchors": "anchors",
    "rpn_head": "RPN\nhead",
    "proposals": "proposals\n+ NMS",
    "sampler": "matcher\n+ sampler",
    "roi_align": "RoIAlign",
    "box_head": "box head",
    "predictor": "predictor",
    "postprocess": "post-\nprocess",
    "losses": "4 losses",
}
#: The stages that each chapter (0..15) explains; the whole-model chapters list all of them.
CHAPTER_STAGES: dict[int, tuple[str, ...]] = {
    0: STAGES,
    1: ("proposals", "postprocess"),  # IoU and NMS
    2: ("anchors",),
    3: ("proposals", "postprocess", "losses"),  # decode (both regressions), encode targets
    4: ("sampler",),
    5: ("anchors", "rpn_head", "proposals"),
    6: ("roi_align",),
    7: ("sampler", "box_head", "predictor", "postprocess", "losses"),
    8: ("transform", "backbone", "fpn"),
    9: STAGES,
    10: ("data",),
    11: ("data", "sampler", "losses"),
    12: ("postprocess",),
    13: STAGES,
    14: STAGES,
    15: STAGES,
}
#: Size (inches) of a "you are here" strip, wide and short, above a chapter's first paragraph.
STRIP_SIZE = (10.0, 1.3)
#: Fixed SVG salt and text as paths, so that a strip gives the same bytes on every machine.
SVG_RC = {"svg.hashsalt": "rcnn_lab", "svg.fonttype": "path", "font.family": "DejaVu Sans"}

# colour of each group of stages: (full, pale)
_GROUP_COLOURS = {
    "input": ("#d9d9d9", "#f4f4f4"),
    "features": ("#9ecae1", "#e3f0f8"),
    "rpn": ("#fdd0a2", "#fdf0e2"),
    "roi": ("#a1d99b", "#e4f4e2"),
    "training": ("#f4a6a6", "#fbe4e4"),
}
_STAGE_GROUP = {
    "data": "input",
    "transform": "features",
    "backbone": "features",
    "fpn": "features",
    "anchors": "rpn",
    "rpn_head": "rpn",
    "proposals": "rpn",
    "sampler": "training",
    "roi_align": "roi",
    "box_head": "roi",
    "predictor": "roi",
    "postprocess": "roi",
    "losses": "training",
}
_DIM_EDGE, _DIM_TEXT = "#c8c8c8", "#9a9a9a"


def check_chapter(chapter: int) -> int:
    """``chapter`` as an int, or ValueError unless it is a chapter number 0..15."""
    if isinstance(chapter, bool) or not isinstance(chapter, int) or chapter not in CHAPTER_STAGES:
        raise ValueError(
            f"chapter must be an integer from {min(CHAPTER_STAGES)} to {max(CHAPTER_STAGES)}, "
            f"got {chapter!r}"
        )
    return chapter


def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """``stages`` as a tuple, or ValueError naming any that is not in :data:`STAGES`."""
    if isinstance(stages, str):
        stages = (stages,)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}: expected names from {STAGES}")
    return tuple(stages)


def chapters_of(stage: str) -> tuple[int, ...]:
    """The chapters that explain ``stage`` (not counting those that cover the whole model)."""
    check_stages((stage,))
    return tuple(
        chapter
        for chapter, stages in CHAPTER_STAGES.items()
        if stage in stages and set(stages) != set(STAGES)
    )


def _stage_box(
    ax: Axes,
    stage: str,
    xy: tuple[float, float],
    size: tuple[float, float],
    text: str,
    on: bool,
    fontsize: float,
    rounded: bool = True,
) -> FancyBboxPatch:
    """One stage as a rounded box with centred text; ``on`` draws it in full colour.

    The patch's gid is ``stage-<name>`` (``here-<name>`` when highlighted): the SVG keeps it.
    """
    full, pale = _GROUP_COLOURS[_STAGE_GROUP[stage]]
    (x, y), (w, h) = xy, size
    patch = FancyBboxPatch(
        (x, y),
        w,
        h,
        boxstyle="round,pad=0,rounding_size=0.12" if rounded else "square,pad=0",
        facecolor=full if on else pale,
        edgecolor="#333333" if on else _DIM_EDGE,
        linewidth=1.6 if on else 0.8,
        linestyle="--" if stage in TRAINING_STAGES else "-",
        gid=f"{'here' if on else 'stage'}-{stage}",
    )
    ax.add_patch(patch)
    ax.text(
        x + w / 2,
        y + h / 2,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        color="black" if on else _DIM_TEXT,
        linespacing=1.25,
        gid=f"label-{stage}",
    )
    return patch


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], dashed=False) -> None:
    """An arrow from ``start`` to ``end`` in data coordinates."""
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "-|>",
            "color": "#444444",
            "lw": 1.1,
            "linestyle": "--" if dashed else "-",
            "shrinkA": 0,
            "shrinkB": 0,
            "mutation_scale": 11,
        },
    )


# The architecture diagram: (stage, x, y, width, height, text), y downwards, x in 0..10.
_MAIN_X, _MAIN_W, _SIDE_X, _SIDE_W, _ROW_H = 0.1, 5.8, 6.2, 3.7, 0.86
_ARCHITECTURE = (
    ("data", _MAIN_X + 1.2, 0.15, 3.4, 0.62, "image [3, H, W]"),
    ("data", _SIDE_X, 0.15, _SIDE_W, 0.86, "targets (training)\nboxes [G, 4], labels [G]"),
    ("transform", _MAIN_X, 1.2, _MAIN_W, _ROW_H,
     "transform: normalise, resize, pad\nbatch [N, 3, H, W] + image sizes"),
    ("backbone", _MAIN_X, 2.45, _MAIN_W, _ROW_H,
     "backbone trunk (ResNet-50)\nC2, C3, C4, C5: strides 4, 8, 16, 32"),
    ("fpn", _MAIN_X, 3.7, _MAIN_W, _ROW_H,
     "FPN: top-down path + lateral 1x1 convs\nP2 ... P6, D channels, strides 4 ... 64"),
    ("anchors", _MAIN_X, 4.95, 2.3, 1.1, "anchors\nA per location\nR per image"),
    ("rpn_head", _MAIN_X + 2.5, 4.95, 3.3, 1.1,
     "RPN head: 3x3 conv\nobjectness [R]\ndeltas [R, 4]"),
    ("proposals", _MAIN_X, 6.45, _MAIN_W, _ROW_H,
     "box regression 1: decode deltas on anchors\ntop-n per level, clip, NMS: K proposals"),
    ("roi_align", _MAIN_X, 7.7, _MAIN_W, _ROW_H,
     "MultiScaleRoIAlign: one level per RoI\nP2 ... P5 -> [K, D, 7, 7]"),
    ("box_head", _MAIN_X, 8.95, _MAIN_W, 0.62, "TwoMLPHead: fc6, fc7 -> [K, 1024]"),
    ("predictor", _MAIN_X, 9.95, _MAIN_W, _ROW_H,
     "predictor: class scores [K, C]\nbox regression 2: deltas [K, C x 4]"),
    ("postprocess", _MAIN_X, 11.2, _MAIN_W, _ROW_H,
     "postprocess: decode, softmax, score threshold,\nper-class NMS, back to input pixels"),
    ("sampler", _SIDE_X, 4.95, _SIDE_W, 1.1,
     "matcher + sampler\nanchors vs boxes: IoU 0.7 / 0.3\n256 anchors per image"),
    ("losses", _SIDE_X, 6.45, _SIDE_W, 1.1, "RPN losses\nloss_objectness\nloss_rpn_box_reg"),
    ("sampler", _SIDE_X, 7.75, _SIDE_W, 1.1,
     "matcher + sampler\nproposals + boxes: IoU 0.5\n512 RoIs per image"),
    ("losses", _SIDE_X, 9.95, _SIDE_W, 1.1, "Fast R-CNN losses\nloss_classifier\nloss_box_reg"),
)  # fmt: skip
_DETECTIONS = (_MAIN_X + 0.5, 12.45, 4.8, 0.62, "detections: boxes, labels, scores")
#: Font sizes (points) of the diagram's main column and of its training-only side column.
MAIN_FONT, SIDE_FONT = 11.5, 10.5


def draw_architecture(highlight: Sequence[str] = (), ax: Axes | None = None) -> Axes:
    """The architecture of Faster R-CNN with FPN, one box per stage of :data:`STAGES`.

    Inference runs down the left column; the training-only parts (dashed: matcher + sampler and
    the four losses) sit on the right. The two box regressions are named where they happen.

    Args:
        highlight: stages drawn in full colour (the rest pale); empty: every stage in colour.
        ax: where to draw (default: a new 7.6 x 10 inch figure).

    Raises:
        ValueError: a name in ``highlight`` is not a stage.
    """
    highlight = check_stages(highlight)
    lit = set(highlight) if highlight else set(STAGES)
    if ax is None:
        fig = plt.figure(figsize=(7.6, 10.0))
        ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    for stage, x, y, w, h, text in _ARCHITECTURE:
        font = SIDE_FONT if x >= _SIDE_X else MAIN_FONT
        _stage_box(ax, stage, (x, y), (w, h), text, stage in lit, fontsize=font)
    x, y, w, h, text = _DETECTIONS
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.12",
                       facecolor="white", edgecolor="#333333", linewidth=1.2, gid="detections")
    )  # fmt: skip
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=MAIN_FONT,
            gid="label-detections")  # fmt: skip
    mid, right = _MAIN_X + _MAIN_W / 2, _MAIN_X + _MAIN_W
    for top, bottom in ((0.77, 1.2), (2.06, 2.45), (3.31, 3.7), (7.31, 7.7), (8.56, 8.95),
                        (9.57, 9.95), (10.81, 11.2), (12.06, 12.45)):  # fmt: skip
        _arrow(ax, (mid, top), (mid, bottom))
    for x in (_MAIN_X + 1.15, _MAIN_X + 4.15):  # FPN -> anchors, RPN head -> proposals
        _arrow(ax, (x, 4.56), (x, 4.95))
        _arrow(ax, (x, 6.05), (x, 6.45))
    side = _SIDE_X + _SIDE_W / 2
    _arrow(ax, (side, 1.01), (side, 4.95), dashed=True)  # the boxes reach the matchers
    _arrow(ax, (side, 6.05), (side, 6.45), dashed=True)
    _arrow(ax, (right, 5.5), (_SIDE_X, 5.5), dashed=True)  # anchors + predictions
    _arrow(ax, (right, 7.1), (_SIDE_X, 8.0), dashed=True)  # proposals -> sampler
    _arrow(ax, (_SIDE_X, 8.4), (right, 8.4), dashed=True)  # sampled RoIs are pooled
    _arrow(ax, (right, 10.38), (_SIDE_X, 10.38), dashed=True)
    ax.set_xlim(0, 10)
    ax.set_ylim(13.2, 0)
    ax.set_axis_off()
    return ax


def you_are_here(chapter: int) -> Figure:
    """A wide, short strip of :data:`STAGES` with the stages of ``chapter`` highlighted.

    Raises:
        ValueError: ``chapter`` is not a chapter number 0..15.
    """
    lit = set(CHAPTER_STAGES[check_chapter(chapter)])
    width, height = STRIP_SIZE
    fig = Figure(figsize=STRIP_SIZE)  # not pyplot's: the strip never shows up by accident
    ax = fig.add_axes((0, 0, 1, 1))
    gap, margin = 0.11, 0.06
    box_w = (width - 2 * margin - gap * (len(STAGES) - 1)) / len(STAGES)
    box_h, top = 0.78, 0.4
    for i, stage in enumerate(STAGES):
        x = margin + i * (box_w + gap)
        _stage_box(ax, stage, (x, top), (box_w, box_h), STAGE_LABELS[stage], stage in lit,
                   fontsize=8.2, rounded=False)  # fmt: skip
    # one marker path for all the arrow heads between the boxes (keeps the SVG small)
    gaps = [margin + i * (box_w + gap) - gap / 2 for i in range(1, len(STAGES))]
    ax.plot(gaps, [top + box_h / 2] * len(gaps), linestyle="none", marker=">", markersize=4.5,
            color="#444444")  # fmt: skip
    whole = " (the whole model)" if len(lit) == len(STAGES) else ""
    ax.text(margin, 0.2, f"Faster R-CNN with FPN, you are here: chapter {chapter}{whole}",
            fontsize=8.5, va="center")  # fmt: skip
    ax.text(width - margin, 0.2, "dashed: training only", fontsize=8, va="center", ha="right",
            color="#555555")  # fmt: skip
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    return fig


def strip_svg(chapter: int) -> str:
    """The SVG text of :func:`you_are_here` for ``chapter``, byte-for-byte reproducible.

    Text is drawn as paths (no font needed by the reader), ids are salted with a fixed string
    and the date is left out, so the same code and matplotlib give the same file everywhere.
    """
    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # a reader's matplotlibrc must not change the bytes
        matplotlib.rcParams.update(SVG_RC)
        fig = you_are_here(chapter)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# One image traced through a trained model


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


__all__ = [
    "STAGES",
    "TRAINING_STAGES",
    "STAGE_LABELS",
    "CHAPTER_STAGES",
    "STRIP_SIZE",
    "SVG_RC",
    "TRACE_VIEWS",
    "SHOWN_SCORE",
    "check_chapter",
    "check_stages",
    "chapters_of",
    "draw_architecture",
    "you_are_here",
    "strip_svg",
    "trace_image",
    "draw_trace",
    "trace_explorer",
]
