#!/usr/bin/env python
"""Write the "you are here" strip of every chapter, book/images/stages/chXX.svg (XX = 00..15).

    python scripts/make_stage_strips.py          # (re)write the strips
    python scripts/make_stage_strips.py --check  # exit 1 if a committed strip is stale

Each strip is :func:`rcnn_lab.viz.pipeline.strip_svg` of its chapter: the stages of
``CHAPTER_STAGES[chapter]`` highlighted on the same stages as the architecture diagram of
chapter 0. The SVG is byte-for-byte reproducible (fixed hash salt, no date, text as paths), so
tests/test_viz_pipeline.py can check that the committed files are what this script writes now.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from rcnn_lab.viz.pipeline import CHAPTER_STAGES, strip_svg  # noqa: E402

STRIPS = Path(__file__).resolve().parents[1] / "book" / "images" / "stages"


def strip_path(folder: Path, chapter: int) -> Path:
    """Where the strip of ``chapter`` lives: ``folder/chXX.svg``."""
    return Path(folder) / f"ch{chapter:02d}.svg"


def write_strips(folder: Path = STRIPS) -> list[Path]:
    """Write the strip of every chapter into ``folder`` (created if needed); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for chapter in CHAPTER_STAGES:
        path = strip_path(folder, chapter)
        path.write_bytes(strip_svg(chapter).encode("utf-8"))  # bytes: no newline translation
        paths.append(path)
    return paths


def stale_strips(folder: Path = STRIPS) -> list[Path]:
    """The strips in ``folder`` that are missing or differ from what :func:`write_strips` writes."""
    stale = []
    for chapter in CHAPTER_STAGES:
        path = strip_path(folder, chapter)
        if not path.is_file() or path.read_bytes() != strip_svg(chapter).encode("utf-8"):
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line: write the strips (default) or ``--check`` them; ``--out`` picks the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STRIPS, help="folder of the strips")
    parser.add_argument("--check", action="store_true", help="only check, exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_strips(args.out)
        for path in stale:
            print(f"stale: {path.name} (run scripts/make_stage_strips.py)")
        return 1 if stale else 0
    for path in write_strips(args.out):
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
