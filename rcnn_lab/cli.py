"""The ``rcnn-lab`` command line: version, environment report, and (in later versions) training."""

from __future__ import annotations

import argparse
import platform
import sys

from rcnn_lab import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rcnn-lab``."""
    parser = argparse.ArgumentParser(
        prog="rcnn-lab",
        description="Faster R-CNN from scratch in plain PyTorch, proven equal to torchvision.",
    )
    parser.add_argument("--version", action="version", version=f"rcnn-lab {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print the versions of rcnn_lab, torch, torchvision and Python")
    return parser


def info() -> str:
    """A short report of the installed versions and the available devices."""
    import torch
    import torchvision

    lines = [
        f"rcnn_lab    {__version__}",
        f"torch       {torch.__version__}",
        f"torchvision {torchvision.__version__}",
        f"python      {platform.python_version()}",
        f"cuda        {'available' if torch.cuda.is_available() else 'not available'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rcnn-lab``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        sys.stdout.write(info() + "\n")
        return 0
    parser.print_help()
    return 0
