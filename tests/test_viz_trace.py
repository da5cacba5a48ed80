"""rcnn_lab.viz.trace: one image traced through the shipped model, its views and explorer."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from rcnn_lab.viz.trace import TRACE_VIEWS, draw_trace, trace_explorer, trace_image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    from rcnn_lab.data import ShapesDataset
    from rcnn_lab.pretrained import load_shapes_model

    model = load_shapes_model().double()
    return model, ShapesDataset("test", size=5)


def test_trace_follows_the_model_and_leaves_the_rng_alone(shipped):
    model, scenes = shipped
    image, target = scenes[4]
    model.train()
    state = torch.get_rng_state()
    trace = trace_image(model, image, target, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = model([image.double()])[0]
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(trace["detections"][key], expected[key])
    R = len(trace["anchors"])
    assert R == sum(trace["anchors_per_level"])
    assert trace["objectness"].shape == (R, 1) and trace["deltas"].shape == (R, 4)
    assert trace["matches"].shape == (R,) and trace["anchor_labels"].shape == (R,)
    positive, negative = trace["sampled_anchors"]
    assert int(positive.sum() + negative.sum()) <= model.rpn.fg_bg_sampler.batch_size_per_image
    K = len(trace["proposals"])
    assert trace["class_logits"].shape == (K, len(model.class_names))
    assert trace["pooled"].shape[0] == K
    again = trace_image(model, image, target, seed=0)
    assert torch.equal(again["rois"], trace["rois"])  # the seed fixes the sampled RoIs


def test_every_view_draws_and_unknown_views_raise(shipped):
    model, scenes = shipped
    trace = trace_image(model, *scenes[1])
    for view in TRACE_VIEWS:
        fig, ax = plt.subplots()
        assert draw_trace(trace, view, ax) is ax
        assert ax.get_title(), view
        plt.close(fig)
    with pytest.raises(ValueError, match="unknown view 'nms'"):
        draw_trace(trace, "nms")


def test_trace_explorer_offers_every_stage(shipped):
    pytest.importorskip("ipywidgets")
    model, scenes = shipped
    explorer = trace_explorer(model, [scenes[i] for i in range(2)])
    stage, scene = explorer.children[:2]
    assert list(stage.options) == list(TRACE_VIEWS)
    assert (scene.min, scene.max) == (0, 1)
    plt.close("all")


def test_trace_of_a_scene_without_objects(shipped):
    model, scenes = shipped
    image, target = scenes[0]
    assert len(target["boxes"]) == 0
    trace = trace_image(model, image, target)
    assert bool((trace["matches"] == -1).all())  # every anchor below the low threshold
    assert int(trace["sampled_anchors"][0].sum()) == 0
    assert bool((trace["roi_labels"] == 0).all())
    for view in ("labelled anchors", "detections"):
        fig, ax = plt.subplots()
        draw_trace(trace, view, ax)
        plt.close(fig)
