"""One ShapesDataset scene: a textured background, clutter, then 0..8 shapes that may overlap.

Generation rules (the numbers are the module constants below):

- Classes (``CLASSES``): circle, ellipse, square, diamond, triangle, star. Two pairs differ only in
  detail: a circle is round, an ellipse is 1.6..2.4 times longer than wide; a square sits within
  +-12 degrees of upright, a diamond stands on a corner (its diagonals within +-12 degrees of the
  axes, one 1..1.5 times the other). Triangles (isosceles, base 0.9..1.3 x height) and five-point
  stars (inner radius 0.38..0.5 of the outer) take any rotation.
- Size s (circle/ellipse/star: outer diameter; square: side; diamond: long diagonal; triangle:
  height) is ``MIN_SIZE_FRACTION`` .. ``MAX_SIZE_FRACTION`` of the image's shorter side, drawn as
  lo + (hi - lo) u**1.5 with u uniform (median 0.26 of the side), so small objects are
  frequent and large ones occur. A shape that must be moved shrinks, but never below lo.
- The object count is uniform in 0..``MAX_OBJECTS`` (one image in nine is empty; the first
  object always fits). Objects lie wholly inside the image and are drawn in order, each later
  one on top. Clutter (lines, blobs, text-like strokes) lies under all objects.
- Occlusion rule: a shape is placed only where it leaves every earlier object at least
  ``MIN_VISIBLE_FRACTION`` visible; otherwise it is tried again elsewhere and a little smaller,
  ``PLACEMENT_TRIES`` times, and then dropped. So every object in the targets is >= 60% visible.
- Colours are random but at least ``MIN_COLOUR_DISTANCE`` (RGB distance) from the background's
  colours and from the objects around it, so that a shape never melts into its surroundings.
- Boxes are tight around the VISIBLE part of each object (after occlusion), at half-pixel
  resolution; ``area`` is the visible area in square pixels.

Shapes: N objects; H x W pixels; S = ``SUPERSAMPLE`` sample points per pixel side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rcnn_lab.data.backdrop import background, draw_clutter
from rcnn_lab.data.raster import (
    COS,
    SIN,
    SUPERSAMPLE,
    ellipse_half_extent,
    ellipse_mask,
    paint,
    polygons_mask,
    rotate,
    window_of,
)

#: Class names; index 0 is the background, as torchvision's detectors expect.
CLASSES = ("__background__", "circle", "ellipse", "square", "diamond", "triangle", "star")
#: Object sizes as fractions of the image's shorter side.
MIN_SIZE_FRACTION, MAX_SIZE_FRACTION = 0.08, 0.60
#: Most objects in one image.
MAX_OBJECTS = 8
#: Every object keeps at least this fraction of its area visible.
MIN_VISIBLE_FRACTION = 0.6
#: Placement attempts per object; each retry shrinks it by ``SHRINK_PER_TRY``.
PLACEMENT_TRIES, SHRINK_PER_TRY = 12, 0.92
#: Least RGB distance between an object's colour and its surroundings; colours tried for it.
MIN_COLOUR_DISTANCE, COLOUR_TRIES = 0.35, 32
#: Amplitude of the uniform grey noise added to every pixel of the finished image.
PIXEL_NOISE = 0.03
#: Objects keep this many pixels from the image border.
MARGIN = 1.0
# a square stays within +-12 degrees of upright and a diamond within +-12 degrees of standing on
# a corner: the edges of a square and of an equal-diagonal diamond still differ by >= 45 - 2 * 12
# = 21 degrees, and a longer diamond has no right angle at all
UPRIGHT_TOLERANCE_DEGREES = 12


@dataclass(frozen=True)
class Shape:
    """A shape's geometry around its centre, in pixels: convex pieces, or an ellipse if none."""

    label: int
    pieces: tuple = ()  # tuple of convex polygons, each a tuple of (dx, dy) offsets
    radii: tuple = (0.0, 0.0)  # ellipse semi-axes (rx, ry) when ``pieces`` is empty
    degrees: int = 0  # ellipse rotation (polygons are stored already rotated)

    def scaled(self, factor: float) -> Shape:
        """The same shape, ``factor`` times as large."""
        pieces = tuple(tuple((x * factor, y * factor) for x, y in p) for p in self.pieces)
        radii = (self.radii[0] * factor, self.radii[1] * factor)
        return Shape(self.label, pieces, radii, self.degrees)

    def extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) offsets of the axis-aligned box around the shape, from its centre."""
        if not self.pieces:
            hx, hy = ellipse_half_extent(*self.radii, self.degrees)
            return -hx, -hy, hx, hy
        xs = [x for p in self.pieces for x, _ in p]
        ys = [y for p in self.pieces for _, y in p]
        return min(xs), min(ys), max(xs), max(ys)

    def mask(self, cx: float, cy: float, width: int, height: int):
        """Rasterise at centre (cx, cy): (window, bool mask [h*S, w*S]); window None if outside."""
        x0, y0, x1, y1 = self.extent()
        window = window_of(cx + x0, cy + y0, cx + x1, cy + y1, width, height)
        if window is None:
            return None, None
        if not self.pieces:
            xs, ys = window.sample_points()
            return window, ellipse_mask(xs, ys, cx, cy, *self.radii, self.degrees)
        pieces = [[(cx + x, cy + y) for x, y in piece] for piece in self.pieces]
        return window, polygons_mask(window, pieces)


def _upright(rng: np.random.Generator) -> int:
    return int(rng.integers(-UPRIGHT_TOLERANCE_DEGREES, UPRIGHT_TOLERANCE_DEGREES + 1))


def _make_shape(rng: np.random.Generator, label: int, r: float) -> Shape:
    """A random shape of class ``label`` and half-size ``r`` pixels (see the module rules)."""
    name = CLASSES[label]
    if name == "circle":
        return Shape(label, radii=(r, r))
    if name == "ellipse":
        aspect = 1.6 + 0.8 * rng.random()
        return Shape(label, radii=(r, r / aspect), degrees=int(rng.integers(180)))
    if name == "square":
        corners = [(-r, -r), (r, -r), (r, r), (-r, r)]
        return Shape(label, (tuple(rotate(corners, _upright(rng))),))
    if name == "diamond":
        rx, ry = r / (1.0 + 0.5 * rng.random()), r
        if rng.random() < 0.5:
            rx, ry = ry, rx
        corners = [(0.0, -ry), (rx, 0.0), (0.0, ry), (-rx, 0.0)]
        return Shape(label, (tuple(rotate(corners, _upright(rng))),))
    if name == "triangle":
        half_base = r * (0.9 + 0.4 * rng.random())
        corners = [(0.0, -r), (half_base, r), (-half_base, r)]
        return Shape(label, (tuple(rotate(corners, int(rng.integers(360)))),))
    if name == "star":  # five convex kites: centre, inner corner, tip, next inner corner
        inner, start = r * (0.38 + 0.12 * rng.random()), 270 + int(rng.integers(72))
        tips = [
            (r * COS[(start + 72 * k) % 360], r * SIN[(start + 72 * k) % 360]) for k in range(5)
        ]
        dents = [
            (inner * COS[(start + 72 * k + 36) % 360], inner * SIN[(start + 72 * k + 36) % 360])
            for k in range(5)
        ]
        kites = tuple(((0.0, 0.0), dents[k - 1], tips[k], dents[k]) for k in range(5))
        return Shape(label, kites)
    raise ValueError(f"unknown shape class {label}")


@dataclass
class Scene:
    """A rendered scene and its ground truth (all boxes x1, y1, x2, y2 in pixels)."""

    image: np.ndarray  # [3, H, W] float32 in [0, 1]
    boxes: np.ndarray  # [N, 4] float32, tight around the visible part
    labels: np.ndarray  # [N] int64 in 1..len(CLASSES) - 1
    areas: np.ndarray  # [N] float32 visible area, square pixels
    full_boxes: np.ndarray  # [N, 4] float32, tight around the whole object (as if unoccluded)
    visible_fractions: np.ndarray  # [N] float32 in [MIN_VISIBLE_FRACTION, 1]
    background: str  # the background texture's name


def _place(rng, shape: Shape, smallest: float, owner, full: list, visible: list, width, height):
    """Find a spot where ``shape`` hides no earlier object beyond the occlusion rule, or None.

    Each failed attempt shrinks the shape by ``SHRINK_PER_TRY``, never below ``smallest`` times
    its size. ``owner`` [H*S, W*S] holds the index of the object seen at each sample (-1: none);
    ``full`` and ``visible`` count each earlier object's samples.
    """
    factor = 1.0
    for _ in range(PLACEMENT_TRIES):
        candidate = shape.scaled(factor)
        factor = max(factor * SHRINK_PER_TRY, smallest)  # products, not powers: exact anywhere
        x0, y0, x1, y1 = candidate.extent()
        if x1 - x0 > width - 2 * MARGIN or y1 - y0 > height - 2 * MARGIN:
            continue
        cx = rng.uniform(MARGIN - x0, width - MARGIN - x1)
        cy = rng.uniform(MARGIN - y0, height - MARGIN - y1)
        window, mask = candidate.mask(cx, cy, width, height)
        under = owner[window.slices][mask]  # owners of the samples it would cover
        lost = np.bincount(under[under >= 0], minlength=len(full))  # [objects so far]
        if all(v - n >= MIN_VISIBLE_FRACTION * f for v, n, f in zip(visible, lost, full)):
            return window, mask, lost
    return None


def _distance(a, b) -> float:
    """Euclidean RGB distance, summed in a fixed order (bit-identical everywhere)."""
    return float(np.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2))


def _distance_to_segment(p, c1, c2) -> float:
    """RGB distance from colour p to the nearest blend of c1 and c2."""
    d = [c2[i] - c1[i] for i in range(3)]
    dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    t = 0.0 if dd == 0 else sum((p[i] - c1[i]) * d[i] for i in range(3)) / dd
    t = min(max(t, 0.0), 1.0)
    return _distance(p, [c1[i] + t * d[i] for i in range(3)])


def _pick_colour(rng, background_colours, neighbour_colours) -> np.ndarray:
    """The most distinct of up to ``COLOUR_TRIES`` random colours (the first clear one wins)."""
    best, best_distance = None, -1.0
    for _ in range(COLOUR_TRIES):
        colour = rng.random(3)
        distance = min(
            [_distance_to_segment(colour, *background_colours)]
            + [_distance(colour, c) for c in neighbour_colours]
        )
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= MIN_COLOUR_DISTANCE:
            break
    return best


def _extent_box(window, mask: np.ndarray) -> list[float]:
    """Box (pixels) around the set samples of a window's mask, at sample-cell resolution."""
    s = SUPERSAMPLE
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [
        (window.x0 * s + cols[0]) / s,
        (window.y0 * s + rows[0]) / s,
        (window.x0 * s + cols[-1] + 1) / s,
        (window.y0 * s + rows[-1] + 1) / s,
    ]


