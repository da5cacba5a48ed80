"""Checks for bring-your-own annotations, with errors that say where and what went wrong.

Every problem names the file, the image id and what is wrong with it. A dataset built with
``skip_bad=False`` (the default) raises the first problem as an :class:`AnnotationError` (and says
how many more there are); with ``skip_bad=True`` it logs each one (``logging``, level WARNING,
logger ``rcnn_lab.data``) and leaves the affected images out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

logger = logging.getLogger("rcnn_lab.data")

#: Boxes may overshoot the image by this many pixels (annotation tools round); they are clamped.
BOX_TOLERANCE_PX = 1.0


class AnnotationError(ValueError):
    """A corrupt or inconsistent annotation or image.

    Attributes:
        file: the file at fault (annotation file, XML file or image file).
        image_id: the image's id (None for a problem with the whole file).
        problem: what is wrong, in words.
    """

    def __init__(self, file: str, image_id, problem: str):
        self.file, self.image_id, self.problem = str(file), image_id, problem
        where = f"{self.file}" if image_id is None else f"{self.file}: image id {image_id!r}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``file``, ``image_id`` (None: the whole file) and ``problem``."""

    file: str
    image_id: object
    problem: str

    def error(self) -> AnnotationError:
        """This problem as an exception."""
        return AnnotationError(self.file, self.image_id, self.problem)


def resolve(problems: list[Problem], skip_bad: bool) -> set:
    """Raise the first problem, or (``skip_bad``) log them all and return the bad image ids."""
    if not problems:
        return set()
    if not skip_bad:
        first = problems[0]
        more = len(problems) - 1
        note = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise AnnotationError(
            first.file, first.image_id, f"{first.problem}{note}; skip_bad=True skips such images"
        )
    for p in problems:
        logger.warning("skipping image: %s", p.error())
    return {p.image_id for p in problems}


def box_problem(x1, y1, x2, y2, width: int, height: int) -> str | None:
    """What is wrong with box (x1, y1, x2, y2) (pixels) in a W x H image, or None if nothing."""
    try:
        coords = [float(v) for v in (x1, y1, x2, y2)]
    except (TypeError, ValueError):
        return f"box {[x1, y1, x2, y2]} has a coordinate that is not a number"
    if not all(math.isfinite(v) for v in coords):
        return f"box {coords} has a coordinate that is not finite"
    x1, y1, x2, y2 = coords
    if x2 <= x1:
        return f"box {coords} has x2 <= x1"
    if y2 <= y1:
        return f"box {coords} has y2 <= y1"
    t = BOX_TOLERANCE_PX
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return f"box {coords} lies outside the {width}x{height} image"
    return None


def size_problem(width, height) -> str | None:
    """What is wrong with an annotated image size, or None."""
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height))
    return None if ok else f"image size must be two positive integers, got {width!r} x {height!r}"


def clamp_to_image(boxes: Tensor, height: int, width: int) -> Tensor:
    """[N, 4] (x1, y1, x2, y2) pixel boxes clamped to an H x W image by v2 (a plain tensor)."""
    boxes = tv_tensors.BoundingBoxes(
        boxes.as_subclass(Tensor).reshape(-1, 4), format="XYXY", canvas_size=(height, width)
    )
    return F.clamp_bounding_boxes(boxes).as_subclass(Tensor)
