"""Engine: training (one process or DDP), checkpoints, evaluation (pycocotools, AP from scratch).

- :func:`train` with a :class:`TrainConfig`; :class:`NonFiniteLossError` when a loss diverges
  (:class:`NonFiniteWeightsError`, a subclass, when the weights do).
- :func:`build_model`, :func:`save_checkpoint`, :func:`load_checkpoint`,
  :func:`model_from_checkpoint`: atomic checkpoints that record how to rebuild their model.
- :func:`evaluate`, :func:`format_metrics`: COCO metrics, per-class AP and VOC AP50.
- :func:`predict`: detections with class names, ready for JSON or a picture.
"""

from rcnn_lab.engine.average_precision import (
    average_precision,
    coco_interpolated_ap,
    match_detections,
    precision_recall,
)
from rcnn_lab.engine.checkpoint import (
    MODEL_BUILDERS,
    CheckpointError,
    CheckpointMismatchError,
    build_model,
    checkpoint_state,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    save_checkpoint,
)
from rcnn_lab.engine.config import TrainConfig
from rcnn_lab.engine.divergence import NonFiniteLossError, NonFiniteWeightsError
from rcnn_lab.engine.evaluate import evaluate, evaluate_detections, format_metrics
from rcnn_lab.engine.predict import detection_records, predict, save_prediction_figure
from rcnn_lab.engine.train import TrainResult, train

__all__ = [
    "train",
    "TrainConfig",
    "TrainResult",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "build_model",
    "MODEL_BUILDERS",
    "checkpoint_state",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "model_from_checkpoint",
    "CheckpointError",
    "CheckpointMismatchError",
    "predict",
    "detection_records",
    "save_prediction_figure",
    "evaluate",
    "evaluate_detections",
    "format_metrics",
    "precision_recall",
    "match_detections",
    "average_precision",
    "coco_interpolated_ap",
]
