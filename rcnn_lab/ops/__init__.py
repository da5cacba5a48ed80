"""Detection operators in plain PyTorch, mirroring ``torchvision.ops``."""

from rcnn_lab.ops.poolers import MultiScaleRoIAlign
from rcnn_lab.ops.roi_align import RoIAlign, roi_align

__all__: list[str] = ["roi_align", "RoIAlign", "MultiScaleRoIAlign"]
