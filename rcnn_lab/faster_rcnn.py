"""GeneralizedRCNN and FasterRCNN: the whole two-stage detector (Faster R-CNN, Sec. 3; FPN, Sec. 4).

An image batch goes transform -> backbone (+FPN) -> RPN -> RoI heads -> back to input pixels.
Training returns the four losses, inference one dict of detections per image.

Shapes: N images, G ground-truth boxes of an image, M detections of an image, C classes
(background included).
"""

from __future__ import annotations

import inspect
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from rcnn_lab import checks
from rcnn_lab.anchors import FPN_SIZES, AnchorGenerator, fpn_anchor_generator
from rcnn_lab.ops.poolers import MultiScaleRoIAlign
from rcnn_lab.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from rcnn_lab.rpn import RegionProposalNetwork, RPNHead
from rcnn_lab.transform import EXTRA_KEYWORDS, GeneralizedRCNNTransform, reject_unknown_keywords

#: ImageNet statistics of the classification trunks, used to normalise input images.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: One anchor size per FPN level P2..P6 (FPN, Sec. 4.1), three aspect ratios at each.
FPN_ANCHOR_SIZES = tuple((size,) for size in FPN_SIZES)
#: Width of the TwoMLPHead representation (FPN, Sec. 4.2, "two 1024-d fc layers").
REPRESENTATION_SIZE = 1024
#: The keyword arguments FasterRCNN forwards to GeneralizedRCNNTransform through ``**kwargs``.
TRANSFORM_KEYWORDS = ("size_divisible", "fixed_size", *EXTRA_KEYWORDS)


