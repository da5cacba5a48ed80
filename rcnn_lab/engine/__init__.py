"""Engine: evaluation of a detector (COCO metrics through pycocotools, AP from scratch)."""

from rcnn_lab.engine.average_precision import (
    average_precision,
    coco_interpolated_ap,
    match_detections,
    precision_recall,
)
from rcnn_lab.engine.evaluate import evaluate, evaluate_detections, format_metrics

__all__ = [
    "evaluate",
    "evaluate_detections",
    "format_metrics",
    "precision_recall",
    "match_detections",
    "average_precision",
    "coco_interpolated_ap",
]
