"""Evaluate a detector on a dataset: COCO bbox metrics, per-class AP, and VOC-style AP50.

:func:`evaluate` runs the model over the data (eval mode, no gradients, batches on the model's
device) and hands its detections to :func:`evaluate_detections`, which asks pycocotools for the
COCO numbers and computes the VOC AP50 with this package's own code
(:mod:`rcnn_lab.engine.average_precision`). Nothing is printed: :func:`format_metrics` returns the
table as text.

Shapes: N boxes (ground truth or detections) of one image, B images in a batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from rcnn_lab.engine.average_precision import average_precision, precision_recall
from rcnn_lab.engine.coco_eval import (
    COCO_METRIC_NAMES,
    category_ids,
    coco_evaluate,
    coco_ground_truth,
    coco_per_category_ap,
    coco_results,
    coco_stats,
)

#: The detection fields kept from the model's output.
DETECTION_KEYS = ("boxes", "labels", "scores")
# VOC scores a hit at IoU 0.5
_VOC_IOU = 0.5


def collate_detection_batch(batch: Sequence[tuple]) -> tuple:
    """[(image, target), ...] -> ((image, ...), (target, ...)): images may differ in size."""
    return tuple(zip(*batch))


def _as_loader(data: DataLoader | Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """``data`` if it is a DataLoader, else a sequential DataLoader over the dataset."""
    if isinstance(data, DataLoader):
        return data
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_detection_batch,
    )


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _num_images(loader: DataLoader) -> int | None:
    """The dataset length when it has one (the progress bar's total)."""
    try:
        return len(loader.dataset)
    except TypeError:
        return None


def _to_cpu(target: Mapping) -> dict:
    """A copy of ``target`` with its tensors on the CPU."""
    return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in target.items()}


@torch.no_grad()
def collect_detections(
    model: nn.Module,
    data: DataLoader | Dataset,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "evaluate",
) -> tuple[list[dict[str, Tensor]], list[dict]]:
    """Run ``model`` in eval mode over ``data``; its detections and the targets, on the CPU.

    Args:
        model: a detector returning, in eval mode, one dict per image with ``boxes`` [N, 4]
            (x1, y1, x2, y2 in input pixels), ``labels`` [N] and ``scores`` [N].
        data: a dataset of (image [3, H, W] float, target dict) pairs, or a DataLoader whose
            batches are (images, targets) sequences (see :func:`collate_detection_batch`).
        batch_size, num_workers: of the DataLoader built around a dataset (unused for a loader).
        progress: show a ``tqdm.auto`` bar.
        desc: the bar's label.

    Returns:
        (detections, targets): one dict per image each, in data order. The model's training
        mode is restored afterwards.
    """
    loader = _as_loader(data, batch_size, num_workers)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    detections, targets = [], []
    try:
        with tqdm(total=_num_images(loader), desc=desc, unit="img", disable=not progress) as bar:
            for images, batch_targets in loader:
                outputs = model([image.to(device) for image in images])
                if len(outputs) != len(batch_targets):
                    raise ValueError(
                        f"the model returned {len(outputs)} results for {len(batch_targets)} images"
                    )
                for output, target in zip(outputs, batch_targets):
                    detections.append({k: output[k].detach().cpu() for k in DETECTION_KEYS})
                    targets.append(_to_cpu(target))
                bar.update(len(batch_targets))
    finally:
        model.train(was_training)
    return detections, targets


def _image_ids(targets: Sequence[Mapping]) -> list[int]:
    """Each target's ``image_id`` (its position when absent); ValueError on repeats."""
    ids = [int(t["image_id"]) if "image_id" in t else i for i, t in enumerate(targets)]
    if len(set(ids)) != len(ids):
        raise ValueError("image_id must be unique: COCO would merge images that share one")
    return ids


def _label_names(class_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    """Class name per label (>= 1): a sequence is indexed by label, entry 0 being background."""
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items() if int(k) != 0}
    return {label: str(name) for label, name in enumerate(class_names) if label != 0}


def _labels_in(items: Iterable[Mapping[str, Tensor]]) -> set[int]:
    """Every label that occurs in ``items``."""
    return {label for item in items for label in item["labels"].reshape(-1).tolist()}


