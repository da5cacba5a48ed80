"""Tests of rcnn_lab.viz.backbone: the figures of chapter 8 (transform, backbone, FPN)."""

from collections import OrderedDict

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rcnn_lab.image_list import ImageList  # noqa: E402
from rcnn_lab.viz.backbone import denormalize, plot_padded_batch, plot_pyramid  # noqa: E402


def _pyramid(height=64, width=96):
    """Five random levels with strides 4 ... 64 over a height x width padded image."""
    names = ["0", "1", "2", "3", "pool"]
    return OrderedDict(
        (name, torch.rand(1, 8, height // 2 ** (i + 2), width // 2 ** (i + 2)))
        for i, name in enumerate(names)
    )


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_pyramid_titles_name_level_grid_and_stride():
    axes = plot_pyramid(_pyramid(), (64, 96))
    assert [ax.get_title() for ax in axes] == [
        "P2: 16x24, stride 4",
        "P3: 8x12, stride 8",
        "P4: 4x6, stride 16",
        "P5: 2x3, stride 32",
        "P6: 1x1, stride 64",
    ]


def test_plot_pyramid_with_the_input_fills_a_readable_grid():
    axes = plot_pyramid(_pyramid(), (64, 96), image=torch.rand(3, 64, 96), ncols=3)
    assert len(axes) == 6
    assert axes[0].get_title() == "input, 64x96"
    figure = axes[0].figure
    width, height = figure.get_size_inches()
    assert width == pytest.approx(9.0)  # three 3 in columns, not a 15 in strip
    assert height > 0.5 * width  # two rows: every panel as large as the column allows
    assert len(figure.axes) == 6


def test_plot_pyramid_hides_the_unused_panels():
    axes = plot_pyramid(_pyramid(), (64, 96), ncols=3)  # 5 levels in a 2 x 3 grid
    figure = axes[0].figure
    unused = [ax for ax in figure.axes if ax not in axes]
    assert len(unused) == 1 and not unused[0].axison


def test_plot_padded_batch_marks_the_padding_of_every_image():
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    tensors = torch.zeros(2, 3, 64, 96)
    images = ImageList(tensors, [(64, 80), (48, 96)])
    axes = plot_padded_batch(images, mean, std, boxes=[torch.tensor([[1.0, 2.0, 30.0, 40.0]])] * 2)
    assert [ax.get_title() for ax in axes] == [
        "image 64x80\npadded to 64x96",
        "image 48x96\npadded to 64x96",
    ]
    assert list(axes[0].get_xticks()) == [0, 80, 96]
    assert list(axes[1].get_yticks()) == [0, 48, 64]
    assert list(axes[1].get_xticks()) == [0, 96]  # unpadded width: one tick at 96
    hatched = [p for p in axes[0].patches if p.get_hatch() == "//"]
    assert len(hatched) == 2


def test_denormalize_inverts_the_normalisation():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    image = torch.rand(3, 5, 7, dtype=torch.float64)
    normalised = (image - torch.tensor(mean, dtype=image.dtype)[:, None, None]) / torch.tensor(
        std, dtype=image.dtype
    )[:, None, None]
    torch.testing.assert_close(denormalize(normalised, mean, std), image)
