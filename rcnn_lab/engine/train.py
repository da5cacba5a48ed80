"""The training loop: one process or DDP, AMP, logging, evaluation, atomic and exact checkpoints.

One iteration reads a batch, sums the detector's losses (the four of Faster R-CNN), checks that
they are finite, and takes one optimiser and one schedule step; before each log and checkpoint
the weights are checked too (:mod:`~rcnn_lab.engine.divergence`). Every ``log_every`` iterations
the losses (averaged over ranks) go to ``logging``, ``out_dir/metrics.jsonl`` and TensorBoard;
every ``eval_every`` the model is evaluated (:func:`~rcnn_lab.engine.evaluate`) and ``last.pt``
and ``best.pt`` (highest val AP) are written.

Exact resume: an epoch's order comes from a (seed, epoch) permutation, the loader draws from its
own (seed, epoch) generator, and a checkpoint holds every RNG state, so that N iterations
straight and N/2 + resume + N/2 give the same weights bit for bit (on CPU; with
``num_workers > 0``, use :class:`~rcnn_lab.data.SeededTransforms` for the augmentation).

Shapes: B images per batch and process; P processes.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset
from tqdm.auto import tqdm

from rcnn_lab.data import collate
from rcnn_lab.engine import checkpoint as ckpt
from rcnn_lab.engine import distributed
from rcnn_lab.engine.config import TrainConfig, build_optimizer, build_scheduler
from rcnn_lab.engine.divergence import (
    NonFiniteLossError,
    NonFiniteWeightsError,
    buffers_restored_on_error,
    first_non_finite,
)
from rcnn_lab.engine.evaluate import evaluate
from rcnn_lab.engine.metrics_log import MetricsLog

logger = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Short names of the four losses in the progress bar.
LOSS_ABBREVIATIONS = {
    "loss_objectness": "obj",
    "loss_rpn_box_reg": "rpn_box",
    "loss_classifier": "cls",
    "loss_box_reg": "box",
}


@dataclass
class TrainResult:
    """What :func:`train` returns: the iterations done, the best val AP and the files written."""

    iteration: int
    best_ap: float | None
    val_metrics: dict | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None


class _SkipBatches:
    """The batches of ``batch_sampler`` after the first ``skip`` (to resume mid-epoch)."""

    def __init__(self, batch_sampler: BatchSampler, skip: int):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell the dataset (or its ``transforms``, e.g. SeededTransforms) which epoch begins."""
    for owner in (dataset, getattr(dataset, "transforms", None)):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
            return


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


