"""Detection operators in plain PyTorch, mirroring ``torchvision.ops``."""

from rcnn_lab.ops.boxes import (
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    nms,
    remove_small_boxes,
)
from rcnn_lab.ops.nms_per_image import batched_nms_per_image, clip_boxes_to_images
from rcnn_lab.ops.poolers import MultiScalePooler, MultiScaleRoIAlign, MultiScaleRoIPool
from rcnn_lab.ops.roi_align import RoIAlign, roi_align, sample_grid
from rcnn_lab.ops.roi_pool import RoIPool, roi_pool

__all__: list[str] = [
    "box_area",
    "box_iou",
    "box_convert",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "nms",
    "batched_nms",
    "batched_nms_per_image",
    "clip_boxes_to_images",
    "roi_align",
    "RoIAlign",
    "sample_grid",
    "roi_pool",
    "RoIPool",
    "MultiScalePooler",
    "MultiScaleRoIAlign",
    "MultiScaleRoIPool",
]