def _split_by_label(
    detections: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping]
) -> dict[int, tuple[list[dict], list[dict]]]:
    """Per label, the (detections, targets) of the images where it occurs, in image order.

    One pass over the images instead of one per class: an image without a class adds nothing
    to its precision-recall curve.
    """
    by_label: dict[int, tuple[list[dict], list[dict]]] = {}
    for dets, target in zip(detections, targets):
        crowd = target.get("iscrowd")
        crowd = (
            torch.zeros(len(target["boxes"]), dtype=torch.bool)
            if crowd is None
            else torch.as_tensor(crowd).bool().reshape(-1)
        )
        for label in _labels_in([dets]) | _labels_in([target]):
            kept, gt_kept = dets["labels"] == label, target["labels"] == label
            label_dets, label_targets = by_label.setdefault(label, ([], []))
            label_dets.append({"boxes": dets["boxes"][kept], "scores": dets["scores"][kept]})
            label_targets.append({"boxes": target["boxes"][gt_kept], "iscrowd": crowd[gt_kept]})
    return by_label


def _per_class_rows(
    detections: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping],
    label_to_category: Mapping[int, int],
    names: Mapping[int, str],
    per_category: Mapping[int, tuple[float, float]],
) -> list[dict]:
    """One row per class: its counts, COCO AP and AP50, and VOC AP50 (NaN without boxes)."""
    by_label = _split_by_label(detections, targets)
    per_class = []
    for label, category in sorted(label_to_category.items()):
        label_detections, label_targets = by_label.get(label, ([], []))
        curve = (
            precision_recall(label_detections, label_targets, _VOC_IOU) if label_targets else None
        )
        ap, ap50 = per_category[category]
        per_class.append(
            {
                "label": label,
                "category_id": category,
                "name": names.get(label, str(category)),
                "num_gt": curve.num_gt if curve else 0,
                "num_detections": sum(len(d["scores"]) for d in label_detections),
                "ap": ap,
                "ap50": ap50,
                "voc_ap50": average_precision(curve.recall, curve.precision)
                if curve and curve.num_gt
                else math.nan,
            }
        )
    return per_class


def evaluate_detections(
    detections: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping],
    *,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    label_to_category_id: Mapping[int, int] | None = None,
) -> dict:
    """COCO metrics, per-class AP and VOC AP50 of detections against their targets.

    Args:
        detections: per image, ``boxes`` [N, 4] (x1, y1, x2, y2), ``labels`` [N], ``scores`` [N].
        targets: per image (same order), ``boxes`` [N, 4], ``labels`` [N] (0 is background,
            so labels start at 1), ``image_id`` (int; the position when absent), optional
            ``iscrowd`` [N] and ``area`` [N].
        class_names: name per label, a sequence indexed by label (entry 0 = background, as in
            torchvision's ``weights.meta["categories"]``) or a {label: name} mapping. Every named
            class gets a row of the per-class table, with or without boxes.
        label_to_category_id: COCO category id of each label, so that a dataset with
            non-contiguous ids (COCO's 1..90) is reported in its own ids; identity when None.

    Returns:
        A dict with the 12 COCO numbers under :data:`~rcnn_lab.engine.coco_eval.COCO_METRIC_NAMES`
        (``ap``, ``ap50``, ``ap75``, ``ap_small``, ..., ``ar_large``); ``voc_ap50``;
        ``per_class``, a list of {``label``, ``category_id``, ``name``, ``num_gt``,
        ``num_detections``, ``ap``, ``ap50``, ``voc_ap50``}; ``summary``, pycocotools' printed
        table; ``num_images`` and ``num_detections``.

        A class without ground truth has no AP: its entries are NaN and every mean skips it, as
        COCOeval does (which also means its detections cost nothing). A number with nothing to
        score (``ap_small`` without small objects) is NaN where COCOeval prints -1.

        ``voc_ap50`` is the mean over classes with ground truth of the area under the all-point
        interpolated precision-recall curve (VOC 2010+) at IoU 0.5, with every detection
        ranked (no per-image cap) and matched by COCOeval's rules
        (:func:`~rcnn_lab.engine.match_detections`: IoU >= 0.5, the best still free box, crowd
        regions neither hits nor misses). The VOC devkit differs in two corner cases: it requires
        IoU > 0.5, and a detection whose best box is already taken is a false positive even
        when another free box overlaps it enough.

    Raises:
        ValueError: no images, mismatched lengths, repeated image ids, label 0 or a label
            without category id.
    """
    if len(targets) == 0:
        raise ValueError("cannot evaluate an empty dataset: there are no images")
    if len(detections) != len(targets):
        raise ValueError(f"got {len(detections)} detection sets for {len(targets)} images")
    image_ids = _image_ids(targets)
    names = _label_names(class_names)
    labels = set(names) | _labels_in(targets) | _labels_in(detections)
    label_to_category = category_ids(sorted(labels), label_to_category_id)

    ground_truth = coco_ground_truth(targets, image_ids, label_to_category, names)
    results = coco_results(detections, image_ids, label_to_category)
    coco_eval, summary = coco_evaluate(ground_truth, results)
    per_category = coco_per_category_ap(coco_eval)

    per_class = _per_class_rows(detections, targets, label_to_category, names, per_category)
    voc = [row["voc_ap50"] for row in per_class if row["num_gt"]]
    return {
        **coco_stats(coco_eval),
        "voc_ap50": sum(voc) / len(voc) if voc else math.nan,
        "per_class": per_class,
        "summary": summary,
        "num_images": len(targets),
        "num_detections": len(results),
    }