class _Trainer:
    """The state of one training run (see :func:`train`)."""

    def __init__(self, model, train_data, val_data, cfg: TrainConfig, info):
        self.cfg, self.info, self.device = cfg, info, info.device
        self.train_data, self.val_data = train_data, val_data
        self.module = model.to(self.device).train()  # a loaded model comes in eval mode
        self.model = distributed.wrap_model(self.module, info)
        self.sampler = distributed.make_sampler(train_data, cfg.seed, info)
        self.iters_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        if self.iters_per_epoch == 0:
            raise ValueError("the training set is empty")
        self.total = cfg.iterations or cfg.epochs * self.iters_per_epoch
        self.optimizer = build_optimizer(self.module, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.iteration, self.best_ap, self.val_metrics = 0, None, None
        self.out = Path(cfg.out_dir) if cfg.out_dir and info.is_main else None
        if cfg.resume:
            self._resume(cfg.resume)
        else:
            ckpt.seed_everything(cfg.seed + info.rank)
        self.log = MetricsLog(
            self.out, self.iteration, enabled=info.is_main, tensorboard=cfg.tensorboard
        )
        if self.out:
            cfg.to_json(self.out / "config.json")

    def _loader(self, epoch: int, skip: int) -> DataLoader:
        """The batches of ``epoch``, less the first ``skip`` (already trained on)."""
        self.sampler.set_epoch(epoch)
        _set_epoch(self.train_data, epoch)
        batches = _SkipBatches(BatchSampler(self.sampler, self.cfg.batch_size, False), skip)
        return DataLoader(
            self.train_data,
            batch_sampler=batches,
            num_workers=self.cfg.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            # the loader's own generator: creating it leaves the global RNG alone
            generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch),
        )

    def run(self) -> TrainResult:
        stop = min(self.total, self.cfg.stop_after or self.total)
        if self.iteration >= stop:
            logger.info("nothing to do: %d of %d iterations already done", self.iteration, stop)
        show = self.cfg.progress and self.info.is_main
        with tqdm(total=self.total, initial=self.iteration, desc="train", disable=not show) as bar:
            while self.iteration < stop:
                epoch, skip = divmod(self.iteration, self.iters_per_epoch)
                for images, targets in self._loader(epoch, skip):
                    # a NaN loss stops the run; its forward pass must not leave its BatchNorm
                    # statistics behind in the model
                    with buffers_restored_on_error(self.module, NonFiniteLossError):
                        losses = self._step(images, targets)
                    self.iteration += 1
                    bar.update()
                    short = {LOSS_ABBREVIATIONS.get(k, k): f"{v:.3f}" for k, v in losses.items()}
                    bar.set_postfix(short, refresh=False)
                    self._after_step(losses, epoch, stop)
                    if self.iteration >= stop:
                        break
        distributed.broadcast_buffers(self.model)
        self.log.close()
        last, best = (self.out / n if self.out else None for n in ("last.pt", "best.pt"))
        return TrainResult(
            self.iteration,
            self.best_ap,
            self.val_metrics,
            last if last and last.exists() else None,
            best if best and best.exists() else None,
        )

    def _step(self, images, targets) -> dict[str, float]:
        """One optimiser step; returns the losses averaged over ranks."""
        images = [image.to(self.device, non_blocking=True) for image in images]
        targets = _to_device(targets, self.device)
        amp = AMP_DTYPES.get(self.cfg.amp)
        with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
            loss_dict = self.model(images, targets)
        names = list(loss_dict)
        values = torch.stack([loss_dict[k].detach().float() for k in names])  # [4]
        mean = distributed.all_reduce_mean(values).tolist()  # the same on every rank
        for name, value in zip(names, mean):
            if not math.isfinite(value):  # every rank stops here, before any step
                raise NonFiniteLossError(self.iteration + 1, name, value)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(sum(loss_dict.values())).backward()
        if self.cfg.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.clip_grad_norm)
        self.lr = self.optimizer.param_groups[0]["lr"]  # the rate of this step, for the log
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return dict(zip(names, mean))

    def _after_step(self, losses: dict[str, float], epoch: int, stop: int) -> None:
        """Log, evaluate and checkpoint when their iteration has come."""
        cfg, it = self.cfg, self.iteration
        eval_every = cfg.eval_every or self.iters_per_epoch
        self.log.add(losses)
        if it % cfg.log_every == 0 or it == stop:
            self.log.train(it, epoch, self.lr, images=cfg.batch_size * self.info.world_size)
        # every rank takes the same branches: _check_weights and _save are collectives
        evaluated = self.val_data is not None and (it % eval_every == 0 or it == self.total)
        save = it % (cfg.checkpoint_every or eval_every) == 0 or it == stop or evaluated
        if save or it % cfg.log_every == 0:
            self._check_weights()  # never evaluate or save NaN weights
        improved = self._evaluate(epoch) if evaluated else False  # only rank 0 knows
        if save:
            self._save(epoch, best=improved)

    def _check_weights(self) -> None:
        """Stop with NonFiniteWeightsError when any rank's weights or buffers hold NaN or inf."""
        found = first_non_finite(self.module)
        flag = torch.tensor([float(found is not None)], device=self.device)
        if distributed.all_reduce_mean(flag).item() > 0:  # every rank stops at the same point
            name, value = found or ("a buffer of another process", math.nan)
            raise NonFiniteWeightsError(self.iteration, name, value)

    def _evaluate(self, epoch: int) -> bool:
        """Evaluate on rank 0; True when the val AP is the best so far."""
        if not self.info.is_main:
            return False
        data = self.val_data
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # evaluation must not move the train RNG
            result = evaluate(
                self.module,
                data,
                batch_size=self.cfg.eval_batch_size or self.cfg.batch_size,
                num_workers=self.cfg.num_workers,
                class_names=getattr(data, "class_names", None),
                label_to_category_id=getattr(data, "label_to_category_id", None),
                progress=False,
            )
        self.val_metrics = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        self.log.val(self.iteration, epoch, self.val_metrics)
        ap = self.val_metrics["ap"]
        improved = math.isfinite(ap) and (self.best_ap is None or ap > self.best_ap)
        if improved:
            self.best_ap = ap
        best = "none" if self.best_ap is None else f"{self.best_ap:.4f}"
        logger.info("iteration %d: val AP %.4f (best %s)", self.iteration, ap, best)
        return improved

    def _save(self, epoch: int, best: bool) -> None:
        """Write ``last.pt`` (and ``best.pt``) on rank 0, with every rank's RNG state."""
        rng = distributed.all_gather_objects(ckpt.rng_state())  # a collective: every rank
        if self.out is None:
            return
        data = self.train_data
        state = ckpt.checkpoint_state(
            self.module,
            class_names=getattr(data, "class_names", None),
            label_to_category_id=getattr(data, "label_to_category_id", None),
            iteration=self.iteration,
            epoch=epoch,
            train_size=len(data),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=rng,
            config=self.cfg.to_dict(),
            best_ap=self.best_ap,
            val_metrics=self.val_metrics,
        )
        ckpt.save_checkpoint(state, self.out / "last.pt")
        if best:
            ckpt.save_checkpoint(state, self.out / "best.pt")

    def _resume(self, path: str) -> None:
        """Load a training checkpoint: weights, optimiser, schedule, scaler, counters, RNGs."""
        state = ckpt.load_checkpoint(path)
        if "optimizer" not in state or "rng" not in state:
            raise ckpt.CheckpointError(f"{path} holds weights only: it cannot resume training")
        ckpt.load_model_state(self.module, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best_ap = state["iteration"], state.get("best_ap")
        self.val_metrics = state.get("val_metrics")
        changed = self.cfg.differences(state["config"])
        if changed or state.get("train_size") != len(self.train_data):
            logger.warning("resuming with other settings (%s): not an exact continuation",
                           ", ".join(changed) or "training set size")  # fmt: skip
        rng = state["rng"]
        if len(rng) != self.info.world_size:
            logger.warning("checkpoint from %d processes, now %d", len(rng), self.info.world_size)
        ckpt.set_rng_state(rng[self.info.rank % len(rng)])
        logger.info("resumed from %s at iteration %d", path, self.iteration)


def train(
    model: nn.Module,
    train_data: Dataset,
    *,
    val_data: Dataset | None = None,
    config: TrainConfig | None = None,
    **overrides,
) -> TrainResult:
    """Train a detector; see :class:`TrainConfig` for every setting.

    Args:
        model: a detector that returns a dict of losses in training mode given (images,
            targets), and detections in eval mode (any :class:`~rcnn_lab.FasterRCNN`). Models made
            by :func:`~rcnn_lab.engine.build_model` record their architecture in checkpoints.
        train_data: a dataset of (image [3, H, W] float in [0, 1], target) pairs; its
            ``class_names`` and ``label_to_category_id`` (if any) go into the checkpoints.
        val_data: evaluated every ``eval_every`` iterations on rank 0 (None: never).
        config: the settings; ``overrides`` replace single fields, e.g.
            ``train(model, data, iterations=100, lr=0.01)``.

    Under ``torchrun`` every process calls this; gradients are averaged by DDP and only rank 0
    writes files and evaluates.

    Raises:
        NonFiniteLossError: a loss became NaN or infinite (no step taken with it; the model's
            parameters and buffers are those of the iteration before).
        NonFiniteWeightsError: a step made a weight NaN or infinite (found at the next
            logging or checkpoint iteration, before anything is saved).
        ValueError: a bad setting or an empty training set.
        TypeError: ``train_data`` is a DataLoader (pass its dataset).
        CheckpointError: ``resume`` is not a training checkpoint of this model.
    """
    if isinstance(train_data, DataLoader):
        raise TypeError("train_data must be a Dataset: train() makes its own loaders")
    base = config.to_dict() if config is not None else {}
    cfg = TrainConfig.from_dict({**base, **overrides})
    info = distributed.setup(cfg.device)
    try:
        return _Trainer(model, train_data, val_data, cfg, info).run()
    finally:
        distributed.cleanup(info)
