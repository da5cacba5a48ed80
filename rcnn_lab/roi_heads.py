"""RoI heads: from RPN proposals to classified, refined detections (Fast R-CNN, Sec. 2; Faster
R-CNN, Sec. 3.2).

Training: each image's ground-truth boxes join its proposals, every proposal is matched to a
ground-truth box (IoU >= 0.5 foreground, < 0.5 background), 512 are sampled with at most 25 %
foreground, and the two Fast R-CNN losses are computed on them. Inference: the class scores and
per-class boxes of every proposal are turned into at most 100 detections per image.

Shapes: N images, K RoIs (proposals) in the batch, C classes (background = class 0),
G ground-truth boxes of an image, D feature size after the box head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from rcnn_lab.box_coder import SMOOTH_L1_BETA, BoxCoder
from rcnn_lab.checks import check_callables, check_label_range, check_targets
from rcnn_lab.fpn import conv_norm
from rcnn_lab.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher, MatcherProtocol
from rcnn_lab.ops.boxes import box_iou
from rcnn_lab.ops.nms_per_image import batched_nms_per_image, clip_boxes_to_images
from rcnn_lab.sampler import BalancedPositiveNegativeSampler, SamplerProtocol

#: Label of the background class, and the label of proposals the sampler must ignore.
BACKGROUND, IGNORE = 0, -1
#: Box regression weights (wx, wy, ww, wh) of Fast R-CNN's head, used when none are given.
DEFAULT_BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
#: Boxes narrower or shorter than this (pixels) are dropped before NMS (they cannot be objects).
MIN_DETECTION_SIZE = 1e-2


class TwoMLPHead(nn.Module):
    """Two fully connected layers on the flattened RoI features (the FPN paper's "2fc" head).

    Args:
        in_channels: size of one flattened RoI feature, e.g. 256 * 7 * 7.
        representation_size: width D of both layers (1024 in torchvision).
    """

    def __init__(self, in_channels: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        """[K, channels, h, w] pooled RoI features -> [K, D] representation."""
        x = x.flatten(start_dim=1)  # [K, channels*h*w]
        return F.relu(self.fc7(F.relu(self.fc6(x))))


def _conv_norm_relu(
    in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module] | None
) -> nn.Sequential:
    """:func:`~rcnn_lab.fpn.conv_norm` (3x3) followed by a ReLU: keys ``0.weight`` (conv) and
    ``1.*`` (norm), the layout of torchvision's ``Conv2dNormActivation``."""
    return nn.Sequential(
        *conv_norm(in_channels, out_channels, 3, norm_layer), nn.ReLU(inplace=True)
    )


class FastRCNNConvFCHead(nn.Sequential):
    """Convolutions then fully connected layers on RoI features (the "4conv1fc" head of v2).

    Args:
        input_size: (channels, height, width) of one pooled RoI feature.
        conv_layers: output channels of each 3x3 convolution block.
        fc_layers: output width of each fully connected layer (the last one is D).
        norm_layer: normalisation after each convolution (e.g. ``nn.BatchNorm2d``), or None.
    """

    def __init__(
        self,
        input_size: tuple[int, int, int],
        conv_layers: list[int],
        fc_layers: list[int],
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        channels, height, width = input_size
        blocks: list[nn.Module] = []
        for out_channels in conv_layers:
            blocks.append(_conv_norm_relu(channels, out_channels, norm_layer))
            channels = out_channels
        blocks.append(nn.Flatten())  # [K, channels*height*width]
        features = channels * height * width
        for out_features in fc_layers:
            blocks += [nn.Linear(features, out_features), nn.ReLU(inplace=True)]
            features = out_features
        super().__init__(*blocks)
        # He initialisation for the ReLU convolutions (the Linear layers keep PyTorch's default)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class FastRCNNPredictor(nn.Module):
    """Class logits and per-class box deltas from each RoI's representation.

    Args:
        in_channels: width D of the box head's output.
        num_classes: C, background included.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[K, D] (or [K, D, 1, 1]) -> class logits [K, C] and box deltas [K, C*4]."""
        if x.dim() == 4 and tuple(x.shape[2:]) != (1, 1):
            raise ValueError(
                "FastRCNNPredictor: expected x of shape [K, D] or [K, D, 1, 1], "
                f"got {tuple(x.shape)}"
            )
        x = x.flatten(start_dim=1)  # [K, D]
        return self.cls_score(x), self.bbox_pred(x)


def fastrcnn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
) -> tuple[Tensor, Tensor]:
    """The two Fast R-CNN losses over the sampled RoIs (Fast R-CNN, Sec. 2.3, Eq. 1).

    Classification is the mean cross-entropy over all K sampled RoIs. Box regression is the
    smooth-L1 distance between the deltas predicted *for the RoI's ground-truth class* and the
    target deltas, summed over foreground RoIs and divided by K (not by the foreground count, so
    an image with few objects does not get its few box errors blown up).

    Deliberate difference from torchvision: with no sampled RoI at all (K = 0: the RPN kept no
    proposal and no image has a ground-truth box) torchvision's two losses are NaN, a mean over
    nothing, so the summed training loss is NaN too and a loop that stops on a non-finite loss
    (torchvision's reference script does) stops. Here both losses are then 0, computed from
    the (empty) head outputs so that ``backward()`` still works and gives every head parameter
    a zero gradient.

    Args:
        class_logits: [K, C].
        box_regression: [K, C*4] deltas for every class.
        labels: per image [K_i] int64 class of each sampled RoI (0 = background).
        regression_targets: per image [K_i, 4] target deltas.

    Returns:
        (loss_classifier, loss_box_reg), two scalars.
    """
    num_rois = class_logits.shape[0]
    if num_rois == 0:  # a shape, known on the host: no sync
        # sums over empty tensors: 0, yet attached to the graph of the heads
        return class_logits.sum(), box_regression.sum()
    labels_all = torch.cat(labels, dim=0)  # [K]
    targets_all = torch.cat(regression_targets, dim=0)  # [K, 4]
    loss_classifier = F.cross_entropy(class_logits, labels_all)

    deltas = box_regression.reshape(num_rois, box_regression.shape[-1] // 4, 4)  # [K, C, 4]
    foreground = torch.where(labels_all > BACKGROUND)[0]
    box_loss = F.smooth_l1_loss(
        deltas[foreground, labels_all[foreground]],  # [F, 4]: only the true class's deltas
        targets_all[foreground],
        beta=SMOOTH_L1_BETA,
        reduction="sum",
    )
    return loss_classifier, box_loss / labels_all.numel()


class RoIHeads(nn.Module):
    """Fast R-CNN's detection stage on top of the RPN's proposals (boxes only).

    Args:
        box_roi_pool: pools a fixed-size feature per RoI (a ``MultiScaleRoIAlign``).
        box_head: pooled features [K, ...] -> representation [K, D] (e.g. ``TwoMLPHead``).
        box_predictor: [K, D] -> (class logits [K, C], box deltas [K, C*4]).
        fg_iou_thresh, bg_iou_thresh: a proposal is foreground if its best IoU with a
            ground-truth box is >= fg_iou_thresh, background if < bg_iou_thresh, ignored between.
        batch_size_per_image: RoIs sampled per image for the losses (512).
        positive_fraction: largest share of foreground RoIs in that sample (0.25).
        bbox_reg_weights: (wx, wy, ww, wh) of the box coder; None means (10, 10, 5, 5).
        score_thresh: inference keeps (RoI, class) pairs whose softmax score exceeds this.
        nms_thresh: IoU above which a lower-scoring detection of the same class is suppressed.
        detections_per_img: the most detections returned per image.
        mask_roi_pool, mask_head, mask_predictor: accepted for torchvision's signature; Mask
            R-CNN is not implemented, so anything but None raises NotImplementedError.
        keypoint_roi_pool, keypoint_head, keypoint_predictor: the same for Keypoint R-CNN.
        proposal_matcher: keyword-only; matches proposals to ground truth
            (:class:`~rcnn_lab.matcher.MatcherProtocol`). None: a :class:`Matcher` with the two
            thresholds and no low-quality matches, as in torchvision.
        fg_bg_sampler: keyword-only; picks the RoIs of the losses
            (:class:`~rcnn_lab.sampler.SamplerProtocol`). None: a
            :class:`BalancedPositiveNegativeSampler` of ``batch_size_per_image`` and
            ``positive_fraction``.
        box_similarity: keyword-only; ``(gt [G, 4], proposals [K_i, 4]) -> [G, K_i]`` quality
            fed to the matcher. None: :func:`~rcnn_lab.ops.boxes.box_iou`.

    The three keyword-only parts are rcnn_lab's addition (torchvision builds them inside and
    never calls its ``box_similarity``); with the defaults the module is torchvision's.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float] | None,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        keypoint_roi_pool: nn.Module | None = None,
        keypoint_head: nn.Module | None = None,
        keypoint_predictor: nn.Module | None = None,
        *,
        proposal_matcher: MatcherProtocol | None = None,
        fg_bg_sampler: SamplerProtocol | None = None,
        box_similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        check_callables(
            proposal_matcher=proposal_matcher,
            fg_bg_sampler=fg_bg_sampler,
            box_similarity=box_similarity,
        )
        extras = {
            "mask_roi_pool": mask_roi_pool,
            "mask_head": mask_head,
            "mask_predictor": mask_predictor,
            "keypoint_roi_pool": keypoint_roi_pool,
            "keypoint_head": keypoint_head,
            "keypoint_predictor": keypoint_predictor,
        }
        given = [name for name, module in extras.items() if module is not None]
        if given:
            raise NotImplementedError(
                f"RoIHeads: mask/keypoint branches are not implemented: {given}"
            )
        self.box_similarity = box_similarity or box_iou
        # every proposal gets a verdict; no low-quality rescue (the GT boxes are proposals too)
        self.proposal_matcher = proposal_matcher or Matcher(
            fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False
        )
        self.fg_bg_sampler = fg_bg_sampler or BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self.box_coder = BoxCoder(bbox_reg_weights or DEFAULT_BBOX_REG_WEIGHTS)
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        for name in extras:  # kept as attributes: code written for torchvision may read them
            setattr(self, name, None)

    def has_mask(self) -> bool:
        """Always False: there is no mask branch (Mask R-CNN is out of scope)."""
        return False

    def has_keypoint(self) -> bool:
        """Always False: there is no keypoint branch."""
        return False

    def check_targets(self, targets: list[dict[str, Tensor]] | None) -> None:
        """Training needs targets, each with "boxes" [G, 4] float and "labels" [G] int64
        (:func:`rcnn_lab.checks.check_targets`; ValueError, or InputTypeError for a dtype)."""
        if targets is None:
            raise ValueError("RoIHeads: targets should not be None in training mode")
        check_targets(targets, len(targets), finite=False)

    def add_gt_proposals(self, proposals: list[Tensor], gt_boxes: list[Tensor]) -> list[Tensor]:
        """Append each image's ground-truth boxes to its proposals ([K_i + G_i, 4] each).

        Early in training the RPN proposes little of value; the GT boxes guarantee that every
        object has at least one perfectly matching, foreground RoI.
        """
        return [torch.cat((boxes, gt)) for boxes, gt in zip(proposals, gt_boxes, strict=True)]

    @torch.no_grad()
    def assign_targets_to_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Match proposals to ground truth; returns per image the matched GT index [K_i]
        (clamped to >= 0) and the class label [K_i] (0 background, -1 ignored)."""
        matched_idxs, labels = [], []
        for boxes, gt, gt_classes in zip(proposals, gt_boxes, gt_labels, strict=True):
            if gt.numel() == 0:  # an image without objects: every proposal is background
                matched = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
                classes = torch.zeros_like(matched)
            else:
                quality = self.box_similarity(gt, boxes)  # [G, K_i]
                matches = self.proposal_matcher(quality)  # [K_i]: gt index or < 0
                matched = matches.clamp(min=0)
                classes = gt_classes[matched].to(torch.int64)
                classes[matches == BELOW_LOW_THRESHOLD] = BACKGROUND
                classes[matches == BETWEEN_THRESHOLDS] = IGNORE
            matched_idxs.append(matched)
            labels.append(classes)
        return matched_idxs, labels

    def subsample(self, labels: list[Tensor]) -> list[Tensor]:
        """Indices (ascending) of the RoIs the balanced sampler keeps, per image."""
        positives, negatives = self.fg_bg_sampler(labels)
        return [torch.where(pos | neg)[0] for pos, neg in zip(positives, negatives, strict=True)]

    def select_training_samples(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]] | None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Add GT boxes, match, sample; returns per image the sampled RoIs [S_i, 4], their
        matched GT indices [S_i], labels [S_i] and regression targets [S_i, 4]."""
        self.check_targets(targets)
        dtype = proposals[0].dtype
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        gt_labels = [t["labels"] for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        sampled = self.subsample(labels)
        proposals = [boxes[keep] for boxes, keep in zip(proposals, sampled, strict=True)]
        labels = [classes[keep] for classes, keep in zip(labels, sampled, strict=True)]
        matched_idxs = [matched[keep] for matched, keep in zip(matched_idxs, sampled, strict=True)]
        # an image without objects regresses nothing: let its RoIs "match" themselves (0 deltas)
        matched_gt_boxes = [
            gt[matched] if gt.numel() else boxes
            for gt, matched, boxes in zip(gt_boxes, matched_idxs, proposals, strict=True)
        ]
        regression_targets = self.box_coder.encode(matched_gt_boxes, proposals)
        return proposals, matched_idxs, labels, list(regression_targets)

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Scores and per-class boxes of every RoI -> per image boxes [M, 4], scores [M],
        labels [M], M <= detections_per_img, sorted by decreasing score."""
        counts = [len(boxes) for boxes in proposals]
        if not counts:
            return [], [], []
        pred_boxes = self.box_coder.decode(box_regression, proposals)  # [K, C, 4]
        pred_scores = F.softmax(class_logits, dim=-1)  # [K, C]
        num_classes = pred_scores.shape[1]
        # every (RoI, foreground class) pair becomes a candidate detection of its own; images
        # are padded to the most RoIs (pad_sequence: one copy, no host read) and the padding
        # is marked invalid
        present = [torch.ones(n, dtype=torch.bool, device=pred_scores.device) for n in counts]
        present = pad_sequence(present, batch_first=True)[..., None].expand(-1, -1, num_classes - 1)
        boxes = pad_sequence(list(pred_boxes.split(counts)), batch_first=True)[:, :, 1:]
        scores = pad_sequence(list(pred_scores.split(counts)), batch_first=True)[:, :, 1:]
        classes = torch.arange(1, num_classes, device=scores.device).expand_as(scores)
        num_images = len(counts)
        boxes = clip_boxes_to_images(boxes.reshape(num_images, -1, 4), image_shapes)  # [N, K*, 4]
        scores, classes = scores.reshape(num_images, -1), classes.reshape(num_images, -1)
        sides = boxes[..., 2:] - boxes[..., :2]  # [N, K*, 2] (width, height)
        valid = (
            present.reshape(num_images, -1)
            & (scores > self.score_thresh)
            & (sides >= MIN_DETECTION_SIZE).all(dim=2)
        )
        keep = batched_nms_per_image(
            boxes,
            scores,
            classes,
            valid,
            self.nms_thresh,
            top_n=self.detections_per_img,
            max_group_size=max(counts),  # a class's candidates: one per RoI
        )  # per image, by decreasing score
        all_boxes = [b[k] for b, k in zip(boxes, keep, strict=True)]
        all_scores = [s[k] for s, k in zip(scores, keep, strict=True)]
        all_labels = [c[k] for c, k in zip(classes, keep, strict=True)]
        return all_boxes, all_scores, all_labels

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training: ([], {"loss_classifier", "loss_box_reg"}). Inference: (one dict per image
        with "boxes" [M, 4], "labels" [M], "scores" [M], {}).

        Args:
            features: feature maps by name, each [N, channels, H, W].
            proposals: per image [K_i, 4] (x1, y1, x2, y2) in resized-image pixels.
            image_shapes: per image (height, width) after resizing, before padding.
            targets: per image {"boxes": [G, 4] float, "labels": [G] int64}; training only.

        A training batch without any sampled RoI gives two zero losses where torchvision's are
        NaN (see :func:`fastrcnn_loss`).
        """
        _check_batch(features, proposals, image_shapes, targets)
        if self.training or targets is not None:
            self.check_targets(targets)
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_roi_pool(features, proposals, image_shapes)  # [K, ch, 7, 7]
        box_features = self.box_head(box_features)  # [K, D]
        class_logits, box_regression = self.box_predictor(box_features)  # [K, C], [K, C*4]
        if self.training:
            check_label_range(targets, class_logits.shape[-1])
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        detections = [
            {"boxes": b, "labels": c, "scores": s}
            for b, s, c in zip(boxes, scores, labels, strict=True)
        ]
        return detections, {}


def _check_batch(
    features: dict[str, Tensor],
    proposals: list[Tensor],
    image_shapes: list[tuple[int, int]],
    targets: list[dict[str, Tensor]] | None,
) -> None:
    """ValueError unless proposals, image_shapes (and targets) hold one entry per image of the
    features' batch: a short list would otherwise drop images or pool the wrong ones."""
    lengths = {"proposals": len(proposals), "image_shapes": len(image_shapes)}
    if targets is not None:
        lengths["targets"] = len(targets)
    first = next(iter(features.values()), None) if isinstance(features, dict) else None
    if isinstance(first, Tensor) and first.dim() == 4:
        batch = int(first.shape[0])
        expected = f"the features' batch of N = {batch} images"
    else:  # no batch to compare with: the lists must at least agree with each other
        batch = lengths["proposals"]
        expected = "a batch of images"
    if any(length != batch for length in lengths.values()):
        listed = ", ".join(f"len({name}) = {length}" for name, length in lengths.items())
        raise ValueError(f"RoIHeads: expected one entry per image of {expected}, got {listed}")
