"""The RPN chapter's figure helpers: objectness maps, their heat map, proposal drawing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rcnn_lab import AnchorGenerator, RegionProposalNetwork, RPNHead  # noqa: E402
from rcnn_lab.viz.rpn import (  # noqa: E402
    draw_objectness,
    draw_proposals,
    objectness_maps,
    stretch_to_image,
)


def tiny_rpn() -> RegionProposalNetwork:
    torch.manual_seed(0)
    anchors = AnchorGenerator(((8,), (16,)), ((0.5, 1.0, 2.0),) * 2)
    top_n = {"training": 10, "testing": 5}
    return RegionProposalNetwork(anchors, RPNHead(4, 3), 0.7, 0.3, 16, 0.5, top_n, top_n, 0.7)


def test_objectness_maps_are_the_best_anchor_probability_per_position():
    rpn = tiny_rpn()
    features = {"0": torch.randn(2, 4, 6, 8), "1": torch.randn(2, 4, 3, 4)}
    maps = objectness_maps(rpn, features)
    logits, _ = rpn.head(list(features.values()))
    assert [tuple(m.shape) for m in maps] == [(6, 8), (3, 4)]
    for level_map, level_logits in zip(maps, logits):
        torch.testing.assert_close(level_map, level_logits[0].sigmoid().max(dim=0).values)
    assert all(0 <= float(m.min()) and float(m.max()) <= 1 for m in maps)


def test_stretch_to_image_repeats_cells_and_takes_the_maximum():
    coarse = torch.tensor([[0.1, 0.9]])  # one row, two cells: each covers 2 x 2 pixels
    fine = torch.zeros(2, 4)
    fine[1, 0] = 0.5
    heat = stretch_to_image([coarse, fine], (2, 4))
    expected = torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.5, 0.1, 0.9, 0.9]])
    torch.testing.assert_close(heat, expected)


def test_stretch_to_image_reads_the_last_cell_past_the_grid():
    level_map = torch.tensor([[0.2, 0.4, 0.6]])  # 3 cells over 7 pixels: 7 // 3 = 2 px each
    heat = stretch_to_image([level_map], (1, 7))
    torch.testing.assert_close(heat, torch.tensor([[0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.6]]))


def test_draw_objectness_overlays_a_heat_map_of_the_image_size():
    image = torch.rand(3, 16, 24)
    fig, ax = plt.subplots()
    shown = draw_objectness(ax, image, [torch.rand(4, 6)], torch.tensor([[1.0, 2.0, 9.0, 8.0]]))
    assert shown.get_array().shape == (16, 24)
    assert shown.get_clim() == (0.0, 1.0)
    assert len(ax.patches) == 1  # the ground-truth box
    plt.close(fig)


def test_draw_proposals_uses_the_given_colours():
    image = torch.rand(3, 16, 16)
    boxes = torch.tensor([[1.0, 1.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0]])
    fig, ax = plt.subplots()
    draw_proposals(ax, image, boxes, torch.tensor([0.9, 0.2]), boxes[:1], gt_colour="black",
                   colour="magenta")  # fmt: skip
    edge = [tuple(p.get_edgecolor()[:3]) for p in ax.patches]
    assert edge[0] == (0.0, 0.0, 0.0)  # ground truth first
    assert edge[1:] == [(1.0, 0.0, 1.0)] * 2
    plt.close(fig)
