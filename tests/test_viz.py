"""The shared drawing helpers: the procedural scene, box drawing and source display."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rcnn_lab.viz import show_source  # noqa: E402
from rcnn_lab.viz.anchors import PAIR_COLOURS, draw_best_anchors, plot_level  # noqa: E402
from rcnn_lab.viz.boxes import draw_named_boxes, draw_nms  # noqa: E402
from rcnn_lab.viz.draw import draw_boxes, show_image  # noqa: E402
from rcnn_lab.viz.matcher import GT_COLOUR, draw_anchor_labels, plot_iou_matrix  # noqa: E402
from rcnn_lab.viz.scene import SHAPE_CLASSES, jitter_boxes, toy_scene  # noqa: E402
from rcnn_lab.viz.source import (  # noqa: E402
    docstring_markdown,
    simplify_rest,
    source_markdown,
    source_text,
    split_docstring,
)


def test_scene_is_deterministic_and_in_range():
    a = toy_scene(96, 128, num_objects=3, seed=7, min_size=16)
    b = toy_scene(96, 128, num_objects=3, seed=7, min_size=16)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    image, boxes, labels = a
    assert image.shape == (3, 96, 128) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert boxes.shape == (3, 4) and labels.shape == (3,)
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes[:, [0, 2]] <= 128).all() and (boxes[:, [1, 3]] <= 96).all()
    assert ((labels >= 1) & (labels < len(SHAPE_CLASSES))).all()


def test_scene_box_is_tight_around_a_rectangle():
    # find a seed that draws a lone rectangle and check the box hugs the painted pixels
    for seed in range(50):
        image, boxes, labels = toy_scene(64, 64, num_objects=1, seed=seed, min_size=16)
        if labels[0] == 1:
            break
    else:  # pragma: no cover
        pytest.fail("no rectangle in 50 seeds")
    x1, y1, x2, y2 = boxes[0].int().tolist()
    painted = (image - image[:, 0:1, 0:1]).abs().sum(0) > 0.2  # differs from the sky colour
    inside = painted[y1:y2, x1:x2]
    assert inside.all()


def test_scene_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="too small"):
        toy_scene(20, 20, min_size=16)
    with pytest.raises(ValueError, match="max_size"):
        toy_scene(100, 100, min_size=40, max_size=30)


def test_jitter_boxes_valid():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0]])
    out = jitter_boxes(boxes, count=20, seed=0)
    assert out.shape == (20, 4)
    assert (out[:, 2:] > out[:, :2]).all()


def test_draw_boxes_adds_patches_and_checks_colours():
    ax = show_image(torch.rand(3, 20, 30))
    draw_boxes(ax, torch.tensor([[1.0, 2.0, 5.0, 6.0], [3.0, 3.0, 9.0, 9.0]]), labels=["a", "b"])
    assert len(ax.patches) == 2 and len(ax.texts) == 2
    with pytest.raises(ValueError, match="2 colours for 1 boxes"):
        draw_boxes(ax, torch.zeros(1, 4), color=["r", "g"])
    plt.close("all")


def test_source_text_and_errors():
    assert source_text(toy_scene).startswith("def toy_scene(")
    with pytest.raises(ValueError, match="no Python source"):
        source_text(torch.add)
    assert show_source(toy_scene) is None  # displays through IPython


class _Documented:
    """A class whose docstring uses ``literals`` and :func:`~rcnn_lab.ops.nms`.

    Args:
        size: [N, 4] boxes, ``x1 < x2``; a long meaning that goes on
            to a second line.
        name: what to call it.

    Returns:
        the answer.
    """

    def method(self) -> int:
        """Nested docstrings stay in the code, ``simplified``."""
        return 42


def test_show_source_is_a_collapsed_dropdown_titled_with_the_name():
    text = source_markdown(_Documented)
    lines = text.splitlines()
    assert lines[0] == '<details class="rcnn-source">'  # closed: no `open` attribute
    assert lines[1].startswith("<summary>Source of <code>_Documented</code> in <code>")
    assert lines[-1] == "</details>"
    assert "```python\nclass _Documented:\n    def method(self) -> int:" in text  # docstring out
    assert '"""Nested docstrings stay in the code, `simplified`."""' in text
    assert "``" not in text.replace("```", "") and ":func:" not in text
    assert source_markdown(_Documented, title="Custom").splitlines()[1] == (
        "<summary>Source of <code>Custom</code></summary>"
    )


def test_docstrings_render_as_markdown():
    doc, code = split_docstring(source_text(_Documented))
    assert doc.startswith("A class whose docstring") and '"""A class' not in code
    md = docstring_markdown(doc)
    assert "uses `literals` and `nms`." in md
    assert "**Args**" in md and "**Returns**" in md
    # one bullet per item, continuation lines joined, markup characters escaped
    assert (
        "- `size`: \\[N, 4\\] boxes, `x1 < x2`; a long meaning that goes on to a second line."
        in md.splitlines()
    )
    assert "- `name`: what to call it." in md.splitlines()
    assert "- the answer." in md.splitlines()
    assert simplify_rest(":class:`rcnn_lab.Matcher` and ``x``") == "`rcnn_lab.Matcher` and `x`"
    assert docstring_markdown("2**24 <= B, H*W") == "2\\*\\*24 \\<= B, H\\*W"


