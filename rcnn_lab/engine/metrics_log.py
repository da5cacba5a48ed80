"""Where training numbers go: ``logging``, ``metrics.jsonl`` and (if installed) TensorBoard.

``metrics.jsonl`` holds one JSON object per line: ``{"kind": "train", "iteration", "epoch",
"lr", "loss", <each loss>, "images_per_s"}`` every ``log_every`` iterations (the losses averaged
over those iterations and over the ranks) and ``{"kind":
"val", "iteration", "epoch", "ap", "ap50", ..., "voc_ap50"}`` after each evaluation. NaN (a
metric with nothing to score) is written as ``null``. A resumed run drops the lines past its
checkpoint's iteration and appends, so the file tells one continuous story.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

logger = logging.getLogger("rcnn_lab.engine.train")


def _json_value(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _summary_writer(folder: Path):
    """A TensorBoard ``SummaryWriter`` when ``torch.utils.tensorboard`` imports, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: not a dependency of rcnn_lab
        return None
    return SummaryWriter(str(folder))


class MetricsLog:
    """Record training losses and evaluation metrics.

    Args:
        out_dir: folder of ``metrics.jsonl`` (and ``tensorboard/``); None writes no file.
        start_iteration: the iteration a resumed run starts from (0 for a fresh run, which
            starts a new file).
        enabled: False on the ranks other than 0, which record nothing.
        tensorboard: also write TensorBoard events when possible.
    """

    def __init__(
        self,
        out_dir: Path | None,
        start_iteration: int = 0,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
    ):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl" if out_dir is not None and enabled else None
        self.writer = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if start_iteration > 0 and self.path.exists():
                lines = self.path.read_text().splitlines()
                kept = [x for x in lines if x and json.loads(x)["iteration"] <= start_iteration]
            self.path.write_text("".join(line + "\n" for line in kept))
            if tensorboard:
                self.writer = _summary_writer(self.path.parent / "tensorboard")
        self._clock, self._since = time.perf_counter(), start_iteration
        self._sums: dict[str, float] = {}
        self._count = 0

    def _write(self, record: dict) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("kind", "iteration", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["iteration"])

    def add(self, losses: dict[str, float]) -> None:
        """Add one iteration's losses to the current window."""
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1

    def train(self, iteration: int, epoch: int, lr: float, images: int) -> None:
        """Record the window's mean losses at ``iteration`` and start a new window.

        Args:
            iteration, epoch: where training stands; ``lr``: the current learning rate.
            images: images per iteration over all ranks (for the speed).
        """
        if not self.enabled or self._count == 0:
            return
        losses = {name: total / self._count for name, total in self._sums.items()}
        self._sums, self._count = {}, 0
        now = time.perf_counter()
        speed = images * (iteration - self._since) / max(now - self._clock, 1e-9)
        self._clock, self._since = now, iteration
        total = sum(losses.values())
        record = {"kind": "train", "iteration": iteration, "epoch": epoch, "lr": lr}
        self._write({**record, "loss": total, **losses, "images_per_s": speed})
        parts = " ".join(f"{k.removeprefix('loss_')} {v:.4f}" for k, v in losses.items())
        logger.info(
            "iteration %d epoch %d: loss %.4f (%s) lr %.3g, %.1f images/s",
            iteration, epoch, total, parts, lr, speed,
        )  # fmt: skip

    def val(self, iteration: int, epoch: int, metrics: dict[str, float]) -> None:
        """Record the evaluation metrics (numbers only) of ``iteration``."""
        if self.enabled:
            self._write({"kind": "val", "iteration": iteration, "epoch": epoch, **metrics})

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
