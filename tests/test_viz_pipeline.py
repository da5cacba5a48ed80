"""rcnn_lab.viz.pipeline: the architecture diagram and the "you are here" strips."""

from __future__ import annotations

import re

import matplotlib
import pytest

from rcnn_lab.viz.pipeline import (
    CHAPTER_STAGES,
    STAGE_LABELS,
    STAGES,
    TRAINING_STAGES,
    chapters_of,
    check_chapter,
    draw_architecture,
    strip_svg,
    you_are_here,
)
from tests.conftest import BOOK, load_script

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

STRIPS = BOOK / "images" / "stages"
MAX_STRIP_BYTES = 40 * 1024


# ---------------------------------------------------------------------------- stages and chapters
def test_stages_follow_the_image_through_the_model():
    assert len(set(STAGES)) == len(STAGES)
    assert STAGES[:4] == ("data", "transform", "backbone", "fpn")
    order = {stage: i for i, stage in enumerate(STAGES)}
    inference = ["anchors", "rpn_head", "proposals", "roi_align", "box_head", "predictor"]
    assert [order[s] for s in inference] == sorted(order[s] for s in inference)
    assert order["proposals"] < order["sampler"] < order["roi_align"]  # RoIs are sampled first
    assert order["predictor"] < order["postprocess"]
    assert set(TRAINING_STAGES) == {"sampler", "losses"}


def test_strip_labels_are_short():
    assert list(STAGE_LABELS) == list(STAGES)
    for label in STAGE_LABELS.values():
        lines = label.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 9 for line in lines), label


def test_every_chapter_has_stages_and_every_stage_a_chapter():
    assert sorted(CHAPTER_STAGES) == list(range(16))
    for chapter, stages in CHAPTER_STAGES.items():
        assert stages and set(stages) <= set(STAGES), chapter
        assert list(stages) == sorted(stages, key=STAGES.index), f"chapter {chapter}: order"
    for stage in STAGES:
        assert chapters_of(stage), f"no chapter explains {stage}"
    assert CHAPTER_STAGES[2] == ("anchors",) and CHAPTER_STAGES[6] == ("roi_align",)
    assert CHAPTER_STAGES[0] == STAGES == CHAPTER_STAGES[9]
    assert chapters_of("rpn_head") == (5,)
    assert chapters_of("backbone") == (8,)


@pytest.mark.parametrize("bad", [-1, 16, 2.0, "3", True, None])
def test_bad_chapter_number_raises_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"chapter must be an integer from 0 to 15, got"):
        check_chapter(bad)
    with pytest.raises(ValueError, match=r"chapter must be an integer from 0 to 15"):
        you_are_here(bad)


def test_unknown_stage_raises():
    with pytest.raises(ValueError, match=r"unknown stages \['rpn'\]"):
        draw_architecture(highlight=("anchors", "rpn"))
    with pytest.raises(ValueError, match="unknown stages"):
        chapters_of("nms")


# -------------------------------------------------------------------------------------- drawings
def _lit(ax) -> set[str]:
    """The stages drawn highlighted (their patches' gid is here-<stage>)."""
    return {p.get_gid()[5:] for p in ax.patches if (p.get_gid() or "").startswith("here-")}


def _check_text_layout(fig, ax) -> None:
    """Every stage label lies inside its own box, and no two texts overlap."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = {}
    for patch in ax.patches:
        gid = patch.get_gid() or ""
        if "-" in gid or gid == "detections":
            boxes.setdefault(gid.split("-", 1)[-1], []).append(patch.get_window_extent(renderer))
    texts = [t for t in ax.texts if t.get_text()]
    extents = [t.get_window_extent(renderer) for t in texts]
    for text, extent in zip(texts, extents):
        gid = text.get_gid() or ""
        if gid.startswith("label-"):
            inside = [
                box
                for box in boxes[gid[6:]]
                if box.x0 <= extent.x0 and extent.x1 <= box.x1
                and box.y0 <= extent.y0 and extent.y1 <= box.y1
            ]  # fmt: skip
            assert inside, f"{text.get_text()!r} sticks out of its box"
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            assert not extents[i].overlaps(extents[j]), (texts[i].get_text(), texts[j].get_text())


def test_architecture_highlights_what_is_asked():
    ax = draw_architecture()
    assert _lit(ax) == set(STAGES)  # nothing asked: everything in colour
    _check_text_layout(ax.figure, ax)
    plt.close(ax.figure)
    ax = draw_architecture(highlight=("rpn_head", "losses"))
    assert _lit(ax) == {"rpn_head", "losses"}
    labels = " ".join(t.get_text() for t in ax.texts)
    for name in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"):
        assert name in labels
    assert "box regression 1" in labels and "box regression 2" in labels
    plt.close(ax.figure)


def test_architecture_draws_on_a_given_axes():
    fig, ax = plt.subplots()
    assert draw_architecture(ax=ax) is ax
    plt.close(fig)


@pytest.mark.parametrize("chapter", sorted(CHAPTER_STAGES))
def test_strip_highlights_the_chapter_stages(chapter):
    fig = you_are_here(chapter)
    assert tuple(fig.get_size_inches()) == (10.0, 1.3)
    ax = fig.axes[0]
    assert _lit(ax) == set(CHAPTER_STAGES[chapter])
    assert f"chapter {chapter}" in " ".join(t.get_text() for t in ax.texts)
    _check_text_layout(fig, ax)


def test_strip_svg_is_reproducible():
    first = strip_svg(5)
    assert first == strip_svg(5)
    assert "<dc:date>" not in first
    assert first != strip_svg(6)
    with matplotlib.rc_context({"lines.linewidth": 7, "font.size": 20}):  # a reader's style
        assert strip_svg(5) == first


# ------------------------------------------------------------------------- the committed strips
def _highlighted_in_svg(text: str) -> set[str]:
    return set(re.findall(r'id="here-(\w+)"', text))


def test_every_chapter_has_a_small_committed_strip():
    names = sorted(p.name for p in STRIPS.glob("*.svg"))
    assert names == [f"ch{chapter:02d}.svg" for chapter in sorted(CHAPTER_STAGES)]
    for chapter, stages in CHAPTER_STAGES.items():
        text = (STRIPS / f"ch{chapter:02d}.svg").read_text(encoding="utf-8")
        assert len(text.encode("utf-8")) < MAX_STRIP_BYTES
        # independent of the matplotlib version: the committed file highlights the right stages
        assert _highlighted_in_svg(text) == set(stages), chapter


def test_committed_strips_are_what_the_script_writes_now(tmp_path):
    script = load_script("make_stage_strips")
    committed = (STRIPS / "ch00.svg").read_text(encoding="utf-8")
    made_with = re.search(r"Matplotlib v([^,<\s]+)", committed).group(1)
    if made_with != matplotlib.__version__:
        pytest.skip(
            f"strips drawn with matplotlib {made_with}, this is {matplotlib.__version__}: "
            "run scripts/make_stage_strips.py to redraw them"
        )
    assert script.main(["--out", str(tmp_path)]) == 0
    for chapter in CHAPTER_STAGES:
        name = f"ch{chapter:02d}.svg"
        assert (tmp_path / name).read_bytes() == (STRIPS / name).read_bytes(), (
            f"{name} is stale: run scripts/make_stage_strips.py"
        )
    assert script.main(["--check"]) == 0
    (tmp_path / "ch03.svg").write_text("stale")
    assert script.stale_strips(tmp_path) == [tmp_path / "ch03.svg"]
