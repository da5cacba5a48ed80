"""Chapter 12's helpers: error kinds, operating points, IoU-shifted boxes, figures, explorer."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rcnn_lab.engine import precision_recall  # noqa: E402
from rcnn_lab.ops import box_iou  # noqa: E402
from rcnn_lab.viz.evaluation import (  # noqa: E402
    DETECTION_KINDS,
    KIND_COLOURS,
    MISSED,
    above_threshold,
    box_at_iou,
    classify_detections,
    draw_errors,
    draw_iou_thresholds,
    operating_point,
    plot_interpolation,
    plot_pr_curves,
    pooled_operating_point,
    threshold_explorer,
    threshold_frames,
    threshold_view,
)

CLASS_NAMES = ("__background__", "circle", "square")
A, B, C = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]


def dets(boxes, labels, scores):
    """A detection dict from plain lists."""
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def target(boxes, labels):
    """A target dict from plain lists."""
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_every_kind_of_detection():
    gt = target([A, B, C], [1, 1, 2])
    shifted_a = [2.0, 0.0, 12.0, 10.0]  # IoU 8/12 = 0.67 with A
    loose_b = [24.0, 20.0, 34.0, 30.0]  # IoU 6/14 = 0.43 with B
    far = [100.0, 100.0, 110.0, 110.0]
    detections = dets(
        [shifted_a, A, loose_b, C, far],  # input order differs from score order on purpose
        [1, 1, 1, 1, 2],
        [0.6, 0.9, 0.8, 0.7, 0.5],
    )
    kinds, missed = classify_detections(detections, target=gt)
    # A (0.9) takes the box, the shifted copy (0.6) comes too late: a duplicate
    assert kinds == ["duplicate", "correct", "mislocalised", "wrong class", "background"]
    assert missed.tolist() == [False, True, True]
    assert set(kinds) == set(DETECTION_KINDS)


def test_higher_score_wins_the_box_whatever_the_input_order():
    gt = target([A], [1])
    kinds, missed = classify_detections(dets([A, A], [1, 1], [0.3, 0.7]), gt)
    assert kinds == ["duplicate", "correct"] and not missed.any()


def test_no_ground_truth_and_no_detections():
    kinds, missed = classify_detections(dets([A], [1], [0.9]), target([], []))
    assert kinds == ["background"] and missed.shape == (0,)
    kinds, missed = classify_detections(dets([], [], []), target([A], [2]))
    assert kinds == [] and missed.tolist() == [True]


def test_iou_threshold_decides_correct_or_mislocalised():
    gt = target([A], [1])
    shifted = [2.0, 0.0, 12.0, 10.0]  # IoU 2/3
    assert classify_detections(dets([shifted], [1], [0.9]), gt, 0.5)[0] == ["correct"]
    assert classify_detections(dets([shifted], [1], [0.9]), gt, 0.75)[0] == ["mislocalised"]


def test_above_threshold_keeps_scores_at_or_over_it():
    kept = above_threshold(dets([A, B, C], [1, 2, 1], [0.2, 0.5, 0.8]), 0.5)
    assert kept["scores"].tolist() == [0.5, pytest.approx(0.8)]
    assert kept["labels"].tolist() == [2, 1] and kept["boxes"].shape == (2, 4)


@pytest.mark.parametrize("iou", [0.05, 0.5, 0.75, 0.95, 1.0])
def test_box_at_iou_has_that_iou(iou):
    box = torch.tensor([10.0, 20.0, 50.0, 40.0], dtype=torch.float64)
    shifted = box_at_iou(box, iou)
    assert float(box_iou(box[None], shifted[None])) == pytest.approx(iou, abs=1e-12)
    assert shifted[1] == box[1] and shifted[3] == box[3]


def test_operating_points_count_a_prefix_of_the_ranking():
    detections = [dets([A, B], [1, 1], [0.9, 0.4]), dets([C, A], [1, 1], [0.8, 0.3])]
    targets = [target([A], [1]), target([C, B], [1, 1])]
    curve = precision_recall(detections, targets, 0.5, label=1)
    # ranked: 0.9 hit, 0.8 hit, 0.4 miss (B is in the other image), 0.3 miss
    point = operating_point(curve, 0.5)
    assert (point.true_positives, point.detections, point.num_gt) == (2, 2, 3)
    assert point.precision == 1.0 and point.recall == pytest.approx(2 / 3)
    assert operating_point(curve, 0.0).precision == 0.5
    assert math.isnan(operating_point(curve, 0.95).precision)
    pooled = pooled_operating_point({"a": curve, "b": curve}, 0.5)
    assert (pooled.true_positives, pooled.detections, pooled.num_gt) == (4, 4, 6)


def test_figures_draw_without_error():
    detections = [dets([A, B], [1, 2], [0.9, 0.4])]
    targets = [target([A, C], [1, 2])]
    curves = {
        name: precision_recall(detections, targets, 0.5, label=label)
        for label, name in enumerate(CLASS_NAMES[1:], start=1)
    }
    fig, axes = plt.subplots(1, 6)
    draw_iou_thresholds(axes[:3], torch.tensor(A), (0.5, 0.75, 0.95))
    plot_pr_curves(axes[3], curves, mark_thresholds=(0.3, 0.8), title="curves")
    plot_interpolation(axes[4], curves["circle"].recall, curves["circle"].precision)
    image = torch.rand(3, 64, 64)
    kinds = draw_errors(axes[5], image, detections[0], targets[0], CLASS_NAMES)
    assert kinds == ["correct", "background"]
    assert len(axes[5].patches) == 3  # C missed, then the two detections
    assert axes[5].patches[0].get_edgecolor() == matplotlib.colors.to_rgba(KIND_COLOURS[MISSED])
    plt.close(fig)


def test_threshold_view_is_a_pyplot_free_figure():
    detections = [dets([A, B], [1, 1], [0.9, 0.4])]
    targets = [target([A, C], [1, 1])]
    curves = {"circle": precision_recall(detections, targets, 0.5, label=1)}
    fig = threshold_view(
        curves, torch.rand(3, 64, 64), detections[0], targets[0], CLASS_NAMES, 0.5, title="x"
    )
    assert len(fig.axes) == 2 and not plt.get_fignums()  # never shown by pyplot on its own
    assert fig.axes[0].get_title() == "all classes: precision 1.00, recall 0.50"
    assert fig.axes[1].get_title() == "x: 1 detections"


def test_explorer_builds_its_widgets_and_redraws():
    pytest.importorskip("ipywidgets")
    detections = [dets([A], [1], [0.9]), dets([B], [1], [0.6])]
    targets = [target([A], [1]), target([C], [1])]
    curves = {"circle": precision_recall(detections, targets, 0.5, label=1)}
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    explorer = threshold_explorer(curves, images, detections, targets, CLASS_NAMES, first_image=1)
    sliders, picture = explorer.children
    threshold, image = sliders.children
    assert (threshold.value, image.value, image.max) == (0.5, 1, 1)
    first = bytes(picture.value)  # ipywidgets keeps the bytes as a memoryview
    assert first.startswith(b"\x89PNG")
    image.value = 0
    assert bytes(picture.value) != first and bytes(picture.value).startswith(b"\x89PNG")
    assert not plt.get_fignums()


def test_threshold_frames_predraw_one_distinct_figure_per_setting():
    detections = [dets([A], [1], [0.9]), dets([B], [1], [0.6])]
    targets = [target([A], [1]), target([C], [1])]
    curves = {"circle": precision_recall(detections, targets, 0.5, label=1)}
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    settings = [{"score": 0.5, "scene": 0}, {"score": 0.5, "scene": 1}, {"score": 0.95, "scene": 1}]
    page = threshold_frames(curves, images, detections, targets, CLASS_NAMES, settings).data
    pictures = re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', page)
    assert len(pictures) == 3 and len(set(pictures)) == 3
    assert "score=0.95, scene=1" in page
    assert not plt.get_fignums()
    with pytest.raises(ValueError, match="scene"):
        threshold_frames(
            curves, images, detections, targets, CLASS_NAMES, [{"score": 0.5, "scene": 2}]
        )