def render_scene(
    rng: np.random.Generator, height: int, width: int, max_objects: int = MAX_OBJECTS
) -> Scene:
    """Draw one scene from ``rng`` (see the module docstring for the rules)."""
    image, background_colours, kind = background(rng, height, width)
    draw_clutter(rng, image)
    side = min(height, width)
    owner = np.full((height * SUPERSAMPLE, width * SUPERSAMPLE), -1, dtype=np.int16)
    full, visible, placed, colours = [], [], [], []
    for _ in range(int(rng.integers(max_objects + 1))):
        label = int(rng.integers(1, len(CLASSES)))
        u = rng.random()
        fraction = MIN_SIZE_FRACTION + (MAX_SIZE_FRACTION - MIN_SIZE_FRACTION) * u * np.sqrt(u)
        shape = _make_shape(rng, label, side * fraction / 2)
        smallest = MIN_SIZE_FRACTION / fraction
        found = _place(rng, shape, smallest, owner, full, visible, width, height)
        if found is None:
            continue
        window, mask, lost = found
        region = owner[window.slices]  # a view: writing it marks the new owner
        neighbours = np.flatnonzero(np.bincount(region[region >= 0], minlength=len(placed)))
        colour = _pick_colour(rng, background_colours, [colours[j] for j in neighbours])
        paint(image, window, mask, colour)
        region[mask] = len(placed)
        visible = [v - n for v, n in zip(visible, lost)]
        full.append(int(mask.sum()))
        visible.append(full[-1])
        placed.append((label, window, _extent_box(window, mask)))
        colours.append(colour)
    noise = rng.random((1, height, width), dtype=np.float32)  # grey grain, [1, H, W] in [0, 1)
    image += (noise - np.float32(0.5)) * np.float32(2 * PIXEL_NOISE)
    np.clip(image, 0.0, 1.0, out=image)
    boxes = [_extent_box(w, owner[w.slices] == k) for k, (_, w, _) in enumerate(placed)]
    return Scene(
        image=image,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray([label for label, _, _ in placed], dtype=np.int64),
        areas=np.asarray(visible, dtype=np.float32) / np.float32(SUPERSAMPLE**2),
        full_boxes=np.asarray([b for _, _, b in placed], dtype=np.float32).reshape(-1, 4),
        visible_fractions=np.asarray([v / f for v, f in zip(visible, full)], dtype=np.float32),
        background=kind,
    )
