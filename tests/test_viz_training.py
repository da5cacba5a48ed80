"""Chapter 11's helpers: metrics.jsonl reading, smoothing, loss-curve plots and the explorer."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rcnn_lab.viz.training import (  # noqa: E402
    CURVE_NAMES,
    LOSS_NAMES,
    curve,
    first_and_last_mean,
    loss_curve_explorer,
    plot_loss_curves,
    plot_val_metrics,
    read_metrics,
    smooth,
)


def train_record(iteration: int, scale: float) -> dict:
    losses = {name: scale * (k + 1) for k, name in enumerate(LOSS_NAMES)}
    return {"kind": "train", "iteration": iteration, "epoch": 0, "lr": 0.01,
            "loss": sum(losses.values()), **losses, "images_per_s": 3.0}  # fmt: skip


RECORDS = [
    train_record(1, 1.0),
    train_record(2, 0.5),
    {"kind": "val", "iteration": 2, "epoch": 0, "ap": 0.25, "ap50": None},
    train_record(3, 0.25),
]


def test_read_metrics_round_trips_and_skips_blank_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\n")
    assert read_metrics(path) == RECORDS


def test_curve_picks_one_kind_and_turns_null_into_nan():
    iterations, values = curve(RECORDS, "loss_classifier")
    assert iterations.tolist() == [1, 2, 3]
    assert values.tolist() == [3.0, 1.5, 0.75]
    iterations, values = curve(RECORDS, "ap50", kind="val")
    assert iterations.tolist() == [2] and np.isnan(values[0])


def test_smooth_is_a_trailing_mean_that_starts_at_the_first_value():
    values = [3.0, 1.0, 2.0, 6.0]
    assert smooth(values, 1).tolist() == values
    assert smooth(values, 2).tolist() == [3.0, 2.0, 1.5, 4.0]
    assert smooth(values, 3).tolist() == [3.0, 2.0, 2.0, 3.0]
    assert smooth(values, 10).tolist() == [3.0, 2.0, 2.0, 3.0]  # longer than the curve
    assert smooth([], 3).shape == (0,)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="window must be a positive integer"):
            smooth(values, bad)


def test_first_and_last_mean():
    assert first_and_last_mean([4.0, 2.0, 1.0, 1.0], 2) == (3.0, 1.0)
    with pytest.raises(ValueError, match="count must be in 1..4"):
        first_and_last_mean([4.0, 2.0, 1.0, 1.0], 5)


def test_plot_loss_curves_draws_each_curve_with_its_raw_shadow():
    _, ax = plt.subplots()
    plot_loss_curves(ax, RECORDS, window=2, log_scale=True, title="t")
    assert len(ax.lines) == 2 * len(CURVE_NAMES)  # faint raw + smoothed
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == list(CURVE_NAMES)
    assert ax.get_yscale() == "log" and ax.get_title() == "t"
    _, ax = plt.subplots()
    plot_loss_curves(ax, RECORDS, names=["loss_box_reg"])
    assert len(ax.lines) == 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [4.0, 2.0, 1.0])
    plt.close("all")


def test_plot_val_metrics_and_explorer_build():
    _, ax = plt.subplots()
    plot_val_metrics(ax, RECORDS)
    assert [line.get_label() for line in ax.lines] == ["ap", "ap50"]
    plt.close("all")
    explorer = loss_curve_explorer({"a": RECORDS, "b": RECORDS[:2]}, window=2)
    run, names, window, log_scale = explorer.children[:4]
    assert run.options == ("a", "b") and run.value == "a"
    assert names.value == tuple(CURVE_NAMES) and window.value == 2 and not log_scale.value
    plt.close("all")
