"""Helpers for chapter 11 (training): read ``metrics.jsonl``, smooth and plot the loss curves.

The training engine (:mod:`rcnn_lab.engine.metrics_log`) writes one JSON object per line:
``kind == "train"`` records hold the losses averaged over ``log_every`` iterations, ``kind ==
"val"`` records the evaluation metrics. These helpers only read and draw them.

Shapes: T logged points of a curve.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

#: The four losses of Faster R-CNN, in pipeline order (the RPN's two, then the RoI heads').
LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")
#: Every training curve a record holds, the total ``loss`` (their sum) and the four terms.
CURVE_NAMES = ("loss", *LOSS_NAMES)
#: One colour per curve, the same in every figure of the chapter.
CURVE_COLOURS = {
    "loss": "black",
    "loss_objectness": "tab:blue",
    "loss_rpn_box_reg": "tab:cyan",
    "loss_classifier": "tab:red",
    "loss_box_reg": "tab:orange",
}


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, in file order (blank lines skipped)."""
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def curve(records: Sequence[dict], name: str, kind: str = "train") -> tuple[np.ndarray, ...]:
    """(iterations [T], values [T]) of ``name`` in the records of ``kind``.

    A missing or ``null`` value (a metric with nothing to score) becomes NaN.
    """
    rows = [r for r in records if r.get("kind") == kind]
    iterations = np.array([r["iteration"] for r in rows], dtype=np.int64)
    values = np.array([_number(r.get(name)) for r in rows], dtype=np.float64)
    return iterations, values


def _number(value) -> float:
    return math.nan if value is None else float(value)


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average: point t is the mean of points max(0, t - window + 1)..t.

    The first ``window - 1`` points average what exists so far, so the curve starts at the
    first value instead of being shifted or padded. ``window=1`` returns the values unchanged.
    """
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    values = np.asarray(values, dtype=np.float64)
    sums = np.concatenate([[0.0], np.cumsum(values)])  # [T + 1]
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def first_and_last_mean(values: Sequence[float], count: int) -> tuple[float, float]:
    """The means of the first and of the last ``count`` values (to say whether a loss fell)."""
    values = np.asarray(values, dtype=np.float64)
    if not 1 <= count <= len(values):
        raise ValueError(f"count must be in 1..{len(values)}, got {count!r}")
    return float(values[:count].mean()), float(values[-count:].mean())


def plot_loss_curves(
    ax: Axes,
    records: Sequence[dict],
    names: Sequence[str] = CURVE_NAMES,
    window: int = 1,
    log_scale: bool = False,
    title: str = "",
) -> Axes:
    """Draw the training curves ``names`` against the iteration, smoothed over ``window`` points.

    With ``window > 1`` the raw curve stays visible, faint, behind the smoothed one.
    """
    for name in names:
        iterations, values = curve(records, name)
        colour = CURVE_COLOURS.get(name)
        if window > 1:
            ax.plot(iterations, values, color=colour, alpha=0.2, linewidth=0.8)
        ax.plot(iterations, smooth(values, window), color=colour, label=name, linewidth=1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (log scale)" if log_scale else "loss")
    if log_scale:
        ax.set_yscale("log")
    if names:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def plot_val_metrics(
    ax: Axes, records: Sequence[dict], names: Sequence[str] = ("ap", "ap50"), title: str = ""
) -> Axes:
    """Draw the evaluation metrics ``names`` (``kind == "val"`` records) against the iteration."""
    for name in names:
        iterations, values = curve(records, name, kind="val")
        ax.plot(iterations, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val metric")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def loss_curve_explorer(runs: Mapping[str, Sequence[dict]], window: int = 1, max_window: int = 50):
    """ipywidgets explorer: pick a run, the loss curves to show, the smoothing window, the y scale.

    Args:
        runs: run name -> the records of its ``metrics.jsonl`` (:func:`read_metrics`).
        window: the initial smoothing window, in logged points.
        max_window: the largest window the slider offers.
    """
    from ipywidgets import Checkbox, Dropdown, IntSlider, SelectMultiple, interactive

    def show(run, names, window, log_scale):
        _, ax = plt.subplots(figsize=(7, 4))
        plot_loss_curves(ax, runs[run], names, window, log_scale, title=run)
        plt.show()

    return interactive(
        show,
        run=Dropdown(options=list(runs), description="run"),
        names=SelectMultiple(
            options=list(CURVE_NAMES), value=tuple(CURVE_NAMES), rows=5, description="curves"
        ),
        window=IntSlider(value=window, min=1, max=max_window, description="smoothing"),
        log_scale=Checkbox(value=False, description="log scale"),
    )
