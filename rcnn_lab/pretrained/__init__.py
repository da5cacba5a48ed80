"""The detector rcnn_lab trained on its own ShapesDataset, shipped inside the package.

``shapes_small.pt`` holds the weights of :func:`~rcnn_lab.builders.fasterrcnn_small_fpn` (7
classes: the background and six shapes), trained from scratch on a CPU; ``shapes_small.md``
beside it gives the exact command that produced it and its evaluation on held-out scenes.
No download is involved: it loads offline, in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: The shipped checkpoint (model weights, architecture, class names; no optimiser state).
SHAPES_MODEL = Path(__file__).with_name("shapes_small.pt")
#: How ``SHAPES_MODEL`` was made (command, timing) and how well it detects (AP tables).
SHAPES_MODEL_CARD = Path(__file__).with_name("shapes_small.md")
#: Training-only entries that a shipped checkpoint leaves out.
TRAINING_ONLY_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def load_shapes_model(device: str | torch.device | None = None) -> nn.Module:
    """The shipped ShapesDataset detector, in eval mode, with ``class_names`` set.

    Args:
        device: where to put it (default: the CPU).

    Raises:
        FileNotFoundError: the checkpoint is not installed (a source checkout without it).
    """
    from rcnn_lab.engine.checkpoint import model_from_checkpoint

    if not SHAPES_MODEL.is_file():
        raise FileNotFoundError(
            f"the shipped model {SHAPES_MODEL} is not installed; train one with "
            "`rcnn-lab train --data shapes --model small` and load its best.pt with "
            "rcnn_lab.engine.model_from_checkpoint"
        )
    return model_from_checkpoint(SHAPES_MODEL, device=device)


def strip_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Write ``source`` (a training checkpoint) to ``target`` without its training state.

    Keeps the weights, architecture, class names, configuration, iteration and validation
    metrics: what loading and reporting need, at about half the size (no momentum buffers).
    """
    from rcnn_lab.engine.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(source)
    for key in TRAINING_ONLY_KEYS:
        state.pop(key, None)
    return save_checkpoint(state, target)


__all__ = ["SHAPES_MODEL", "SHAPES_MODEL_CARD", "load_shapes_model", "strip_checkpoint"]