def test_draw_nms_labels_only_the_top_kept_boxes():
    boxes = torch.tensor([[float(i), 0.0, i + 5.0, 5.0] for i in range(0, 80, 10)])
    scores = torch.linspace(0.9, 0.2, 8)
    _, ax = plt.subplots()
    draw_nms(ax, torch.rand(3, 10, 90), boxes, scores, torch.arange(6), max_labels=3)
    assert [t.get_text() for t in ax.texts] == ["0.90", "0.80", "0.70"]
    plt.close("all")


def test_draw_named_boxes_marks_kept_and_suppressed():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 12.0, 12.0], [30.0, 0, 40, 10]])
    _, ax = plt.subplots()
    draw_named_boxes(ax, boxes, "ABC", keep=[0, 2])
    assert [t.get_text() for t in ax.texts] == ["A", "B", "C"]
    assert [p.get_linestyle() for p in ax.patches] == ["-", "--", "-"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # y axis points down, like an image
    plt.close("all")


def test_draw_best_anchors_pairs_each_object_with_its_anchor_by_colour():
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 20.0, 90.0, 60.0]])
    best = gt + torch.tensor([2.0, -3.0, 4.0, 1.0])
    _, ax = plt.subplots()
    draw_best_anchors(ax, torch.rand(3, 80, 100), gt, best, ["P3 IoU 0.80", "P4 IoU 0.70"])
    edges = [p.get_edgecolor() for p in ax.patches]  # gt 0, anchor 0, gt 1, anchor 1
    assert edges[0] == edges[1] != edges[2] == edges[3]
    assert [t.get_text() for t in ax.texts] == ["0: P3 IoU 0.80", "1: P4 IoU 0.70"]
    assert ax.texts[0].get_color() == PAIR_COLOURS[0]
    plt.close("all")


def test_plot_level_margin_none_fits_image_and_anchors():
    image = torch.rand(3, 64, 96)
    ax = plot_level(image, (32,), (1.0,), 16, 0.5, 0.5, margin=None)
    assert ax.get_xlim() == (-2.0, 98.0) and ax.get_ylim() == (66.0, -2.0)
    ax = plot_level(image, (128,), (1.0,), 16, 0.0, 0.0, margin=None)  # cell sticks out
    assert ax.get_xlim()[0] == -66.0
    ax = plot_level(image, (32,), (1.0,), 16, margin=0.25)
    assert ax.get_xlim() == (-24.0, 120.0)
    plt.close("all")


def test_plot_iou_matrix_writes_readable_values():
    iou = torch.tensor([[0.9, 0.1, 0.0, 0.4], [0.2, 0.6, 0.05, 0.0]])
    _, ax = plt.subplots()
    plot_iou_matrix(ax, iou, num_columns=3)  # the 2 best of gt 0 (0, 3), then of gt 1 (1, 0)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "3", "1"]
    texts = {t.get_text(): t for t in ax.texts}
    assert len(ax.texts) == 6 and all(t.get_fontsize() >= 9 for t in ax.texts)
    assert texts["0.90"].get_color() == "black" and texts["0.10"].get_color() == "white"
    _, ax = plt.subplots()
    plot_iou_matrix(ax, iou, num_columns=4, sort=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    plt.close("all")


def test_draw_anchor_labels_draws_dark_ground_truth():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [5, 5, 15, 15]])
    matches = torch.tensor([0, -1, -2])
    _, ax = plt.subplots()
    counts = draw_anchor_labels(ax, torch.rand(3, 40, 40), anchors, matches, anchors[:1])
    assert counts == {"positive": 1, "negative": 1, "ignored": 1}
    gt_patch = ax.patches[1]  # ignored anchor first, then the ground truth, then positives
    assert matplotlib.colors.to_hex(gt_patch.get_edgecolor()) == matplotlib.colors.to_hex(GT_COLOUR)
    plt.close("all")


def test_box_labels_are_readable_on_light_and_dark_colours():
    from rcnn_lab.viz.draw import label_text_colour

    assert label_text_colour("white") == "black"
    assert label_text_colour("yellow") == "black"
    assert label_text_colour("tab:orange") == "black"
    assert label_text_colour("black") == "white"
    assert label_text_colour("tab:blue") == "white"
    assert label_text_colour("darkred") == "white"
