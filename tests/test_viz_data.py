"""The data chapter's figures and explorer (rcnn_lab.viz.data)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rcnn_lab.data import ShapesDataset  # noqa: E402
from rcnn_lab.viz.data import (  # noqa: E402
    ALL_CLASSES,
    class_colour,
    data_explorer,
    draw_occlusion,
    draw_target,
    plot_samples,
    plot_statistics,
    show_pixels,
)

NAMES = ShapesDataset.CLASSES


def _sample():
    image = torch.rand(3, 12, 20)
    target = {
        "boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0], [3.0, 3.0, 9.0, 9.0], [0.0, 0.0, 4.0, 4.0]]),
        "labels": torch.tensor([1, 3, 1]),
    }
    return image, target


def test_class_colours_differ_for_the_six_shapes():
    colours = [class_colour(label) for label in range(1, len(NAMES))]
    assert len(set(colours)) == len(colours)


def test_show_pixels_puts_pixel_edges_on_whole_numbers():
    _, ax = plt.subplots()
    show_pixels(ax, torch.rand(3, 12, 20))
    assert ax.images[-1].get_extent() == [0, 20, 12, 0]
    plt.close("all")


def test_draw_target_draws_and_filters_by_class():
    image, target = _sample()
    _, ax = plt.subplots()
    assert draw_target(ax, image, target, NAMES) == 3
    assert len(ax.patches) == 3 and [t.get_text() for t in ax.texts] == [
        "circle",
        "square",
        "circle",
    ]
    _, ax = plt.subplots()
    assert draw_target(ax, image, target, NAMES, classes={3}) == 1
    assert len(ax.patches) == 1 and ax.texts[0].get_text() == "square"
    _, ax = plt.subplots()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    assert draw_target(ax, image, empty, NAMES) == 0 and not ax.patches
    plt.close("all")


def test_plot_samples_makes_one_panel_per_sample_and_blanks_the_rest():
    fig = plot_samples([_sample()] * 5, NAMES, columns=3)
    axes = fig.get_axes()
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:5]] == ["3 objects"] * 5
    assert not axes[5].axison
    fig = plot_samples([_sample()], NAMES, titles=["mine"], columns=2)
    assert fig.get_axes()[0].get_title() == "mine"
    plt.close("all")


def test_draw_occlusion_draws_whole_and_visible_boxes():
    scene = ShapesDataset("val", size=1).scene(0)
    _, ax = plt.subplots()
    draw_occlusion(ax, scene, NAMES)
    n = len(scene.labels)
    assert len(ax.patches) == 2 * n and len(ax.texts) == n
    assert ax.texts[0].get_text().endswith("%")
    plt.close("all")


def test_plot_statistics_has_a_panel_per_quantity():
    ds = ShapesDataset("val", size=6)
    targets = [ds[i][1] for i in range(len(ds))]
    assert len(plot_statistics(targets, 160, NAMES).get_axes()) == 3
    fractions = [ds.scene(i).visible_fractions for i in range(len(ds))]
    assert len(plot_statistics(targets, 160, NAMES, fractions).get_axes()) == 4
    plt.close("all")


def test_data_explorer_builds_its_controls():
    explorer = data_explorer(ShapesDataset("val", size=5))
    controls = {w.description: w for w in explorer.children[:-1]}
    assert controls["image"].max == 4
    assert list(controls["class"].options) == [ALL_CLASSES, *NAMES[1:]]
    assert controls["augment (train_transforms)"].value is False
    controls["class"].value = "star"  # redraws without error
    controls["augment (train_transforms)"].value = True
    plt.close("all")
