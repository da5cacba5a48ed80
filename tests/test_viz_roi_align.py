"""The RoIAlign chapter's worked-example drawings: numbers, bins, samples, results."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from rcnn_lab.viz.roi_align import (  # noqa: E402
    draw_numbered_map,
    draw_roi_align_worked,
    draw_roi_pool_worked,
)

VALUES = torch.tensor([[1, 6, 2, 0], [3, 9, 4, 1], [0, 2, 8, 5], [7, 1, 3, 6]], dtype=torch.float64)
BOX = (16.0, 24.0, 64.0, 56.0)  # image pixels; (1, 1.5, 4, 3.5) on the stride-16 grid


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_numbered_map_writes_every_value(ax):
    draw_numbered_map(ax, torch.tensor([[1.5, 2.0], [-3.0, 4.25]]), bin_outlines=True)
    assert sorted(t.get_text() for t in ax.texts) == ["-3", "1.5", "2", "4.25"]
    assert len(ax.patches) == 4  # one outline per cell


def test_roi_pool_worked_example_by_hand(ax):
    # rounded box: columns 1..4 (width 4, +1), rows 2..4 (height 3); bins 1.5 rows x 2 columns
    pooled = draw_roi_pool_worked(ax, VALUES, BOX, (2, 2), 1 / 16)
    expected = torch.tensor([[8.0, 6.0], [3.0, 6.0]], dtype=torch.float64)
    torch.testing.assert_close(pooled, expected)
    rois = torch.tensor([[0.0, *BOX]], dtype=torch.float64)
    theirs = torchvision.ops.roi_pool(VALUES[None, None], rois, (2, 2), 1 / 16)[0, 0]
    torch.testing.assert_close(pooled, theirs)
    assert len(ax.patches) == 5  # four bins and the dashed box


def test_roi_align_worked_example_by_hand(ax):
    # aligned: (0.5, 1, 3.5, 3) on the grid, one sample per bin at x in {1.25, 2.75},
    # y in {1.5, 2.5}; e.g. bin (0, 0): .5 * (.75 * 9 + .25 * 4) + .5 * (.75 * 2 + .25 * 8)
    pooled = draw_roi_align_worked(ax, VALUES, BOX, (2, 2), 1 / 16)
    expected = torch.tensor([[5.625, 3.75], [2.5, 5.5]], dtype=torch.float64)
    torch.testing.assert_close(pooled, expected)
    rois = torch.tensor([[0.0, *BOX]], dtype=torch.float64)
    theirs = torchvision.ops.roi_align(VALUES[None, None], rois, (2, 2), 1 / 16, 1, True)[0, 0]
    torch.testing.assert_close(pooled, theirs)
    labels = sorted(t.get_text() for t in ax.texts if "." in t.get_text())
    assert labels == ["2.5", "3.75", "5.5", "5.625"]  # each sample labelled with its value
