"""Checkpoints: atomic writes, safe loading, and models rebuilt from what a checkpoint records.

A checkpoint is a dict of tensors and plain containers (so ``torch.load(weights_only=True)``
reads it without running any pickled code)::

    format        "rcnn_lab.checkpoint"        format_version  1
    architecture  {"builder": "fasterrcnn_small_fpn", "num_classes": 7, "kwargs": {...}} or None
    model         the model's state_dict       class_names     ["__background__", ...] or None
    label_to_category_id  {label: COCO category id} or None
    iteration, epoch      completed iterations, and the epoch of the last one
    optimizer, scheduler, scaler   their state_dicts (training checkpoints only)
    rng           per rank, {"torch", "cuda", "python", "numpy"} generator states
    config        the TrainConfig as a dict;  best_ap, val_metrics: evaluation so far
    versions      {"rcnn_lab", "torch"}

:func:`save_checkpoint` writes to a temporary file in the same folder, fsyncs it and renames it
over the old one (``os.replace`` is atomic), so a crash or a full disk mid-write leaves the
previous checkpoint whole. :func:`model_from_checkpoint` rebuilds the model from
``architecture`` with :func:`build_model`, and refuses weights of another architecture or number
of classes with an error that says which.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rcnn_lab import __version__, builders

CHECKPOINT_FORMAT, FORMAT_VERSION = "rcnn_lab.checkpoint", 1
#: The builders a checkpoint can name (with weights=None, so nothing is downloaded).
MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fasterrcnn_small_fpn": builders.fasterrcnn_small_fpn,
    "fasterrcnn_resnet50_fpn": builders.fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": builders.fasterrcnn_resnet50_fpn_v2,
    "fasterrcnn_mobilenet_v3_large_fpn": builders.fasterrcnn_mobilenet_v3_large_fpn,
    "fasterrcnn_mobilenet_v3_large_320_fpn": builders.fasterrcnn_mobilenet_v3_large_320_fpn,
}
# the box predictor's class scores: [C, representation] in every builder here
_CLS_SCORE_KEY = "roi_heads.box_predictor.cls_score.weight"


#: Permissions of a written checkpoint (rw-r--r--, like any file ``torch.save`` creates).
CHECKPOINT_MODE = 0o644


class CheckpointError(ValueError):
    """A file that is not a usable rcnn_lab checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """Weights of another architecture or number of classes than the model's."""


