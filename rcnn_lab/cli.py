"""The ``rcnn-lab`` command line (also ``python -m rcnn_lab``).

Subcommands: ``info``, ``train`` (one process, or several under ``torchrun``), ``evaluate``,
``predict``, ``export-shapes`` and ``demo``; ``rcnn-lab <command> --help`` lists the options.
Bad input (a missing file, a bad config, an unknown class name) ends the program with exit
status 1 (2 for a bad option) and one line on stderr, without a traceback; ``--traceback``
shows it.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from pathlib import Path

from rcnn_lab import __version__

#: ``--model`` names (``small`` is rcnn_lab's CPU model, the others torchvision's builders).
MODEL_CHOICES = {
    "small": "fasterrcnn_small_fpn",
    "fasterrcnn_resnet50_fpn": "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2": "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn": "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "fasterrcnn_mobilenet_v3_large_320_fpn",
}
#: Where the shipped ShapesDataset model lives inside the package.
SHIPPED_MODEL = Path(__file__).resolve().parent / "pretrained" / "shapes_small.pt"

TRAIN_EXAMPLES = """examples:
  rcnn-lab --threads 1 train --iterations 3000 --out runs/shapes
  rcnn-lab train --resume runs/shapes/last.pt
  rcnn-lab train --coco ann.json --images imgs/ --val-coco val.json --val-images imgs/ --epochs 12
  torchrun --nproc_per_node=2 -m rcnn_lab train --iterations 3000 --device cuda --amp bf16
"""


class UsageError(ValueError):
    """Bad command-line input, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_data_options(parser: argparse.ArgumentParser, shapes_split: str | None) -> None:
    group = parser.add_argument_group("data (ShapesDataset unless --coco or --voc)")
    group.add_argument("--data", choices=["shapes"], default="shapes", help="built-in data")
    group.add_argument("--coco", metavar="ANN_JSON", help="COCO annotation file")
    group.add_argument("--images", metavar="DIR", help="image folder of --coco")
    group.add_argument("--voc", metavar="ROOT", help="folder holding VOCdevkit/")
    group.add_argument("--voc-year", default="2012", help="VOC year (default 2012)")
    group.add_argument("--image-size", type=int, default=160, help="shapes: pixels (160)")
    group.add_argument("--data-seed", type=int, default=0, help="shapes: dataset seed (0)")
    if shapes_split:  # evaluate: one split
        group.add_argument("--split", default=shapes_split, help=f"split ({shapes_split})")
        group.add_argument("--size", type=int, default=500, help="shapes: images (500)")


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a detector",
        description="Train a detector; writes metrics.jsonl, config.json, last.pt and best.pt.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_options(p, None)
    p.add_argument("--train-size", type=int, default=2000, help="shapes: train images (2000)")
    p.add_argument("--val-size", type=int, default=200, help="shapes: val images (200; 0: none)")
    p.add_argument("--val-coco", metavar="ANN_JSON", help="COCO validation annotations")
    p.add_argument("--val-images", metavar="DIR", help="image folder of --val-coco")
    p.add_argument("--no-augment", action="store_true", help="no flips, scaling, colour")
    p.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="small",
        metavar="NAME",
        help=f"architecture: {', '.join(MODEL_CHOICES)} (small; no pretrained weights)",
    )
    p.add_argument("--model-kwargs", metavar="JSON", default="{}", help="builder keywords")
    p.add_argument("--config", metavar="JSON_FILE", help="TrainConfig fields (options override)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int)
    length.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int, help="images per iteration and process (8)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, help="peak learning rate (0.02)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-iters", type=int)
    p.add_argument("--schedule", choices=["cosine", "multistep"])
    p.add_argument("--milestones", type=int, nargs="+", help="multistep iterations")
    p.add_argument("--clip-grad-norm", type=float)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="autocast (none)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", dest="out_dir", help="output folder (runs/train)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from this last.pt")
    p.add_argument("--stop-after", type=int, help="end this run after this many iterations")
    for name in ("eval-every", "checkpoint-every", "log-every", "eval-batch-size"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--seed", type=int, help="random seed (0)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rcnn-lab`` and its subcommands."""
    parser = _Parser(
        prog="rcnn-lab",
        description="Faster R-CNN from scratch in plain PyTorch, proven equal to torchvision.",
    )
    parser.add_argument("--version", action="version", version=f"rcnn-lab {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (1 is fastest on a busy or small CPU)"
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("info", help="print the versions of rcnn_lab, torch, torchvision and Python")
    _add_train_parser(sub)

    p = sub.add_parser("evaluate", help="COCO metrics of a checkpoint on a dataset")
    p.add_argument("checkpoint", help="a .pt written by rcnn-lab train")
    _add_data_options(p, "val")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="default: cuda if available")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("predict", help="draw and list a checkpoint's detections on images")
    p.add_argument("checkpoint", help="a .pt written by rcnn-lab train")
    p.add_argument("images", nargs="+", help="image files")
    _add_output_options(p, "predictions")

    p = sub.add_parser("export-shapes", help="write a ShapesDataset split as COCO JSON + PNGs")
    p.add_argument("out_dir", help="folder to write images/ and annotations.json into")
    p.add_argument("--split", choices=["train", "val", "test"], default="val")
    p.add_argument("--size", type=int, default=100, help="images (100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=160)

    p = sub.add_parser("demo", help="the shipped model on generated scenes, as a picture")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="scene seed (0)")
    _add_output_options(p, "demo")
    return parser


def _add_output_options(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--out", default=out, help=f"output folder ({out}/)")
    p.add_argument("--score-thresh", type=float, default=0.5, help="lowest score drawn (0.5)")
    p.add_argument("--classes", help="comma-separated class names to keep (default: all)")
    p.add_argument("--device", help="default: cuda if available")


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
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "info":
        sys.stdout.write(info() + "\n")
        return 0
    import torch

    try:
        from rcnn_lab import cli_commands
        from rcnn_lab.engine import NonFiniteLossError
    except ModuleNotFoundError as e:  # the core install lacks the data extra
        sys.stderr.write(
            f"rcnn-lab {args.command}: error: {e.name} is not installed; "
            "install the data extra: pip install 'rcnn-lab[data]'\n"
        )
        return 1

    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return cli_commands.COMMANDS[args.command](args)
    except (ValueError, OSError, NonFiniteLossError) as e:
        if args.traceback:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"rcnn-lab {args.command}: error: {message}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"rcnn-lab {args.command}: interrupted\n")
        return 130
