"""Explorers that still work in the static book: a few settings drawn in advance.

An explorer (``ipywidgets.interact``) redraws its figure in a running kernel; in the published
HTML book nothing runs, so moving its sliders changes nothing. :func:`explorer_frames` calls
the explorer's own drawing function for a handful of settings while the chapter executes,
and returns HTML with one button per setting and the pre-drawn figures. Switching between them
needs only CSS (radio buttons and the ``:checked`` selector): no kernel, no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

#: Resolution multiplier of the pre-drawn PNGs, so they stay sharp on high-density screens.
PIXEL_RATIO = 1.5
#: The line shown above the settings.
NOTE = (
    "Pre-drawn settings of the explorer above: pick one. The sliders themselves need a running "
    "kernel: open this chapter in Jupyter or Colab (launch button at the top of the page)."
)

_ids = itertools.count()


def _drawing_function(explorer: Any) -> tuple[Callable[..., None], dict[str, Any]]:
    """The function an explorer redraws with, and its current (default) arguments."""
    widget = getattr(explorer, "widget", explorer)  # interact() returns f with f.widget
    function = getattr(widget, "f", None) or explorer
    if not callable(function):
        raise TypeError(f"explorer: expected an ipywidgets interact result, got {type(explorer)}")
    return function, dict(getattr(widget, "kwargs", {}))


def render_png(
    draw: Callable[[], None], image_format: str = "png", pixel_ratio: float = PIXEL_RATIO
) -> tuple[str, int]:
    """Run ``draw`` (which makes one figure and may call ``plt.show()``) and return the figure as
    a base64 image (``"png"``, or ``"jpeg"`` for photo-like figures, several times smaller) at
    ``pixel_ratio`` times its resolution, with its width in CSS pixels."""
    shown: list[plt.Figure] = []
    original_show = plt.show
    plt.show = lambda *args, **kwargs: shown.append(plt.gcf())  # keep the figure open
    try:
        draw()
    finally:
        plt.show = original_show
    figure = shown[-1] if shown else plt.gcf()
    try:
        return encode_figure(figure, image_format, pixel_ratio)
    finally:
        plt.close(figure)


def encode_figure(
    figure: Figure, image_format: str = "png", pixel_ratio: float = PIXEL_RATIO
) -> tuple[str, int]:
    """``figure`` as a base64 ``"png"`` or ``"jpeg"`` at ``pixel_ratio`` times its resolution,
    with its width in CSS pixels (the figure is left open)."""
    buffer = io.BytesIO()
    options = {"pil_kwargs": {"quality": 80}} if image_format == "jpeg" else {}
    figure.savefig(
        buffer,
        format=image_format,
        dpi=figure.dpi * pixel_ratio,
        bbox_inches="tight",
        **options,
    )
    width = int(round(figure.get_size_inches()[0] * figure.dpi))
    return base64.b64encode(buffer.getvalue()).decode("ascii"), width


def _label(setting: Mapping[str, Any]) -> str:
    """ "name=value" pairs of a setting, floats shortened."""
    parts = []
    for name, value in setting.items():
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


def frames_html(
    pngs: Sequence[tuple[str, int]],
    labels: Sequence[str],
    note: str = NOTE,
    image_format: str = "png",
) -> str:
    """The HTML of a frame switcher: radio buttons, their labels, the images, and the CSS."""
    if len(pngs) != len(labels) or not pngs:
        raise ValueError(f"expected one label per frame, got {len(labels)} for {len(pngs)}")
    box = f"rl-frames-{next(_ids)}"
    rules = [f"#{box} .rl-frame {{display: none; max-width: 100%; height: auto;}}"]
    rules += [
        f"#{box} input:nth-of-type({k}):checked ~ .rl-frame-set .rl-frame:nth-of-type({k}) "
        "{display: block;}"
        for k in range(1, len(pngs) + 1)
    ]
    rules.append(f"#{box} input:checked + label {{font-weight: bold; border-color: #555;}}")
    rules.append(
        f"#{box} label {{display: inline-block; margin: 2px 6px 2px 0; padding: 1px 6px; "
        "border: 1px solid #bbb; border-radius: 4px; cursor: pointer; font-size: 0.85em;}"
    )
    rules.append(
        f"#{box} input {{position: absolute; opacity: 0; width: 0; height: 0; margin: 0; "
        "pointer-events: none;}"
    )
    parts = [f'<div class="rl-frames" id="{box}">', f"<style>{' '.join(rules)}</style>"]
    parts.append(f'<p class="rl-frames-note">{html.escape(note)}</p>')
    for k, label in enumerate(labels):
        checked = " checked" if k == 0 else ""
        parts.append(f'<input type="radio" name="{box}" id="{box}-{k}"{checked}>')
        parts.append(f'<label for="{box}-{k}">{html.escape(label)}</label>')
    parts.append('<div class="rl-frame-set">')
    for (png, width), label in zip(pngs, labels):
        parts.append(
            f'<img class="rl-frame" width="{width}" alt="{html.escape(label)}" '
            f'src="data:image/{image_format};base64,{png}">'
        )
    parts.append("</div></div>")
    return "\n".join(parts)


def explorer_frames(
    explorer: Any,
    settings: Sequence[Mapping[str, Any]],
    *,
    image_format: str = "png",
    pixel_ratio: float = PIXEL_RATIO,
):
    """Pre-draw ``explorer`` at each setting, for readers of the static book.

    Args:
        explorer: what ``ipywidgets.interact`` returned (the drawing function with a
            ``.widget``), as the chapters' ``*_explorer`` helpers return it.
        settings: the arguments to change for each frame; the others keep the explorer's
            current values. Each frame's button is labelled with its changed arguments.
        image_format: ``"png"`` (line drawings) or ``"jpeg"`` (images, feature maps).
        pixel_ratio: resolution multiplier (sharp on high-density screens).

    Returns:
        An ``IPython.display.HTML`` object (display it, or leave it last in the cell).
    """
    from IPython.display import HTML

    function, defaults = _drawing_function(explorer)
    if not settings:
        raise ValueError("settings: expected at least one setting, got none")
    unknown = sorted({k for s in settings for k in s} - set(defaults)) if defaults else []
    if unknown:
        raise ValueError(f"settings: {unknown} are not arguments of the explorer {list(defaults)}")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format: expected 'png' or 'jpeg', got {image_format!r}")
    pngs = [
        render_png(lambda s=s: function(**{**defaults, **s}), image_format, pixel_ratio)
        for s in settings
    ]
    labels = [_label(s) for s in settings]
    return HTML(frames_html(pngs, labels, image_format=image_format))


def figure_frames(
    make_figure: Callable[..., Figure],
    settings: Sequence[Mapping[str, Any]],
    *,
    image_format: str = "png",
    pixel_ratio: float = PIXEL_RATIO,
):
    """Pre-draw an explorer that redraws a ``Figure`` itself (a widget box, not ``interact``).

    Args:
        make_figure: called as ``make_figure(**setting)``; returns the ``Figure`` the explorer
            would show at that setting (pyplot-free figures are fine: nothing is displayed).
        settings: the keyword arguments of each frame; the button shows them.
        image_format: ``"png"`` or ``"jpeg"``.
        pixel_ratio: resolution multiplier.

    Returns:
        An ``IPython.display.HTML`` frame switcher, as :func:`explorer_frames` returns.
    """
    from IPython.display import HTML

    if not settings:
        raise ValueError("settings: expected at least one setting, got none")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format: expected 'png' or 'jpeg', got {image_format!r}")
    pngs = []
    for setting in settings:
        figure = make_figure(**setting)
        if not isinstance(figure, Figure):
            raise TypeError(f"make_figure: expected a matplotlib Figure, got {type(figure)}")
        pngs.append(encode_figure(figure, image_format, pixel_ratio))
        plt.close(figure)
    labels = [_label(s) for s in settings]
    return HTML(frames_html(pngs, labels, image_format=image_format))