def _check_plain(value, where: str) -> None:
    """Raise unless ``value`` is made of None/bool/int/float/str, lists, tuples and dicts."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, where)
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        raise TypeError(f"{where}: {value!r} is not a plain value a checkpoint can record")


def build_model(builder: str, *, num_classes: int, **kwargs) -> nn.Module:
    """``MODEL_BUILDERS[builder](num_classes=..., **kwargs)``, recording how it was built.

    The torchvision-named builders get ``weights=None, weights_backbone=None`` unless given
    (random weights, no download). The model's ``architecture`` attribute holds
    ``{"builder", "num_classes", "kwargs"}``, which checkpoints store so that
    :func:`model_from_checkpoint` can build the same model again.
    """
    if builder not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {builder!r}; choose from {', '.join(MODEL_BUILDERS)}")
    if builder != "fasterrcnn_small_fpn":
        kwargs = {"weights": None, "weights_backbone": None, **kwargs}
    _check_plain(kwargs, f"{builder} keyword arguments")
    model = MODEL_BUILDERS[builder](num_classes=num_classes, **kwargs)
    model.architecture = {"builder": builder, "num_classes": int(num_classes), "kwargs": kwargs}
    return model


def architecture_of(model: nn.Module) -> dict | None:
    """The ``architecture`` recorded by :func:`build_model` (None for a model built otherwise)."""
    return getattr(getattr(model, "module", model), "architecture", None)


def num_classes_of(state_dict: dict) -> int | None:
    """C (background included) read from the box predictor's weight; None if there is none."""
    for key, value in state_dict.items():
        if key.endswith(_CLS_SCORE_KEY):
            return int(value.shape[0])
    return None


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's ``random`` and numpy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state() -> dict:
    """The states of torch's CPU (and CUDA) generators, Python's ``random`` and numpy's."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def checkpoint_state(
    model: nn.Module,
    *,
    class_names: list[str] | None = None,
    label_to_category_id: dict[int, int] | None = None,
    **training_state,
) -> dict:
    """The checkpoint dict of ``model`` (unwrapped from DDP), plus any training state given."""
    module = getattr(model, "module", model)
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture_of(module),
        "model": module.state_dict(),
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "label_to_category_id": None
        if label_to_category_id is None
        else {int(k): int(v) for k, v in label_to_category_id.items()},
        "versions": {"rcnn_lab": __version__, "torch": str(torch.__version__)},
        **training_state,
    }


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: temp file + fsync + ``os.replace``.

    Whatever goes wrong (an exception in ``torch.save``, a full disk, a kill), ``path`` holds
    either the old checkpoint or the new one, never a torn file; the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, CHECKPOINT_MODE)  # mkstemp makes 0600 files: others could not read them
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX only)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``, tensors on the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not an rcnn_lab checkpoint (or is damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives
        raise CheckpointError(f"{path} is not a readable checkpoint: not written by torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
        # torch's weights_only refusal: the line that names the offending global
        reason = next((x for x in lines if x.startswith("WeightsUnpickler error")), lines[0])
        raise CheckpointError(f"{path} is not a readable checkpoint: {reason}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an rcnn_lab checkpoint (no format tag)")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer rcnn_lab (format {state['format']})")
    return state


def _describe(arch: dict) -> str:
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(arch["kwargs"].items()))
    return f"{arch['builder']}(num_classes={arch['num_classes']}{', ' if kwargs else ''}{kwargs})"


def check_compatible(checkpoint: dict, model: nn.Module) -> None:
    """Raise :class:`CheckpointMismatchError` unless the checkpoint's weights fit ``model``.

    The message says what differs: the builder, the number of classes, the builder's keyword
    arguments, or else the parameter names and shapes.
    """
    module = getattr(model, "module", model)
    saved, mine = checkpoint.get("architecture"), architecture_of(module)
    if saved and mine and saved["builder"] != mine["builder"]:
        raise CheckpointMismatchError(
            f"checkpoint holds a {saved['builder']} model, the model is a {mine['builder']}"
        )
    own = module.state_dict()
    saved_classes, model_classes = num_classes_of(checkpoint["model"]), num_classes_of(own)
    if saved_classes != model_classes:
        raise CheckpointMismatchError(
            f"checkpoint has num_classes={saved_classes}, model has {model_classes}"
        )
    theirs = checkpoint["model"]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    reshaped = [k for k in own if k in theirs and own[k].shape != theirs[k].shape]
    if missing or unexpected or reshaped:
        if saved and mine:
            detail = f"checkpoint: {_describe(saved)}; model: {_describe(mine)}"
        else:
            first = (reshaped or missing or unexpected)[0]
            detail = f"{len(missing)} missing, {len(unexpected)} unexpected, "
            detail += f"{len(reshaped)} reshaped parameters (first: {first})"
        raise CheckpointMismatchError(f"checkpoint weights do not fit the model: {detail}")


def load_model_state(model: nn.Module, checkpoint: dict) -> None:
    """Check (:func:`check_compatible`), then load the checkpoint's weights into ``model``."""
    check_compatible(checkpoint, model)
    getattr(model, "module", model).load_state_dict(checkpoint["model"], strict=True)


def model_from_checkpoint(
    checkpoint: dict | str | Path, device: str | torch.device | None = None
) -> nn.Module:
    """The model a checkpoint records (its ``architecture``), with its weights, in eval mode.

    The model also gets the checkpoint's ``class_names`` as an attribute (None if absent).
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    arch = checkpoint.get("architecture")
    if not arch:
        raise CheckpointError(
            "the checkpoint records no architecture: build the model yourself and call "
            "load_model_state(model, checkpoint)"
        )
    model = build_model(arch["builder"], num_classes=arch["num_classes"], **arch["kwargs"])
    load_model_state(model, checkpoint)
    model.class_names = checkpoint.get("class_names")
    if device is not None:
        model.to(device)
    return model.eval()
