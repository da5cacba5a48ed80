"""The whole detector at a glance: the architecture diagram and the chapters' "you are here"
strips (chapter 0; one image traced through the stages is :mod:`rcnn_lab.viz.trace`).

The diagram and the strips are drawn from :data:`STAGES` and :data:`CHAPTER_STAGES`, so the
picture, the strips of the chapters and the chapter map cannot drift apart.

Shapes: N images, R anchors of an image, A anchors per location, G ground-truth boxes, K RoIs
(proposals), C classes (background included), D channels, M detections of an image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

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


__all__ = [
    "STAGES",
    "TRAINING_STAGES",
    "STAGE_LABELS",
    "CHAPTER_STAGES",
    "STRIP_SIZE",
    "SVG_RC",
    "check_chapter",
    "check_stages",
    "chapters_of",
    "draw_architecture",
    "you_are_here",
    "strip_svg",
]
