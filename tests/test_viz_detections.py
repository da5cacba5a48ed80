"""Drawing a detector's output (chapters 7 and 9): settings, static frames, explorer."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rcnn_lab.data import ShapesDataset  # noqa: E402
from rcnn_lab.engine import build_model  # noqa: E402
from rcnn_lab.viz.detections import (  # noqa: E402
    detect,
    detection_explorer,
    draw_detections,
    inference_settings,
    settings_label,
)

TINY = {"widths": (4, 8, 8, 8, 8), "fpn_channels": 8, "representation_size": 16,
        "min_size": 64, "max_size": 64}  # fmt: skip
SETTINGS = [{"score_thresh": 0.0, "nms_thresh": 0.5}, {"score_thresh": 0.0, "nms_thresh": 1.0}]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("fasterrcnn_small_fpn", num_classes=7, **TINY).eval()


@pytest.fixture(scope="module")
def scene():
    return ShapesDataset("test", 1, image_size=64)[0]


def test_settings_are_applied_and_restored(model):
    heads = model.roi_heads
    before = (heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
    with inference_settings(model, score_thresh=0.9, detections_per_img=3):
        assert (heads.score_thresh, heads.detections_per_img) == (0.9, 3)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == before
    with pytest.raises(RuntimeError), inference_settings(model, nms_thresh=0.1):
        raise RuntimeError("a failing redraw")
    assert heads.nms_thresh == before[1]
    with pytest.raises(ValueError, match="unknown inference settings"):
        with inference_settings(model, box_score_thresh=0.5):
            pass


def test_detect_is_deterministic_and_leaves_rng_and_mode_alone(model, scene):
    image, _ = scene
    model.train()
    state = torch.get_rng_state()
    first = detect(model, [image], score_thresh=0.0, detections_per_img=7)[0]
    second = detect(model, [image], score_thresh=0.0, detections_per_img=7)[0]
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training  # the mode it came in
    model.eval()
    assert 0 < len(first["boxes"]) <= 7
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(first[key], second[key])


def test_draw_detections_labels_only_the_best(model, scene):
    image, target = scene
    found = detect(model, [image], score_thresh=0.0)[0]
    fig, ax = plt.subplots()
    draw_detections(ax, image, found, ShapesDataset.CLASSES, target=target, max_labels=2)
    assert len(ax.texts) == min(2, len(found["boxes"]))
    # detections, plus each ground-truth box twice (white under black dashes)
    assert len(ax.patches) == len(found["boxes"]) + 2 * len(target["boxes"])
    plt.close(fig)


def test_explorer_pre_draws_for_the_static_book(model, scene):
    pytest.importorskip("ipywidgets")
    from rcnn_lab.viz.frames import explorer_frames

    image, target = scene
    explorer = detection_explorer(
        model, [image, image], ShapesDataset.CLASSES, targets=[target] * 2
    )
    page = explorer_frames(explorer, SETTINGS, image_format="jpeg").data
    assert page.count('type="radio"') == 2 and "<script" not in page
    assert len(re.findall(r'src="data:image/jpeg;base64,[A-Za-z0-9+/=]+"', page)) == 2
    assert settings_label(SETTINGS[1]) == "score 0.0, nms 1.0"
    plt.close("all")


def test_explorer_draws_without_touching_the_rng(model, scene):
    pytest.importorskip("ipywidgets")
    image, target = scene
    state = torch.get_rng_state()
    widget = detection_explorer(model, [image, image], ShapesDataset.CLASSES, targets=[target] * 2)
    assert torch.equal(torch.get_rng_state(), state)
    values = {child.description: child.value for child in widget.widget.children[:-1]}
    assert values["scene"] == 1 and values["score_thresh"] == model.roi_heads.score_thresh
    plt.close("all")
