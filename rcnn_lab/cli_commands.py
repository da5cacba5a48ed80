"""What the ``rcnn-lab`` subcommands do; :mod:`rcnn_lab.cli` parses the options and reports errors.

Each ``run_<command>(args)`` takes the parsed options and returns the exit status. Errors are
raised as ``ValueError`` / ``OSError`` with a one-line message (``cli.main`` prints it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import torch

from rcnn_lab import cli
from rcnn_lab.cli import MODEL_CHOICES, UsageError
from rcnn_lab.data import (
    CocoDetectionDataset,
    SeededTransforms,
    ShapesDataset,
    VOCDetectionDataset,
    export_coco,
    train_transforms,
)
from rcnn_lab.engine import (
    TrainConfig,
    build_model,
    detection_records,
    evaluate,
    format_metrics,
    load_checkpoint,
    model_from_checkpoint,
    predict,
    save_prediction_figure,
    train,
)
from rcnn_lab.engine.predict import read_image

logger = logging.getLogger("rcnn_lab.cli")
# TrainConfig fields with a command-line option of the same name
_CONFIG_OPTIONS = (
    "epochs", "iterations", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
    "warmup_iters", "schedule", "milestones", "clip_grad_norm", "out_dir", "eval_every",
    "checkpoint_every", "log_every", "seed", "num_workers", "resume", "stop_after",
    "eval_batch_size",
)  # fmt: skip
DEFAULT_EPOCHS, DEFAULT_OUT_DIR = 10, "runs/train"


def _device(name: str | None) -> str:
    """``name``, or the first GPU when there is one."""
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _check_source(args) -> None:
    """One data source, with the options it needs."""
    if args.coco and args.voc:
        raise UsageError("give --coco or --voc, not both")
    if args.coco and not args.images:
        raise UsageError("--coco needs --images DIR (the folder of its images)")
    if getattr(args, "val_coco", None) and not args.val_images:
        raise UsageError("--val-coco needs --val-images DIR")


def _shapes(args, split: str, size: int, transforms=None) -> ShapesDataset:
    return ShapesDataset(
        split, size, seed=args.data_seed, image_size=args.image_size, transforms=transforms
    )


def _train_data(args, seed: int):
    """(train, val or None) datasets of ``rcnn-lab train``."""
    _check_source(args)
    augment = None if args.no_augment else SeededTransforms(train_transforms(), seed)
    if args.coco:
        train_set = CocoDetectionDataset(args.images, args.coco, transforms=augment)
        val = CocoDetectionDataset(args.val_images, args.val_coco) if args.val_coco else None
        return train_set, val
    if args.voc:
        train_set = VOCDetectionDataset(args.voc, args.voc_year, "train", transforms=augment)
        return train_set, VOCDetectionDataset(args.voc, args.voc_year, "val")
    val = _shapes(args, "val", args.val_size) if args.val_size > 0 else None
    return _shapes(args, "train", args.train_size, augment), val


def _eval_data(args):
    """The dataset of ``rcnn-lab evaluate``."""
    _check_source(args)
    if args.coco:
        return CocoDetectionDataset(args.images, args.coco)
    if args.voc:
        return VOCDetectionDataset(args.voc, args.voc_year, args.split)
    return _shapes(args, args.split, args.size)


def _train_config(args, resumed: dict | None) -> TrainConfig:
    """Checkpoint's config < --config file < explicit options."""
    values = dict(resumed["config"]) if resumed else {}
    values.pop("stop_after", None)
    if args.config:
        path = Path(args.config)
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(loaded, dict):
            raise UsageError(f"{path}: expected a JSON object of TrainConfig fields")
        values.update(loaded)
    flags = {k: getattr(args, k) for k in _CONFIG_OPTIONS if getattr(args, k) is not None}
    if "epochs" in flags or "iterations" in flags:
        values.pop("epochs", None), values.pop("iterations", None)
    values.update(flags)
    if args.amp is not None:
        values["amp"] = None if args.amp == "none" else args.amp
    if args.no_progress:
        values["progress"] = False
    if values.get("epochs") is None and values.get("iterations") is None:
        values["epochs"] = DEFAULT_EPOCHS
    values.setdefault("out_dir", DEFAULT_OUT_DIR)
    values["device"] = _device(args.device or values.get("device"))
    return TrainConfig.from_dict(values)


