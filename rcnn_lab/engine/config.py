"""The training configuration, and the optimiser and learning-rate schedule it describes.

:class:`TrainConfig` is a plain dataclass of numbers and strings: it round-trips through a dict
and JSON (``config.json`` in the output folder, ``config`` in every checkpoint), and its
``__post_init__`` rejects a bad value with a one-line message naming the field.

The schedule is a linear warm-up (Goyal et al. 2017, Sec. 2.2) times either a cosine decay to
zero (Loshchilov & Hutter 2017) or steps of ``gamma`` at ``milestones``, stepped once per
iteration.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep")
AMP_MODES = (None, "bf16", "fp16")
#: Default multistep milestones, as fractions of the training length (torchvision's 26/36, 33/36
#: epochs of the 3x schedule, rounded).
DEFAULT_MILESTONE_FRACTIONS = (0.75, 0.9)
#: Fields that may change when a run is resumed without changing what it computes.
RESUME_FREE_FIELDS = ("resume", "stop_after", "progress", "tensorboard", "out_dir", "device")


@dataclass
class TrainConfig:
    """Everything :func:`~rcnn_lab.engine.train` needs besides the model and the data.

    Length: give exactly one of ``epochs`` or ``iterations`` (one iteration = one optimiser
    step on ``batch_size`` images per process). Counts of ``*_every`` are in iterations.

    Attributes:
        epochs, iterations: training length.
        batch_size: images per iteration and process.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adamw"``.
        lr: peak learning rate; ``momentum``; ``weight_decay`` (applied to weights, not to the
            1-D biases and norm parameters).
        warmup_iters, warmup_factor: the learning rate rises linearly from
            ``lr * warmup_factor`` to ``lr`` over the first ``warmup_iters`` iterations.
        schedule: ``"cosine"`` or ``"multistep"``; ``milestones`` (iterations; default 3/4 and
            9/10 of training) and ``gamma`` for the latter.
        clip_grad_norm: clip the global gradient norm to this value (None: no clipping).
        amp: ``None``, ``"bf16"`` or ``"fp16"`` autocast (fp16 adds a gradient scaler).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; under torchrun ``"cuda"`` means each
            process's own GPU.
        out_dir: folder for ``metrics.jsonl``, ``config.json``, ``last.pt``, ``best.pt`` (None:
            write nothing).
        eval_every: evaluate every this many iterations (default: once per epoch) and at the end.
        checkpoint_every: write ``last.pt`` every this many iterations (default: ``eval_every``)
            and at the end.
        log_every: log and record the losses every this many iterations.
        seed: seeds the RNGs, the data order and the loader.
        num_workers: DataLoader worker processes.
        resume: a ``last.pt`` to continue from, exactly where it stopped.
        stop_after: end this run after this many iterations in all (the schedule still spans
            the full length), writing ``last.pt`` to resume from (e.g. for time-limited jobs).
        eval_batch_size: images per evaluation batch (default: ``batch_size``).
        progress: show a ``tqdm.auto`` bar; ``tensorboard``: also write TensorBoard events when
            ``torch.utils.tensorboard`` imports.
    """

    epochs: int | None = None
    iterations: int | None = None
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 1e-3
    schedule: str = "cosine"
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    amp: str | None = None
    device: str = "cpu"
    out_dir: str | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    log_every: int = 20
    seed: int = 0
    num_workers: int = 0
    resume: str | None = None
    stop_after: int | None = None
    eval_batch_size: int | None = None
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        for name in ("out_dir", "resume"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError("give exactly one of epochs or iterations")
        positive = ("epochs", "iterations", "batch_size", "log_every", "eval_every")
        positive += ("checkpoint_every", "stop_after", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_iters", "seed", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_MODES)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive, got {self.clip_grad_norm!r}")

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (tuples become lists)."""
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def differences(self, other: dict) -> list[str]:
        """The fields (outside ``RESUME_FREE_FIELDS``) whose value in ``other`` differs."""
        mine = self.to_dict()
        return sorted(k for k in mine if k not in RESUME_FREE_FIELDS and other.get(k) != mine[k])

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from a dict such as :meth:`to_dict` gives; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    def to_json(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        """Read a config written by :meth:`to_json` (or by hand); ValueError names a bad file."""
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of TrainConfig fields")
        return cls.from_dict(values)


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters; no weight decay on 1-D ones (biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(iteration: int, config: TrainConfig, total: int) -> float:
    """The learning rate of ``iteration`` (0-based) divided by ``config.lr``."""
    warmup = 1.0
    if iteration < config.warmup_iters:
        alpha = iteration / config.warmup_iters
        warmup = config.warmup_factor * (1 - alpha) + alpha
    if config.schedule == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
    milestones = config.milestones or tuple(int(f * total) for f in DEFAULT_MILESTONE_FRACTIONS)
    return warmup * config.gamma ** sum(iteration >= m for m in milestones)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up times cosine or multistep decay over ``total`` iterations; step it per iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, config, total))
