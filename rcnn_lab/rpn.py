"""Region Proposal Network (Faster R-CNN, Ren et al. 2015, Sec. 3.1; with FPN, Lin et al. 2017).

A small network slides over every feature map: a 3x3 convolution (the paper's "sliding window")
then two sibling 1x1 convolutions predict, for each of the A anchors of every location, one
objectness logit and four box deltas. The deltas turn anchors into proposals; per image the
best-scoring proposals of each level are clipped, filtered, de-duplicated by NMS level by level,
and the ``post_nms_top_n`` best are kept. In training, anchors are matched to the ground truth
and a balanced mini-batch of them gives the two losses, ``loss_objectness`` and
``loss_rpn_box_reg``.

Shapes: N images, A anchors per location, H x W the grid of one level, L levels,
R anchors of an image summed over levels (sum of H*W*A), G ground-truth boxes of an image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcnn_lab.anchors import AnchorGenerator
from rcnn_lab.box_coder import SMOOTH_L1_BETA, BoxCoder
from rcnn_lab.checks import check_callables, check_targets
from rcnn_lab.image_list import ImageList
from rcnn_lab.matcher import BETWEEN_THRESHOLDS, Matcher, MatcherProtocol
from rcnn_lab.ops import boxes as box_ops
from rcnn_lab.ops.nms_per_image import batched_nms_per_image, clip_boxes_to_images
from rcnn_lab.sampler import BalancedPositiveNegativeSampler, SamplerProtocol

#: Proposals narrower or shorter than this many pixels are dropped (degenerate after clipping).
MIN_PROPOSAL_SIZE = 1e-3
#: The RPN's deltas are unweighted, unlike the RoI heads' (10, 10, 5, 5).
RPN_BOX_CODER_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_INIT_STD = 0.01  # the paper's initialisation: zero-mean Gaussian, std 0.01, zero bias


def _check_count(name: str, value: int, least: int) -> None:
    """Raise ValueError unless ``value`` is an integer >= ``least``."""
    if not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


class RPNHead(nn.Module):
    """Objectness logits and box deltas for every anchor of every feature level.

    Args:
        in_channels: channels of the feature maps (256 with an FPN).
        num_anchors: A, anchors per location (3 aspect ratios with one size per level).
        conv_depth: number of shared 3x3 conv + ReLU layers (1 in Faster R-CNN).

    State-dict keys (torchvision's): ``conv.{i}.0.weight/bias``, ``cls_logits.*``, ``bbox_pred.*``.
    """

    # version 2 nests the 3x3 conv as conv.0.0; version-1 checkpoints stored it as conv.weight
    _version = 2

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        _check_count("in_channels", in_channels, least=1)
        _check_count("num_anchors", num_anchors, least=1)
        _check_count("conv_depth", conv_depth, least=0)
        # each layer is Sequential(conv, relu): the keys read conv.0.0.weight, as in torchvision
        self.conv = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1),
                    nn.ReLU(inplace=True),
                )
                for _ in range(conv_depth)
            ]
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)  # one logit per anchor
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)  # 4 deltas each
        for layer in self.modules():  # same order as torchvision: same seed, same weights
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=_INIT_STD)
                nn.init.constant_(layer.bias, 0.0)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs) -> None:
        """Load checkpoints of either version, renaming version-1 keys ``conv.weight/bias``."""
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            for kind in ("weight", "bias"):
                old_key = f"{prefix}conv.{kind}"
                if old_key in state_dict:
                    state_dict[f"{prefix}conv.0.0.{kind}"] = state_dict.pop(old_key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Run the head on every level.

        Args:
            x: L feature maps [N, in_channels, H, W].

        Returns:
            logits: L tensors [N, A, H, W]; bbox_reg: L tensors [N, A*4, H, W]
            (channel a*4 + j is delta j of anchor a).
        """
        if not isinstance(x, (list, tuple)) or any(
            not isinstance(f, Tensor) or f.dim() != 4 for f in x
        ):
            seen = (
                [tuple(getattr(f, "shape", ())) for f in x]
                if isinstance(x, (list, tuple))
                else type(x).__name__
            )
            raise ValueError(f"x must be a list of [N, D, H, W] feature maps, got {seen}")
        logits, bbox_reg = [], []
        for feature in x:
            hidden = self.conv(feature)
            logits.append(self.cls_logits(hidden))
            bbox_reg.append(self.bbox_pred(hidden))
        return logits, bbox_reg


def permute_and_flatten(layer: Tensor, N: int, A: int, C: int, H: int, W: int) -> Tensor:
    """[N, A*C, H, W] head output -> [N, H*W*A, C], in the anchors' order (row, column, anchor)."""
    layer = layer.reshape(N, A, C, H, W)  # channel a*C + c is value c of anchor a
    return layer.permute(0, 3, 4, 1, 2).reshape(N, H * W * A, C)  # [N, H*W*A, C]


def concat_box_prediction_layers(
    box_cls: list[Tensor], box_regression: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Flatten the per-level head outputs into the anchors' order, level after level.

    Args:
        box_cls: L tensors [N, A*C, H, W] (C = 1 for the RPN).
        box_regression: L tensors [N, A*4, H, W].

    Returns:
        box_cls [N*R, C] and box_regression [N*R, 4], image-major, then level, row, column, anchor.
    """
    flat_cls, flat_reg = [], []
    for cls_per_level, reg_per_level in zip(box_cls, box_regression, strict=True):
        N, AxC, H, W = cls_per_level.shape
        A = reg_per_level.shape[1] // 4
        flat_cls.append(permute_and_flatten(cls_per_level, N, A, AxC // A, H, W))
        flat_reg.append(permute_and_flatten(reg_per_level, N, A, 4, H, W))
    cls = torch.cat(flat_cls, dim=1).flatten(0, -2)  # [N, R, C] -> [N*R, C]
    reg = torch.cat(flat_reg, dim=1).reshape(-1, 4)  # [N, R, 4] -> [N*R, 4]
    return cls, reg


class RPNPredictions(NamedTuple):
    """What the RPN predicts for a batch, before any selection (``predict``'s result)."""

    anchors: list[Tensor]  #: N tensors [R, 4], the anchors of every image
    objectness: Tensor  #: [N*R, 1] logits, image-major, then level, row, column, anchor
    pred_bbox_deltas: Tensor  #: [N*R, 4] deltas, in the same order
    proposals: Tensor  #: [N, R, 4], every anchor decoded with its (detached) deltas
    num_anchors_per_level: list[int]  #: L counts H*W*A summing to R


class PreNMSCandidates(NamedTuple):
    """The pre-NMS top-n of every level (:meth:`RegionProposalNetwork.select_top_n`)."""

    boxes: Tensor  #: [N, K, 4] decoded, not yet clipped
    scores: Tensor  #: [N, K] objectness probabilities
    levels: Tensor  #: [N, K] pyramid level of each
    indices: Tensor  #: [N, K] positions among the R anchors


class RegionProposalNetwork(nn.Module):
    """Proposals (and, in training, the two RPN losses) from a batch of feature maps.

    Args:
        anchor_generator: gives the R anchors of every image.
        head: gives per level the objectness logits [N, A, H, W] and deltas [N, A*4, H, W].
        fg_iou_thresh: IoU >= this with some ground truth makes an anchor positive (0.7).
        bg_iou_thresh: best IoU < this makes an anchor negative (0.3); in between it is ignored.
        batch_size_per_image: anchors sampled per image for the losses (256).
        positive_fraction: largest share of positives among them (0.5).
        pre_nms_top_n: ``{"training": int, "testing": int}``, proposals kept per level before NMS.
        post_nms_top_n: ``{"training": int, "testing": int}``, proposals kept per image after NMS.
        nms_thresh: IoU above which NMS suppresses a lower-scoring proposal of the same level.
        score_thresh: proposals with objectness probability below this are dropped.
        proposal_matcher: keyword-only; labels anchors from their quality matrix
            (:class:`~rcnn_lab.matcher.MatcherProtocol`). None: a :class:`Matcher` with the two
            thresholds and low-quality matches, as in torchvision.
        fg_bg_sampler: keyword-only; picks the anchors of the losses
            (:class:`~rcnn_lab.sampler.SamplerProtocol`). None: a
            :class:`BalancedPositiveNegativeSampler` of ``batch_size_per_image`` and
            ``positive_fraction``.
        box_similarity: keyword-only; ``(gt [G, 4], anchors [R, 4]) -> [G, R]`` quality fed to
            the matcher. None: :func:`~rcnn_lab.ops.boxes.box_iou`.

    The three keyword-only parts are rcnn_lab's addition; torchvision builds them inside. With
    the defaults the module is torchvision's, attribute for attribute.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float,
        score_thresh: float = 0.0,
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
        for name, top_n in (("pre_nms_top_n", pre_nms_top_n), ("post_nms_top_n", post_nms_top_n)):
            if not isinstance(top_n, dict) or not {"training", "testing"} <= set(top_n):
                raise ValueError(
                    f"{name} must be a dict with keys 'training' and 'testing', got {top_n!r}"
                )
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=RPN_BOX_CODER_WEIGHTS)
        self.box_similarity = box_similarity or box_ops.box_iou
        # low-quality matches: every object gets at least its best anchor (paper, Sec. 3.1.2)
        self.proposal_matcher = proposal_matcher or Matcher(
            fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True
        )
        self.fg_bg_sampler = fg_bg_sampler or BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self._pre_nms_top_n = pre_nms_top_n
        self._post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = MIN_PROPOSAL_SIZE

    def set_top_n(
        self,
        pre_nms_top_n: int | dict[str, int] | None = None,
        post_nms_top_n: int | dict[str, int] | None = None,
    ) -> None:
        """Change the proposals kept before and after NMS; an int sets both modes."""
        for name, value in (("pre_nms_top_n", pre_nms_top_n), ("post_nms_top_n", post_nms_top_n)):
            if value is None:
                continue
            if isinstance(value, int):
                value = {"training": value, "testing": value}
            if not isinstance(value, dict) or not {"training", "testing"} <= set(value):
                raise ValueError(
                    f"{name}: expected an int or a dict with keys 'training' and 'testing', "
                    f"got {value!r}"
                )
            setattr(self, f"_{name}", dict(value))

    def pre_nms_top_n(self) -> int:
        """Proposals kept per level before NMS, for the current mode (training or testing)."""
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        """Proposals kept per image after NMS, for the current mode (training or testing)."""
        return self._post_nms_top_n["training" if self.training else "testing"]

    @torch.no_grad()
    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Label every anchor and give it the ground-truth box it should regress to.

        Args:
            anchors: N tensors [R, 4].
            targets: N dicts with ``boxes`` [G, 4]; G = 0 marks a negative (background) image.

        Returns:
            labels: N float32 tensors [R]: 1 positive, 0 negative, -1 ignored.
            matched_gt_boxes: N tensors [R, 4]: the matched box (meaningful for positives only).
        """
        labels, matched_gt_boxes = [], []
        for anchors_per_image, targets_per_image in zip(anchors, targets, strict=True):
            gt_boxes = targets_per_image["boxes"]
            if gt_boxes.numel() == 0:  # a negative image: every anchor is background
                num_anchors = anchors_per_image.shape[0]
                labels.append(anchors_per_image.new_zeros((num_anchors,), dtype=torch.float32))
                matched_gt_boxes.append(torch.zeros_like(anchors_per_image))
                continue
            matched_idxs = self.proposal_matcher(self.box_similarity(gt_boxes, anchors_per_image))
            # the negative codes -1/-2 would index past a single gt: clamp, the box goes unused
            matched_gt_boxes.append(gt_boxes[matched_idxs.clamp(min=0)])
            labels.append(self._labels_from_matches(matched_idxs))
        return labels, matched_gt_boxes

    def _labels_from_matches(self, matched_idxs: Tensor) -> Tensor:
        """[R] matches -> [R] float32 labels: match 1, below-low 0, between thresholds -1.

        float32 in every case, as in torchvision (the values are exact in any dtype); note that
        binary_cross_entropy_with_logits then returns a float32 loss even for float64 logits.
        """
        labels = (matched_idxs >= 0).to(torch.float32)  # [R]; below-low is already 0
        ignored = matched_idxs == BETWEEN_THRESHOLDS
        return labels.masked_fill(ignored, -1.0)

    def top_n_indices(self, objectness: Tensor, num_anchors_per_level: list[int]) -> Tensor:
        """[N, K] indices into R of the ``pre_nms_top_n`` best logits of each level (K summed)."""
        top_n_idx, offset = [], 0
        for level_logits in objectness.split(num_anchors_per_level, dim=1):  # [N, H*W*A]
            k = min(self.pre_nms_top_n(), level_logits.shape[1])
            top_n_idx.append(level_logits.topk(k, dim=1).indices + offset)
            offset += level_logits.shape[1]
        return torch.cat(top_n_idx, dim=1)  # [N, K]

    #: torchvision's (private) name for top_n_indices.
    _get_top_n_idx = top_n_indices

    def select_top_n(
        self, proposals: Tensor, objectness: Tensor, num_anchors_per_level: list[int]
    ) -> PreNMSCandidates:
        """The ``pre_nms_top_n`` best-scoring proposals of every level: the first selection step
        of :meth:`filter_proposals`, public so that figures show exactly what the model keeps.

        Args:
            proposals: [N, R, 4] decoded boxes; objectness: [N, R] (or [N*R, 1]) logits.
            num_anchors_per_level: L counts H*W*A summing to R.
        """
        num_images, device = proposals.shape[0], proposals.device
        objectness = objectness.reshape(num_images, -1)  # [N, R]
        level_ids = [
            torch.full((n,), level, dtype=torch.int64, device=device)
            for level, n in enumerate(num_anchors_per_level)
        ]
        levels = torch.cat(level_ids)  # [R] the level of every anchor
        top_n_idx = self.top_n_indices(objectness, num_anchors_per_level)  # [N, K]
        batch_idx = torch.arange(num_images, device=device)[:, None]  # [N, 1]
        return PreNMSCandidates(
            boxes=proposals[batch_idx, top_n_idx],  # [N, K, 4]
            scores=torch.sigmoid(objectness[batch_idx, top_n_idx]),  # [N, K]
            levels=levels[top_n_idx],  # [N, K]
            indices=top_n_idx,
        )

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Select the final proposals of every image: the whole batch at once, no loop over images.

        Per level top-n, clip, drop tiny and unlikely boxes, NMS per level, the post-NMS top-n:
        torchvision's steps and results, with a fixed number of host reads for any batch size
        (:func:`~rcnn_lab.ops.nms_per_image.batched_nms_per_image`).

        Args:
            proposals: [N, R, 4] decoded boxes.
            objectness: [N*R, 1] (or [N, R]) logits.
            image_shapes: N (height, width) of the images before padding.
            num_anchors_per_level: L counts H*W*A summing to R.

        Returns:
            boxes: N tensors [<= post_nms_top_n, 4]; scores: N tensors of probabilities,
            both sorted by decreasing score.
        """
        num_images = proposals.shape[0]
        # the scores only rank and select boxes: no gradient flows back through them
        objectness = objectness.detach().reshape(num_images, -1)  # [N, R]
        top_boxes, top_scores, top_levels, _ = self.select_top_n(
            proposals, objectness, num_anchors_per_level
        )
        boxes = clip_boxes_to_images(top_boxes, image_shapes)  # [N, K, 4]
        sides = boxes[..., 2:] - boxes[..., :2]  # [N, K, 2] (width, height)
        # drop boxes under min_size (degenerate after clipping) and, optionally, unlikely ones
        # (>=: a 0.0 threshold keeps everything); masked, not removed: no host read
        valid = (sides >= self.min_size).all(dim=2) & (top_scores >= self.score_thresh)
        # levels as NMS groups: a box of one level never suppresses a box of another; NMS
        # gives each image's indices by decreasing score
        keep = batched_nms_per_image(
            boxes,
            top_scores,
            top_levels,
            valid,
            self.nms_thresh,
            top_n=self.post_nms_top_n(),
            max_group_size=self.pre_nms_top_n(),  # a level's candidates
        )
        final_boxes = [b[k] for b, k in zip(boxes, keep, strict=True)]
        final_scores = [s[k] for s, k in zip(top_scores, keep, strict=True)]
        return final_boxes, final_scores

    def compute_loss(
        self,
        objectness: Tensor,
        pred_bbox_deltas: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """The two RPN losses over a balanced sample of anchors (paper, Eq. 1).

        Args:
            objectness: [N*R, 1] logits; pred_bbox_deltas: [N*R, 4].
            labels: N tensors [R] (1, 0, -1); regression_targets: N tensors [R, 4].

        Returns:
            objectness_loss: mean binary cross-entropy over the sampled anchors.
            box_loss: smooth-L1 (beta 1/9) summed over the sampled positives, divided by the
            number of sampled anchors (positives and negatives).
        """
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        sampled_pos = torch.nonzero(torch.cat(pos_masks)).flatten()  # [num pos] into N*R
        sampled_neg = torch.nonzero(torch.cat(neg_masks)).flatten()  # [num neg] into N*R
        sampled = torch.cat([sampled_pos, sampled_neg])  # positives first, like torchvision
        all_labels = torch.cat(labels)  # [N*R]
        all_targets = torch.cat(regression_targets)  # [N*R, 4]
        box_loss = (
            F.smooth_l1_loss(
                pred_bbox_deltas[sampled_pos],
                all_targets[sampled_pos],
                beta=SMOOTH_L1_BETA,
                reduction="sum",
            )
            / sampled.numel()
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], all_labels[sampled]
        )
        return objectness_loss, box_loss

    def predict(self, images: ImageList, features: dict[str, Tensor]) -> RPNPredictions:
        """The first half of :meth:`forward`: head outputs, anchors and every decoded proposal.

        Args:
            images: the padded batch (its ``image_sizes`` fix the anchors).
            features: L feature maps [N, D, H, W] by name.
        """
        _check_batch(images, features)
        feature_maps = list(features.values())
        objectness, pred_bbox_deltas = self.head(feature_maps)
        anchors = self.anchor_generator(images, feature_maps)  # N tensors [R, 4]
        num_anchors_per_level = [o[0].numel() for o in objectness]  # A*H*W per level
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        # Faster R-CNN does not backpropagate through the proposals: decode detached deltas
        proposals = self.box_coder.decode(pred_bbox_deltas.detach(), anchors)  # [N*R, 1, 4]
        proposals = proposals.view(len(anchors), -1, 4)  # [N, R, 4]
        return RPNPredictions(
            anchors, objectness, pred_bbox_deltas, proposals, num_anchors_per_level
        )

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals for every image, plus the losses in training mode.

        Args:
            images: the padded batch (its ``image_sizes`` clip the proposals).
            features: L feature maps [N, D, H, W], e.g. an FPN's ``{"0": ..., "pool": ...}``.
            targets: in training, N dicts with ``boxes`` [G, 4] (x1, y1, x2, y2) in pixels.

        Returns:
            boxes: N tensors [<= post_nms_top_n, 4]; losses: ``{"loss_objectness",
            "loss_rpn_box_reg"}`` in training mode, ``{}`` otherwise.
        """
        anchors, objectness, pred_bbox_deltas, proposals, num_anchors_per_level = self.predict(
            images, features
        )
        num_images = len(anchors)
        boxes, _ = self.filter_proposals(
            proposals, objectness, images.image_sizes, num_anchors_per_level
        )
        losses: dict[str, Tensor] = {}
        if self.training:
            check_targets(targets, num_images, labels=False, finite=False, dtypes=False)
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
            loss_objectness, loss_rpn_box_reg = self.compute_loss(
                objectness, pred_bbox_deltas, labels, regression_targets
            )
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses


def _check_batch(images: ImageList, features: dict[str, Tensor]) -> None:
    """ValueError unless images.image_sizes, images.tensors and every feature map count the
    same images (the anchors follow image_sizes, the predictions the feature maps)."""
    num_sizes, num_images = len(images.image_sizes), int(images.tensors.shape[0])
    if num_sizes != num_images:
        raise ValueError(
            f"images.image_sizes lists {num_sizes} sizes but images.tensors holds a batch of "
            f"{num_images} images: expected one (height, width) per image"
        )
    for name, feature in features.items():
        if isinstance(feature, Tensor) and feature.dim() == 4 and feature.shape[0] != num_images:
            raise ValueError(
                f"features[{name!r}] holds a batch of {int(feature.shape[0])} images but "
                f"images.tensors holds {num_images}: expected the same batch"
            )