def evaluate(
    model: nn.Module,
    data: DataLoader | Dataset,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    label_to_category_id: Mapping[int, int] | None = None,
    progress: bool = True,
) -> dict:
    """Run ``model`` over ``data`` and score its detections (COCO, per class, VOC AP50).

    The model runs in eval mode under ``torch.no_grad()`` on its own device, ``batch_size``
    images at a time; its training mode is restored afterwards. See :func:`collect_detections`
    for ``data`` and :func:`evaluate_detections` for the arguments and the returned dict.

    Raises:
        ValueError: the dataset is empty (and the cases of :func:`evaluate_detections`).
    """
    detections, targets = collect_detections(
        model, data, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    return evaluate_detections(
        detections,
        targets,
        class_names=class_names,
        label_to_category_id=label_to_category_id,
    )


# (key, label in the table) in COCOeval's order
_METRIC_LABELS = dict(
    zip(
        COCO_METRIC_NAMES,
        (
            "AP   IoU=0.50:0.95  area=all     maxDets=100",
            "AP   IoU=0.50       area=all     maxDets=100",
            "AP   IoU=0.75       area=all     maxDets=100",
            "AP   IoU=0.50:0.95  area=small   maxDets=100",
            "AP   IoU=0.50:0.95  area=medium  maxDets=100",
            "AP   IoU=0.50:0.95  area=large   maxDets=100",
            "AR   IoU=0.50:0.95  area=all     maxDets=1",
            "AR   IoU=0.50:0.95  area=all     maxDets=10",
            "AR   IoU=0.50:0.95  area=all     maxDets=100",
            "AR   IoU=0.50:0.95  area=small   maxDets=100",
            "AR   IoU=0.50:0.95  area=medium  maxDets=100",
            "AR   IoU=0.50:0.95  area=large   maxDets=100",
        ),
    )
)


def _number(value: float) -> str:
    """A metric with 3 decimals, or "nan" (nothing to score)."""
    return "nan" if math.isnan(value) else f"{value:.3f}"


def format_metrics(result: Mapping) -> str:
    """The result of :func:`evaluate` as a text table: COCO numbers, VOC AP50, then per class.

    Classes with neither ground truth nor detections are left out of the per-class table.
    """
    lines = [f"COCO bbox metrics over {result['num_images']} images (pycocotools)"]
    for key, label in _METRIC_LABELS.items():
        lines.append(f"  {key:<10} {label:<44} {_number(result[key]):>6}")
    voc_label = "VOC AP  IoU=0.50  all-point interpolation"
    lines.append(f"  {'voc_ap50':<10} {voc_label:<44} {_number(result['voc_ap50']):>6}")
    rows = [r for r in result["per_class"] if r["num_gt"] or r["num_detections"]]
    if rows:
        width = max(len("class"), *(len(r["name"]) for r in rows))
        lines.append("")
        lines.append(
            f"  {'label':>5} {'cat':>4} {'class':<{width}} {'#gt':>6} {'#det':>6} "
            f"{'AP':>6} {'AP50':>6} {'VOC50':>6}"
        )
        for r in rows:
            lines.append(
                f"  {r['label']:>5} {r['category_id']:>4} {r['name']:<{width}} {r['num_gt']:>6} "
                f"{r['num_detections']:>6} {_number(r['ap']):>6} {_number(r['ap50']):>6} "
                f"{_number(r['voc_ap50']):>6}"
            )
    return "\n".join(lines)
