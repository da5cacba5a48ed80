#!/usr/bin/env python
"""Package a ShapesDataset training run as the model shipped in ``rcnn_lab/pretrained/``.

The recipe, run from the repository root (see ``rcnn_lab/pretrained/shapes_small.md`` for the
exact figures of the shipped file):

    rcnn-lab --threads 1 train --data shapes --model small ... --out runs/shapes
    python scripts/make_shapes_model.py --run-dir runs/shapes --command "<that command>" \
        --train-seconds <its wall time>

This script strips the run's ``best.pt`` (or ``last.pt``) of its training state into
``shapes_small.pt``, copies the run's ``metrics.jsonl`` beside it, evaluates the model on the
held-out test split for two dataset seeds with pycocotools, and writes the model card
``shapes_small.md`` (command, training time, checkpoint size, AP tables).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from rcnn_lab.data import ShapesDataset
from rcnn_lab.engine import evaluate, format_metrics
from rcnn_lab.pretrained import SHAPES_MODEL, SHAPES_MODEL_CARD, strip_checkpoint

ROOT = Path(__file__).resolve().parents[1]
#: Held-out test images per seed (the test split is never trained or validated on).
TEST_IMAGES = 500
#: Dataset seeds of the two held-out evaluations (training used seed 0's train split).
TEST_SEEDS = (0, 1)
METRICS = SHAPES_MODEL.with_name("shapes_small_metrics.jsonl")


def card(command: str, seconds: float, run: dict, results: dict[int, dict]) -> str:
    """The model card's Markdown text."""
    size_mb = SHAPES_MODEL.stat().st_size / 2**20
    lines = [
        "# The shipped ShapesDataset detector (`shapes_small.pt`)",
        "",
        "`fasterrcnn_small_fpn` (rcnn_lab's 1.8 M-parameter CPU model), trained from scratch on",
        "`ShapesDataset` (train split, seed 0) on a 2-core x86-64 CPU with nothing else running",
        "(the command sets the number of threads).",
        "",
        "## How it was made",
        "",
        "```bash",
        command,
        f"python scripts/make_shapes_model.py --run-dir {run['run_dir']} ...",
        "```",
        "",
        f"- training: {run['iterations']} iterations, {seconds / 60:.1f} min wall time",
        f"- checkpoint: `{run['source']}` of the run, stripped of optimiser state: "
        f"{size_mb:.1f} MiB",
        "",
    ]
    for seed, result in results.items():
        lines += [
            f"## Held-out test split, seed {seed} ({TEST_IMAGES} images)",
            "",
            "```text",
            format_metrics(result),
            "```",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--command", required=True, help="the exact training command")
    parser.add_argument("--train-seconds", type=float, required=True)
    parser.add_argument("--use", choices=["best", "last"], default="best")
    args = parser.parse_args(argv)
    source = args.run_dir / f"{args.use}.pt"
    strip_checkpoint(source, SHAPES_MODEL)
    shutil.copyfile(args.run_dir / "metrics.jsonl", METRICS)
    from rcnn_lab.pretrained import load_shapes_model

    torch.manual_seed(0)
    model = load_shapes_model()
    results = {
        seed: evaluate(
            model,
            ShapesDataset("test", size=TEST_IMAGES, seed=seed),
            batch_size=8,
            class_names=model.class_names,
            progress=False,
        )
        for seed in TEST_SEEDS
    }
    iterations = torch.load(SHAPES_MODEL, weights_only=True)["iteration"]
    run = {"run_dir": args.run_dir, "iterations": iterations, "source": source.name}
    SHAPES_MODEL_CARD.write_text(card(args.command, args.train_seconds, run, results))
    summary = {s: {k: round(r[k], 4) for k in ("ap", "ap50", "ap75")} for s, r in results.items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
