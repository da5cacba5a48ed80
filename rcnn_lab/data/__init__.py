"""Data for rcnn_lab's detectors: synthetic shapes, COCO and VOC readers, augmentation, batching.

- :class:`ShapesDataset`: procedurally generated, deterministic scenes of six shape classes
  (no download), the data of the model trained and shipped with rcnn_lab.
- :class:`CocoDetectionDataset`, :class:`VOCDetectionDataset`: your own data through
  torchvision's ``CocoDetection`` / ``VOCDetection`` readers, mapped to the detectors' targets,
  with errors that name the file, the image id and the problem (:class:`AnnotationError`).
- :func:`train_transforms`, :func:`eval_transforms`, :class:`SeededTransforms`:
  ``torchvision.transforms.v2`` pipelines that move ``tv_tensors.BoundingBoxes`` with the pixels.
- :func:`collate`: a DataLoader ``collate_fn`` giving (list of images, list of targets).
- :func:`export_coco`: write any of these datasets as PNG images + a COCO JSON.

Every dataset yields ``(image, target)``: image [3, H, W] float32 in [0, 1]; target ``boxes``
[N, 4] float32 (x1, y1, x2, y2) in pixels, ``labels`` [N] int64 in 1..C-1 (0 = background),
``image_id`` int, ``area`` [N] float32, ``iscrowd`` [N] int64.
"""

from rcnn_lab.data.coco import CocoDetectionDataset
from rcnn_lab.data.collate import collate
from rcnn_lab.data.export import export_coco
from rcnn_lab.data.shapes import SPLIT_SIZES, ShapesDataset
from rcnn_lab.data.transforms import SeededTransforms, eval_transforms, train_transforms
from rcnn_lab.data.validation import AnnotationError
from rcnn_lab.data.voc import VOC_CLASSES, VOCDetectionDataset

__all__ = [
    "ShapesDataset",
    "SPLIT_SIZES",
    "CocoDetectionDataset",
    "VOCDetectionDataset",
    "VOC_CLASSES",
    "AnnotationError",
    "train_transforms",
    "eval_transforms",
    "SeededTransforms",
    "collate",
    "export_coco",
]
