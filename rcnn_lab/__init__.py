"""rcnn_lab: Faster R-CNN from scratch in plain PyTorch, proven equal to torchvision.

Every component mirrors torchvision 0.29's class names, keyword arguments, call conventions,
return structures and ``state_dict`` keys, so torchvision's weights load unchanged.

Shape letters used in every docstring and shape comment:

    N  images in a batch            C  object classes (background included)
    A  anchors per feature-map location
    H, W  feature-map height and width (pixels of that level)
    L  pyramid levels               K  RoIs (regions of interest) in a batch
    G  ground-truth boxes           P  predictions (anchors or proposals) being matched
    R  anchors of an image, summed over levels
"""

__version__ = "0.1.0"

from rcnn_lab import ops  # noqa: E402

# --- components (one line per module; keep this order) ---
from rcnn_lab.image_list import ImageList  # noqa: E402
from rcnn_lab.anchors import AnchorGenerator  # noqa: E402
from rcnn_lab.box_coder import BoxCoder  # noqa: E402
from rcnn_lab.matcher import Matcher  # noqa: E402
from rcnn_lab.sampler import BalancedPositiveNegativeSampler  # noqa: E402
from rcnn_lab.rpn import RegionProposalNetwork, RPNHead  # noqa: E402
from rcnn_lab.frozen_batchnorm import FrozenBatchNorm2d  # noqa: E402
from rcnn_lab.fpn import FeaturePyramidNetwork  # noqa: E402
from rcnn_lab.backbone import (  # noqa: E402
    BackboneWithFPN,
    mobilenet_backbone,
    resnet_fpn_backbone,
)
from rcnn_lab.transform import GeneralizedRCNNTransform  # noqa: E402
from rcnn_lab.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead, fastrcnn_loss  # noqa: E402
from rcnn_lab.faster_rcnn import FasterRCNN, GeneralizedRCNN  # noqa: E402
from rcnn_lab.builders import (  # noqa: E402
    fasterrcnn_mobilenet_v3_large_320_fpn,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
    fasterrcnn_small_fpn,
)
from rcnn_lab.fast_path import optimize_for_inference  # noqa: E402

__all__ = [
    "ops",
    "__version__",
    "ImageList",
    "AnchorGenerator",
    "BoxCoder",
    "Matcher",
    "BalancedPositiveNegativeSampler",
    "RPNHead",
    "RegionProposalNetwork",
    "FrozenBatchNorm2d",
    "FeaturePyramidNetwork",
    "BackboneWithFPN",
    "resnet_fpn_backbone",
    "mobilenet_backbone",
    "GeneralizedRCNNTransform",
    "TwoMLPHead",
    "FastRCNNPredictor",
    "RoIHeads",
    "fastrcnn_loss",
    "GeneralizedRCNN",
    "FasterRCNN",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_small_fpn",
    "optimize_for_inference",
]
