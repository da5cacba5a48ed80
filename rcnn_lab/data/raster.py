"""Exact, machine-independent rasterisation of filled shapes for :class:`ShapesDataset`.

A shape is drawn on a supersampled grid (``SUPERSAMPLE`` x ``SUPERSAMPLE`` sample points per
pixel) with nothing but ``+ - * /``, ``sqrt``, ``floor`` and comparisons, which IEEE 754 rounds
the same way on every CPU. Rotations never call ``sin``/``cos`` on pixels: they come from a
whole-degree table whose entries are rounded to a 2**-20 grid, far coarser than the last-bit
differences between C maths libraries. So a scene is bit-identical on any machine.

Coordinates are continuous pixels: pixel (row i, column j) covers [j, j + 1) x [i, i + 1).

Shapes: H x W image pixels, h x w pixels of a window, S = ``SUPERSAMPLE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Sample points per pixel side; a pixel's coverage is a multiple of 1 / S**2.
SUPERSAMPLE = 2
# table entries snap to multiples of 2**-20: libm results differ in the 16th digit at most,
# far from the 7th where a multiple of 2**-20 could round the other way (a test checks the margin)
TRIG_GRID = 2**20


def _snap(value: float) -> float:
    """``value`` rounded to the nearest multiple of ``1 / TRIG_GRID``."""
    return round(value * TRIG_GRID) / TRIG_GRID


#: cos and sin of whole degrees 0..359, snapped to the 2**-20 grid.
COS = tuple(_snap(math.cos(math.radians(d))) for d in range(360))
SIN = tuple(_snap(math.sin(math.radians(d))) for d in range(360))


@dataclass(frozen=True)
class Window:
    """The pixel rectangle [x0, x1) x [y0, y1) in which a shape is rasterised."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of this window in a supersampled [H*S, W*S] array."""
        s = SUPERSAMPLE
        return slice(self.y0 * s, self.y1 * s), slice(self.x0 * s, self.x1 * s)

    def sample_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Sample-point centres: xs [1, w*S] and ys [h*S, 1] in pixels (float64)."""
        s = SUPERSAMPLE
        xs = (np.arange(self.x0 * s, self.x1 * s, dtype=np.float64) + 0.5) / s
        ys = (np.arange(self.y0 * s, self.y1 * s, dtype=np.float64) + 0.5) / s
        return xs[None, :], ys[:, None]


def window_of(xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int):
    """The smallest pixel window holding the extent, clipped to a W x H image (None if empty)."""
    x0, y0 = max(int(math.floor(xmin)), 0), max(int(math.floor(ymin)), 0)
    x1, y1 = min(int(math.ceil(xmax)), width), min(int(math.ceil(ymax)), height)
    return Window(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def rotate(points: list[tuple[float, float]], degrees: int) -> list[tuple[float, float]]:
    """Rotate (x, y) offsets by a whole number of degrees (y points down, so clockwise)."""
    c, s = COS[degrees % 360], SIN[degrees % 360]
    return [(x * c - y * s, x * s + y * c) for x, y in points]


def convex_mask(xs: np.ndarray, ys: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """Sample points inside a convex polygon (boundary included), bool [len(ys), len(xs)].

    Args:
        xs: [1, w] sample x coordinates in pixels; ys: [h, 1] sample y coordinates.
        vertices: the polygon's corners in pixels, in order (either orientation).
    """
    n = len(vertices)
    doubled_area = sum(
        vertices[i][0] * vertices[(i + 1) % n][1] - vertices[(i + 1) % n][0] * vertices[i][1]
        for i in range(n)
    )
    sign = 1.0 if doubled_area > 0 else -1.0
    inside = np.ones((ys.shape[0], xs.shape[1]), dtype=bool)
    for i in range(n):
        (px, py), (qx, qy) = vertices[i], vertices[(i + 1) % n]
        ex, ey = sign * (qx - px), sign * (qy - py)
        # inner side of the edge: cross(edge, point - start) >= 0, split into a column term
        # [h, 1] and a row term [1, w] so that only the comparison is done on the full grid
        inside &= ex * ys >= ey * xs + (ex * py - ey * px)
    return inside


def polygons_mask(window: Window, polygons) -> np.ndarray:
    """Union of convex polygons (vertices in pixels) on a window's samples, bool [h*S, w*S].

    Each polygon is rasterised only on the samples of its own bounding box: a star's kites or a
    word's strokes each cover a small part of the whole window.
    """
    s = SUPERSAMPLE
    xs, ys = window.sample_points()
    mask = np.zeros((ys.shape[0], xs.shape[1]), dtype=bool)
    for polygon in polygons:
        px, py = [x for x, _ in polygon], [y for _, y in polygon]
        # sample k of the window sits at window.x0 + (k + 0.5) / S: keep the samples in the box
        c0 = max(int(math.floor((min(px) - window.x0) * s - 0.5)), 0)
        c1 = min(int(math.ceil((max(px) - window.x0) * s - 0.5)) + 1, xs.shape[1])
        r0 = max(int(math.floor((min(py) - window.y0) * s - 0.5)), 0)
        r1 = min(int(math.ceil((max(py) - window.y0) * s - 0.5)) + 1, ys.shape[0])
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] |= convex_mask(xs[:, c0:c1], ys[r0:r1], polygon)
    return mask


def ellipse_mask(
    xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, rx: float, ry: float, degrees: int
):
    """Sample points inside an ellipse of semi-axes rx, ry rotated by ``degrees``, bool [h, w]."""
    c, s = COS[degrees % 360], SIN[degrees % 360]
    dx, dy = xs - cx, ys - cy
    u = (dx * c + dy * s) / rx  # along the rotated x axis, in semi-axes
    v = (dy * c - dx * s) / ry
    return u * u + v * v <= 1.0


def ellipse_half_extent(rx: float, ry: float, degrees: int) -> tuple[float, float]:
    """Half width and half height of the axis-aligned box around a rotated ellipse."""
    c, s = COS[degrees % 360], SIN[degrees % 360]
    return math.sqrt((rx * c) ** 2 + (ry * s) ** 2), math.sqrt((rx * s) ** 2 + (ry * c) ** 2)


def coverage(mask: np.ndarray) -> np.ndarray:
    """Fraction of each pixel's sample points set in a supersampled mask, float32 [h, w]."""
    s = SUPERSAMPLE
    counts = np.zeros((mask.shape[0] // s, mask.shape[1] // s), dtype=np.uint8)
    for dy in range(s):  # add the S*S sample sub-grids: exact small integers
        for dx in range(s):
            counts += mask[dy::s, dx::s]
    return counts.astype(np.float32) * np.float32(1.0 / (s * s))


def paint(image: np.ndarray, window: Window, mask: np.ndarray, colour: np.ndarray) -> None:
    """Blend ``colour`` [3] into ``image`` [3, H, W] with the mask's coverage as alpha, in place."""
    alpha = coverage(mask)  # [h, w]
    region = image[:, window.y0 : window.y1, window.x0 : window.x1]  # [3, h, w], a view
    region *= np.float32(1.0) - alpha
    region += alpha * colour.astype(np.float32)[:, None, None]