class GeneralizedRCNN(nn.Module):
    """A two-stage detector assembled from its four stages.

    Args:
        backbone: [N, 3, H, W] -> feature maps (a Tensor or an OrderedDict of them).
        rpn: (images, features, targets) -> (proposals, losses).
        roi_heads: (features, proposals, image sizes, targets) -> (detections, losses).
        transform: normalises, resizes and batches images (and their targets), and maps
            detections back to the input images' pixels.
    """

    def __init__(
        self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module, transform: nn.Module
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: a dict of the four losses. Inference: per image {"boxes" [M, 4],
        "labels" [M], "scores" [M]} in the input image's pixels.

        Args:
            images: N tensors [3, H_i, W_i], values in [0, 1]; sizes may differ.
            targets: per image {"boxes": [G, 4] float (x1, y1, x2, y2) pixels,
                "labels": [G] int64}; required in training.
        """
        check_inputs(images, targets, self.training)
        self._check_dtype(images)
        original_image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]

        images, targets = self.transform(images, targets)
        check_degenerate_boxes(targets)
        features = self.backbone(images.tensors)
        if isinstance(features, Tensor):  # a single-level backbone
            features = OrderedDict([("0", features)])
        proposals, proposal_losses = self.rpn(images, features, targets)
        detections, detector_losses = self.roi_heads(
            features, proposals, images.image_sizes, targets
        )
        detections = self.transform.postprocess(
            detections, images.image_sizes, original_image_sizes
        )
        return self.eager_outputs({**detector_losses, **proposal_losses}, detections)

    def _check_dtype(self, images: list[Tensor]) -> None:
        """TypeError when the images' float dtype is not the parameters' (outside autocast)."""
        param = next((p for p in self.parameters() if p.is_floating_point()), None)
        if param is None or not len(images) or torch.is_autocast_enabled(param.device.type):
            return
        if images[0].is_floating_point() and images[0].dtype != param.dtype:
            raise TypeError(
                f"images: dtype {images[0].dtype} does not match the model's parameters "
                f"({param.dtype}); convert the images (image.to({param.dtype})) or the model"
            )

    def eager_outputs(
        self, losses: dict[str, Tensor], detections: list[dict[str, Tensor]]
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """The losses in training mode, the detections in evaluation mode."""
        return losses if self.training else detections


def check_inputs(
    images: list[Tensor], targets: list[dict[str, Tensor]] | None, training: bool
) -> None:
    """Raise ValueError on inputs torchvision would reject, and on non-finite values.

    Images must be a non-empty list of [D, H, W] float tensors (or one [N, D, H, W] tensor); in
    training, targets must be given, one per image, each with "boxes" [G, 4] float and
    "labels" [G] int64. Images and boxes must be free of NaN and inf. The checks, messages and
    exception types are :mod:`rcnn_lab.checks`'s.
    """
    images = checks.check_images(images)
    checks.check_finite_images(images)  # a NaN pixel would poison every loss and score
    if targets is None:
        if training:
            raise ValueError("targets should not be None in training mode (got None)")
        return
    checks.check_targets(targets, len(images))


def check_degenerate_boxes(targets: list[dict[str, Tensor]] | None) -> None:
    """Every (resized) box needs x2 > x1 and y2 > y1; name the first offender otherwise."""
    for index, target in enumerate(targets or []):
        boxes = target["boxes"]
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)  # [G]
        if degenerate.any():
            first = boxes[torch.where(degenerate)[0][0]].tolist()
            raise ValueError(
                "All bounding boxes should have positive height and width. "
                f"Found invalid box {first} for target at index {index}."
            )


def _default_anchor_generator() -> AnchorGenerator:
    """One anchor size per FPN level, three aspect ratios: 3 anchors per location and level."""
    return fpn_anchor_generator(FPN_ANCHOR_SIZES)


class FasterRCNN(GeneralizedRCNN):
    """Faster R-CNN (Ren et al. 2015) with torchvision 0.29's arguments, defaults and checks.

    Images: list of [3, H, W] tensors in [0, 1]. Training targets: per image {"boxes": [G, 4]
    float (x1, y1, x2, y2) pixels, "labels": [G] int64 in [1, C)}. Training returns
    {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}; evaluation
    returns per image {"boxes" [M, 4], "labels" [M], "scores" [M]}.

    Args:
        backbone: image -> feature maps; must have an ``out_channels`` attribute (the same
            channel count for every level).
        num_classes: number of classes C including the background; None only when a
            box_predictor is given.
        min_size: shorter image side after resizing, in pixels (a tuple: picked at random in
            training).
        max_size: cap on the longer side after resizing, in pixels.
        image_mean: per-channel mean subtracted from the images (None: ImageNet's).
        image_std: per-channel standard deviation dividing the images (None: ImageNet's).
        rpn_anchor_generator: AnchorGenerator making the anchors (None: 5 FPN sizes x 3 ratios).
        rpn_head: module giving objectness and deltas per anchor (None: an RPNHead).
        rpn_pre_nms_top_n_train: proposals kept per level before NMS, training.
        rpn_pre_nms_top_n_test: proposals kept per level before NMS, inference.
        rpn_post_nms_top_n_train: proposals kept per image after NMS, training.
        rpn_post_nms_top_n_test: proposals kept per image after NMS, inference.
        rpn_nms_thresh: IoU threshold of the NMS among proposals.
        rpn_fg_iou_thresh: anchors with IoU >= this with a GT box are RPN positives.
        rpn_bg_iou_thresh: anchors with IoU < this with every GT box are RPN negatives.
        rpn_batch_size_per_image: anchors sampled per image for the RPN losses.
        rpn_positive_fraction: largest share of positives among those anchors.
        rpn_score_thresh: proposals with objectness probability below this are dropped.
        box_roi_pool: module pooling RoI features, called as ``pool(features, proposals,
            image_shapes) -> [K, D, ph, pw]`` with an ``output_size`` (ph, pw) attribute: a
            :class:`~rcnn_lab.ops.poolers.MultiScaleRoIAlign`, a
            :class:`~rcnn_lab.ops.poolers.MultiScaleRoIPool` or any
            :class:`~rcnn_lab.ops.poolers.MultiScalePooler` (None: RoIAlign on FPN levels
            '0'-'3', 7x7). torchvision accepts only its MultiScaleRoIAlign here.
        box_head: pooled RoI features -> representation (None: TwoMLPHead of width 1024).
        box_predictor: representation -> class logits and per-class deltas (None: a
            FastRCNNPredictor for num_classes).
        box_score_thresh: detections must score above this (inference).
        box_nms_thresh: IoU threshold of the per-class NMS among detections (inference).
        box_detections_per_img: most detections returned per image (inference).
        box_fg_iou_thresh: proposals with IoU >= this with a GT box are foreground RoIs.
        box_bg_iou_thresh: proposals with IoU < this with every GT box are background RoIs.
        box_batch_size_per_image: RoIs sampled per image for the Fast R-CNN losses.
        box_positive_fraction: largest share of foreground among those RoIs.
        bbox_reg_weights: (wx, wy, ww, wh) scaling the RoI box deltas (None: (10, 10, 5, 5)).
        **kwargs: passed to GeneralizedRCNNTransform: size_divisible, fixed_size, _skip_resize.
            Any other keyword raises TypeError (torchvision ignores it silently, so a misspelt
            ``rpn_nms_tresh=`` would leave the default in place unnoticed).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        rpn_anchor_generator: AnchorGenerator | None = None,
        rpn_head: nn.Module | None = None,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_score_thresh: float = 0.0,
        box_roi_pool: nn.Module | None = None,
        box_head: nn.Module | None = None,
        box_predictor: nn.Module | None = None,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, float, float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        reject_unknown_keywords(type(self).__name__, kwargs, faster_rcnn_keywords())
        _check_parts(backbone, num_classes, rpn_anchor_generator, box_roi_pool, box_predictor)
        if box_roi_pool is not None and box_head is None:
            _check_pooler_output_size(box_roi_pool)
        _check_feature_names(backbone, box_roi_pool)
        out_channels = backbone.out_channels
        anchor_generator = rpn_anchor_generator or _default_anchor_generator()
        _check_anchor_counts(anchor_generator, rpn_head)
        if rpn_head is None:
            rpn_head = RPNHead(out_channels, anchor_generator.num_anchors_per_location()[0])
        rpn = RegionProposalNetwork(
            anchor_generator,
            rpn_head,
            rpn_fg_iou_thresh,
            rpn_bg_iou_thresh,
            rpn_batch_size_per_image,
            rpn_positive_fraction,
            {"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            {"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            rpn_nms_thresh,
            score_thresh=rpn_score_thresh,
        )
        if box_roi_pool is None:
            box_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
        if box_head is None:
            resolution = box_roi_pool.output_size[0]
            box_head = TwoMLPHead(out_channels * resolution**2, REPRESENTATION_SIZE)
        if box_predictor is None:
            box_predictor = FastRCNNPredictor(REPRESENTATION_SIZE, num_classes)
        roi_heads = RoIHeads(
            box_roi_pool,
            box_head,
            box_predictor,
            box_fg_iou_thresh,
            box_bg_iou_thresh,
            box_batch_size_per_image,
            box_positive_fraction,
            bbox_reg_weights,
            box_score_thresh,
            box_nms_thresh,
            box_detections_per_img,
        )
        mean = list(IMAGENET_MEAN) if image_mean is None else image_mean
        std = list(IMAGENET_STD) if image_std is None else image_std
        transform = GeneralizedRCNNTransform(min_size, max_size, mean, std, **kwargs)
        super().__init__(backbone, rpn, roi_heads, transform)


def faster_rcnn_keywords() -> tuple[str, ...]:
    """Every keyword argument FasterRCNN accepts: its named parameters, then the transform's."""
    named = [
        param.name
        for param in inspect.signature(FasterRCNN.__init__).parameters.values()
        if param.name != "self" and param.kind != param.VAR_KEYWORD
    ]
    return (*named, *TRANSFORM_KEYWORDS)


def _check_parts(
    backbone: nn.Module,
    num_classes: int | None,
    anchor_generator: object,
    box_roi_pool: object,
    box_predictor: nn.Module | None,
) -> None:
    """torchvision's constructor checks: out_channels, part types, num_classes xor predictor."""
    if not hasattr(backbone, "out_channels"):
        raise ValueError(
            "backbone should contain an attribute out_channels specifying the number of output "
            "channels (assumed to be the same for all the levels)"
        )
    if not isinstance(anchor_generator, (AnchorGenerator, type(None))):
        raise TypeError(
            "rpn_anchor_generator should be of type AnchorGenerator or None, "
            f"got {type(anchor_generator)}"
        )
    if box_roi_pool is not None and not isinstance(box_roi_pool, nn.Module):
        raise TypeError(
            "box_roi_pool should be None or a pooler module such as MultiScaleRoIAlign, "
            "MultiScaleRoIPool or another MultiScalePooler (an nn.Module called as "
            "pool(features, proposals, image_shapes) -> [K, D, ph, pw]), "
            f"got {type(box_roi_pool)}"
        )
    if num_classes is not None and box_predictor is not None:
        raise ValueError("num_classes should be None when box_predictor is specified")
    if num_classes is None and box_predictor is None:
        raise ValueError("num_classes should not be None when box_predictor is not specified")


def _check_pooler_output_size(box_roi_pool: nn.Module) -> None:
    """The default box head is sized from ``box_roi_pool.output_size``: it must be (ph, pw)."""
    size = getattr(box_roi_pool, "output_size", None)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise TypeError(
            "box_roi_pool needs an output_size attribute (ph, pw) of two positive ints to size "
            f"the default box head, got {size!r} on {type(box_roi_pool).__name__}; "
            "give it one, or pass box_head= as well"
        )


def _check_feature_names(backbone: nn.Module, box_roi_pool: nn.Module | None) -> None:
    """A pooler's featmap_names the backbone does not produce: ValueError if none of them is,
    a warning naming the missing ones otherwise (torchvision skips them silently).

    Only where both declare their names (``backbone.featmap_names``, as
    :class:`~rcnn_lab.backbone.BackboneWithFPN` does, and ``box_roi_pool.featmap_names``).
    """
    produced = getattr(backbone, "featmap_names", None)
    wanted = getattr(box_roi_pool, "featmap_names", None)
    if produced is None or wanted is None:
        return
    missing = [name for name in wanted if name not in produced]
    if missing and len(missing) == len(wanted):
        raise ValueError(
            f"box_roi_pool.featmap_names {list(wanted)} names no feature map of the backbone, "
            f"which returns {list(produced)}"
        )
    if missing:
        warnings.warn(
            f"box_roi_pool.featmap_names lists {missing}, which the backbone does not return "
            f"(it returns {list(produced)}); those names are skipped",
            stacklevel=3,
        )


def _check_anchor_counts(anchor_generator: AnchorGenerator, rpn_head: nn.Module | None) -> None:
    """One RPN head serves every level, so every level needs the same anchors per location
    (and an explicit head must predict that many); raise ValueError naming the counts."""
    counts = anchor_generator.num_anchors_per_location()
    if len(set(counts)) > 1:
        raise ValueError(
            f"rpn_anchor_generator gives {counts} anchors per location on its levels, but the "
            "RPN head predicts the same number on every level: give every level as many "
            "sizes x aspect ratios"
        )
    logits = getattr(rpn_head, "cls_logits", None)
    predicted = getattr(logits, "out_channels", None)
    if counts and isinstance(predicted, int) and predicted != counts[0]:
        raise ValueError(
            f"rpn_head predicts {predicted} anchors per location (cls_logits.out_channels), "
            f"but rpn_anchor_generator makes {counts[0]}"
        )
