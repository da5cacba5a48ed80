"""Everything in a ShapesDataset scene that is NOT an object: textured backgrounds and clutter.

Backgrounds blend two colours c1, c2 through a texture t in [0, 1] (smooth noise, a linear
gradient, stripes or a checkerboard). Clutter is drawn on the background, under the objects:
thin line segments, small blobs (at most ``BLOB_MAX_FRACTION`` of the image side, well below the
smallest object) and rows of short strokes that look like text. A detector must learn to ignore
all of it. Drawing uses only the exact arithmetic of :mod:`rcnn_lab.data.raster`.

Shapes: H x W image pixels; images are [H, W, 3] float32 in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

from rcnn_lab.data.raster import COS, SIN, ellipse_mask, paint, polygons_mask, window_of

#: Background textures, in the order the generator draws them.
BACKGROUNDS = ("noise", "gradient", "stripes", "checker")
#: Largest per-channel step between a background's two colours (keeps textures calm).
BACKGROUND_CONTRAST = 0.35
#: Clutter blobs have diameters from 1.5% to 4% of the image side (objects start at 8%).
BLOB_MIN_FRACTION, BLOB_MAX_FRACTION = 0.015, 0.04
#: At most this many line segments, blobs and text-like words per image.
MAX_LINES, MAX_BLOBS, MAX_WORDS = 5, 5, 2
# a glyph of a text-like word is 2 strokes out of these, on a unit cell (x right, y down)
_GLYPH_STROKES = (
    ((0.0, 0.0), (0.0, 1.0)),
    ((1.0, 0.0), (1.0, 1.0)),
    ((0.0, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (1.0, 0.5)),
    ((0.0, 1.0), (1.0, 1.0)),
    ((0.0, 1.0), (1.0, 0.0)),
    ((0.5, 0.0), (0.5, 1.0)),
)


def _value_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth noise in [0, 1], float32 [H, W]: a coarse random grid, bilinearly interpolated."""
    cells = int(rng.integers(2, 7))
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)

    def cell_and_fraction(n: int):
        g = (np.arange(n, dtype=np.float32) + 0.5) * np.float32(cells / n)
        i = np.minimum(g.astype(np.int64), cells - 1)
        return i, g - i

    iy, fy = cell_and_fraction(height)
    ix, fx = cell_and_fraction(width)
    rows = grid[iy] * (1 - fy)[:, None] + grid[iy + 1] * fy[:, None]  # [H, cells + 1]
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx  # [H, W]


def _parity(values: np.ndarray) -> np.ndarray:
    """floor(values) mod 2 as float32 0/1 (exact: an integer's lowest bit)."""
    return (np.floor(values).astype(np.int32) & 1).astype(np.float32)


def _texture(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    """The blend weight t in [0, 1] of a background kind, float32 [H, W]."""
    if kind == "noise":
        return _value_noise(rng, height, width)
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :] - np.float32(width / 2)
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None] - np.float32(height / 2)
    degrees = int(rng.integers(360))
    c, s = np.float32(COS[degrees]), np.float32(SIN[degrees])
    along = xs * c + ys * s  # [H, W], distance along the texture's direction
    if kind == "gradient":
        return np.clip(along / np.float32(max(height, width)) + np.float32(0.5), 0.0, 1.0)
    if kind == "stripes":
        return _parity(along / np.float32(rng.uniform(3.0, 10.0)))  # divided by half a period
    cell = np.float32(rng.uniform(8.0, 24.0))  # checker, in the rotated frame
    return np.abs(_parity(along / cell) - _parity((ys * c - xs * s) / cell))


def background(rng: np.random.Generator, height: int, width: int):
    """A textured background.

    Returns:
        (image [3, H, W] float32 in [0, 1], its two colours c1, c2 (each [3] float64), kind name).
    """
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    c1 = rng.random(3)
    c2 = np.clip(c1 + rng.uniform(-BACKGROUND_CONTRAST, BACKGROUND_CONTRAST, 3), 0.0, 1.0)
    t = _texture(rng, kind, height, width).astype(np.float32)  # [H, W]
    image = np.empty((3, height, width), dtype=np.float32)
    for k in range(3):  # channel planes: contiguous rows, fast broadcasting
        image[k] = np.float32(c1[k]) * (1 - t) + np.float32(c2[k]) * t
    return image, (c1, c2), kind