def _model_kwargs(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--model-kwargs is not valid JSON ({e})") from e
    if not isinstance(kwargs, dict):
        raise UsageError("--model-kwargs must be a JSON object, e.g. '{\"fpn_channels\": 32}'")
    return kwargs


def run_train(args) -> int:
    """``rcnn-lab train``: build data and model, train, report the best checkpoint."""
    resumed = load_checkpoint(args.resume) if args.resume else None
    config = _train_config(args, resumed)
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    train_set, val = _train_data(args, config.seed)
    if resumed and resumed.get("architecture"):
        arch = resumed["architecture"]
        model = build_model(arch["builder"], num_classes=arch["num_classes"], **arch["kwargs"])
    else:
        torch.manual_seed(config.seed)
        try:
            model = build_model(
                MODEL_CHOICES[args.model],
                num_classes=train_set.num_classes,
                **_model_kwargs(args.model_kwargs),
            )
        except TypeError as e:  # an unknown builder keyword
            raise UsageError(f"--model-kwargs: {e}") from e
    result = train(model, train_set, val_data=val, config=config)
    best = "none" if result.best_ap is None else f"{result.best_ap:.4f}"
    logger.info("done: %d iterations, best val AP %s, %s", result.iteration, best, config.out_dir)
    return 0


def _check_classes(model_names, data_names) -> None:
    if model_names is not None and list(model_names) != list(data_names):
        raise UsageError(
            f"the dataset's classes {list(data_names)[1:]} are not the model's "
            f"{list(model_names)[1:]}"
        )


def run_evaluate(args) -> int:
    """``rcnn-lab evaluate``: COCO metrics of a checkpoint, printed (and written as JSON)."""
    checkpoint = load_checkpoint(args.checkpoint)
    data = _eval_data(args)
    _check_classes(checkpoint.get("class_names"), data.class_names)
    model = model_from_checkpoint(checkpoint, _device(args.device))
    result = evaluate(
        model,
        data,
        batch_size=args.batch_size,
        class_names=data.class_names,
        label_to_category_id=getattr(data, "label_to_category_id", None),
        progress=not args.no_progress,
    )
    sys.stdout.write(format_metrics(result) + "\n")
    if args.json:
        numbers = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                   for k, v in result.items() if k != "per_class"}  # fmt: skip
        per_class = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                      for k, v in row.items()} for row in result["per_class"]]  # fmt: skip
        Path(args.json).write_text(json.dumps({**numbers, "per_class": per_class}, indent=2))
    return 0


def _kept_labels(classes: str | None, names) -> set[int] | None:
    """The labels named by ``--classes`` (None: all); UsageError for an unknown name."""
    if not classes:
        return None
    known = {name: label for label, name in enumerate(names or []) if label > 0}
    wanted = [c.strip() for c in classes.split(",") if c.strip()]
    for name in wanted:
        if name not in known:
            raise UsageError(f"unknown class name {name!r}; the model knows {', '.join(known)}")
    return {known[name] for name in wanted}


def _predict_and_write(model, images, names, titles, args, sources) -> int:
    if not 0 <= args.score_thresh <= 1:
        raise UsageError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    kept = _kept_labels(args.classes, names)
    detections = predict(model, images, score_thresh=args.score_thresh)
    if kept is not None:
        detections = [
            {k: v[torch.tensor([int(c) in kept for c in d["labels"]], dtype=torch.bool)]
             for k, v in d.items()} for d in detections
        ]  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = [
        {"image": source, "height": image.shape[1], "width": image.shape[2],
         "detections": detection_records(d, names)}
        for source, image, d in zip(sources, images, detections)
    ]  # fmt: skip
    (out / "detections.json").write_text(json.dumps(records, indent=2))
    figure = save_prediction_figure(
        images, detections, out / f"{args.command}.png", class_names=names, titles=titles
    )
    sys.stdout.write(f"wrote {figure} and {out / 'detections.json'}\n")
    return 0


def run_predict(args) -> int:
    """``rcnn-lab predict``: a checkpoint's detections on image files, as a picture and JSON."""
    checkpoint = load_checkpoint(args.checkpoint)
    names = checkpoint.get("class_names")
    _kept_labels(args.classes, names)  # fail before reading images
    images = [read_image(path) for path in args.images]
    model = model_from_checkpoint(checkpoint, _device(args.device))
    titles = [Path(path).name for path in args.images]
    return _predict_and_write(model, images, names, titles, args, list(args.images))


def run_export_shapes(args) -> int:
    """``rcnn-lab export-shapes``: a ShapesDataset split as PNG images + COCO JSON."""
    data = ShapesDataset(args.split, args.size, seed=args.seed, image_size=args.image_size)
    sys.stdout.write(f"wrote {export_coco(data, args.out_dir)}\n")
    return 0


def run_demo(args) -> int:
    """``rcnn-lab demo``: the shipped ShapesDataset model on generated scenes."""
    if not cli.SHIPPED_MODEL.is_file():
        raise FileNotFoundError(
            "the shipped model rcnn_lab/pretrained/shapes_small.pt is not installed; "
            "train one with `rcnn-lab train` and draw it with `rcnn-lab predict`"
        )
    try:
        from rcnn_lab import pretrained
    except ModuleNotFoundError as e:  # not written yet: read the file directly
        if e.name != "rcnn_lab.pretrained":
            raise
        pretrained = None
    loader = getattr(pretrained, "load_shapes_model", None)
    model = loader() if loader else model_from_checkpoint(cli.SHIPPED_MODEL)
    model.to(_device(args.device)).eval()
    names = getattr(model, "class_names", None) or list(ShapesDataset.CLASSES)
    scenes = ShapesDataset("test", args.num_images, seed=args.seed)
    images = [scenes[i][0] for i in range(len(scenes))]
    titles = [f"test scene {i}" for i in range(len(scenes))]
    return _predict_and_write(model, images, names, titles, args, titles)


COMMANDS = {
    "train": run_train,
    "evaluate": run_evaluate,
    "predict": run_predict,
    "export-shapes": run_export_shapes,
    "demo": run_demo,
}