def segment_polygon(x0: float, y0: float, x1: float, y1: float, thickness: float):
    """The four corners of a segment drawn as a thin rectangle of ``thickness`` pixels."""
    length = math.sqrt((x1 - x0) ** 2 + (y1 - y0) ** 2) or 1.0
    nx, ny = -(y1 - y0) / length * thickness / 2, (x1 - x0) / length * thickness / 2
    return [(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)]


def _draw_polygons(image: np.ndarray, polygons: list, colour: np.ndarray) -> None:
    """Fill the union of convex polygons (pixels) into ``image`` [3, H, W], clipped to it."""
    height, width = image.shape[1:]
    xs_ = [x for p in polygons for x, _ in p]
    ys_ = [y for p in polygons for _, y in p]
    window = window_of(min(xs_), min(ys_), max(xs_), max(ys_), width, height)
    if window is None:
        return
    paint(image, window, polygons_mask(window, polygons), colour)


def _draw_line(rng: np.random.Generator, image: np.ndarray) -> None:
    """One thin segment, 10%..60% of the image side long, 0.75..2 px thick."""
    height, width = image.shape[1:]
    side = min(height, width)
    x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
    degrees, length = int(rng.integers(360)), side * rng.uniform(0.1, 0.6)
    x1, y1 = x0 + length * COS[degrees], y0 + length * SIN[degrees]
    _draw_polygons(image, [segment_polygon(x0, y0, x1, y1, rng.uniform(0.75, 2.0))], rng.random(3))


def _draw_blob(rng: np.random.Generator, image: np.ndarray) -> None:
    """One small filled ellipse, far smaller than any object."""
    height, width = image.shape[1:]
    side = min(height, width)
    rx = side * rng.uniform(BLOB_MIN_FRACTION, BLOB_MAX_FRACTION) / 2
    ry = rx / rng.uniform(1.0, 1.5)
    cx, cy, degrees = rng.uniform(0, width), rng.uniform(0, height), int(rng.integers(180))
    window = window_of(cx - rx, cy - rx, cx + rx, cy + rx, width, height)
    if window is not None:
        xs, ys = window.sample_points()
        paint(image, window, ellipse_mask(xs, ys, cx, cy, rx, ry, degrees), rng.random(3))


def _draw_word(rng: np.random.Generator, image: np.ndarray) -> None:
    """A row of 3..7 glyphs of 2 one-pixel strokes each, 5..9 px tall: text-like clutter."""
    height, width = image.shape[1:]
    glyph_h = rng.uniform(5.0, 9.0)
    glyph_w = 0.6 * glyph_h
    x, y = rng.uniform(0, width - glyph_w), rng.uniform(0, height - glyph_h)
    colour, strokes = rng.random(3), []
    for _ in range(int(rng.integers(3, 8))):
        for k in rng.choice(len(_GLYPH_STROKES), size=2, replace=False):
            (u0, v0), (u1, v1) = _GLYPH_STROKES[int(k)]
            strokes.append(
                segment_polygon(
                    x + u0 * glyph_w, y + v0 * glyph_h, x + u1 * glyph_w, y + v1 * glyph_h, 1.0
                )
            )
        x += 1.5 * glyph_w
    _draw_polygons(image, strokes, colour)


def draw_clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Draw up to MAX_LINES lines, MAX_BLOBS blobs and MAX_WORDS words into ``image``, in place."""
    for _ in range(int(rng.integers(MAX_LINES + 1))):
        _draw_line(rng, image)
    for _ in range(int(rng.integers(MAX_BLOBS + 1))):
        _draw_blob(rng, image)
    for _ in range(int(rng.integers(MAX_WORDS + 1))):
        _draw_word(rng, image)
