"""Model cases: RPN and RoI heads alone, end-to-end inference, one training step.

Both detectors are built by their own builder with ``weights=None, weights_backbone=None`` and
share one state_dict. Random weights are made realistic first (on torchvision's model, at a
small image size to keep it quick): BatchNorm statistics measured on one pass and final layers
whose scores spread (``rcnn_lab.testing``), so that NMS and the score threshold see the
work a trained model gives them. Every BatchNorm is then frozen (torchvision's FrozenBatchNorm2d
in torchvision's model, rcnn_lab's in ours), the layout of the pretrained detectors, and the
trunk's first two stages stop training, as with pretrained weights (3 trainable stages).
"""

from __future__ import annotations

import functools

import torch
import torchvision
import torchvision.models.detection as tvd
from torch import nn
from torchvision.models.detection.image_list import ImageList as TVImageList

import rcnn_lab
from benchmarks import scenes
from benchmarks.case import Case, max_abs_diff

FULL_SIZE = (800, 1066)  # COCO-like: the transform's min_size 800 leaves it unscaled
QUICK_SIZE = (64, 85)
#: quick mode: small images and few proposals, as in tests/test_faster_rcnn.py
QUICK_KWARGS = dict(
    min_size=64,
    max_size=96,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=150,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=150,
    box_batch_size_per_image=64,
)
CALIBRATION = dict(min_size=(160,), max_size=224)  # BatchNorm statistics and head spread
FROZEN_TRUNK_STAGES = ("backbone.body.conv1.", "backbone.body.layer1.")
BOXES_PER_IMAGE = 3


def freeze_batchnorm(module: nn.Module, frozen: type) -> None:
    """Replace every BatchNorm2d below ``module`` by ``frozen`` with the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            replacement = frozen(child.num_features, eps=child.eps)
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                getattr(replacement, buffer).copy_(getattr(child, buffer).detach())
            setattr(module, name, replacement)
        else:
            freeze_batchnorm(child, frozen)


def _realistic_weights(model: nn.Module) -> None:
    """Measured BatchNorm statistics and spread head outputs, computed at a small image size."""
    # imported here: rcnn_lab.viz pulls in matplotlib, which the op cases do not need
    from rcnn_lab.testing import calibrate_batchnorm, spread_head_weights

    size = (model.transform.min_size, model.transform.max_size)
    model.transform.min_size, model.transform.max_size = CALIBRATION.values()
    h, w = 160, 213
    calibrate_batchnorm(model, scenes.images(2, h, w), scenes.targets(2, h, w))
    spread_head_weights(model, scenes.images(2, h, w))
    model.transform.min_size, model.transform.max_size = size


@functools.lru_cache(maxsize=2)
def build_pair(builder: str, device: str, quick: bool) -> tuple[nn.Module, nn.Module]:
    """(rcnn_lab's, torchvision's) ``builder`` model in eval mode with the same weights."""
    kwargs = QUICK_KWARGS if quick else {}
    torch.manual_seed(0)
    theirs = getattr(tvd, builder)(weights=None, weights_backbone=None, **kwargs)
    with torch.no_grad():
        _realistic_weights(theirs)
        freeze_batchnorm(theirs, torchvision.ops.FrozenBatchNorm2d)
    ours = getattr(rcnn_lab, builder)(weights=None, weights_backbone=None, **kwargs)
    freeze_batchnorm(ours, rcnn_lab.FrozenBatchNorm2d)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for model in (ours, theirs):
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(FROZEN_TRUNK_STAGES))
        model.eval().to(device)
    return ours, theirs


def compare_detections(ours: list[dict], theirs: list[dict]) -> dict:
    """Same labels in the same order, and the largest box and score differences."""
    same = len(ours) == len(theirs) and all(
        torch.equal(a["labels"], b["labels"]) for a, b in zip(ours, theirs)
    )
    boxes = [d["boxes"] for d in ours], [d["boxes"] for d in theirs]
    scores = [d["scores"] for d in ours], [d["scores"] for d in theirs]
    return {
        "same_labels": same,
        "detections": sum(len(d["labels"]) for d in theirs),
        "max_box_diff": max_abs_diff(*boxes) if same else None,
        "max_score_diff": max_abs_diff(*scores) if same else None,
    }


def _model_inputs(device, quick: bool, batch: int) -> list[torch.Tensor]:
    return scenes.images(batch, *(QUICK_SIZE if quick else FULL_SIZE), device=device)


def inference_case(
    builder: str, batch: int, device, quick: bool, prepare=None, label: str = "", note: str = ""
) -> Case:
    """End-to-end inference, rcnn_lab vs torchvision with the same weights; ``prepare`` (e.g.
    ``rcnn_lab.optimize_for_inference``) transforms rcnn_lab's model first, ``label`` prefixes
    the case name and ``note`` is appended to its parameters."""
    ours, theirs = build_pair(builder, str(device), quick)
    if prepare is not None:
        ours = prepare(ours)
    images = _model_inputs(device, quick, batch)
    h, w = images[0].shape[-2:]
    prefix, suffix = (f"{label} " if label else ""), (f", {note}" if note else "")
    return Case(
        name=f"{prefix}{builder.removeprefix('fasterrcnn_')} b{batch}",
        group="model",
        params=f"inference, {batch}x{h}x{w}{suffix}",
        impls={
            "rcnn_lab": torch.no_grad()(lambda: ours(images)),
            "torchvision": torch.no_grad()(lambda: theirs(images)),
        },
        compare=compare_detections,
        repeats=5,
        warmup=0,  # the parity, counted and memory calls warm up
    )


@torch.no_grad()
def _stage_inputs(theirs: nn.Module, images: list[torch.Tensor]):
    """The transformed images, the features, and torchvision's proposals for them."""
    image_list, _ = theirs.transform(images)
    features = theirs.backbone(image_list.tensors)
    proposals, _ = theirs.rpn(image_list, features)
    return image_list, features, proposals


def head_cases(device, quick: bool) -> list[Case]:
    """The RPN and the RoI heads alone, on features and proposals of one image."""
    ours, theirs = build_pair("fasterrcnn_resnet50_fpn", str(device), quick)
    tv_list, features, proposals = _stage_inputs(theirs, _model_inputs(device, quick, 1))
    our_list = rcnn_lab.ImageList(tv_list.tensors, tv_list.image_sizes)
    assert isinstance(tv_list, TVImageList)
    sizes = tv_list.image_sizes
    shape = "x".join(map(str, tv_list.tensors.shape[-2:]))
    return [
        Case(
            name="rpn",
            group="module",
            params=f"eval, 1 image {shape}, FPN features",
            impls={
                "rcnn_lab": torch.no_grad()(lambda: ours.rpn(our_list, features)[0]),
                "torchvision": torch.no_grad()(lambda: theirs.rpn(tv_list, features)[0]),
            },
            compare=lambda a, b: {"max_abs_diff": max_abs_diff(a, b)},
            repeats=7,
        ),
        Case(
            name="roi_heads",
            group="module",
            params=f"eval, 1 image, {len(proposals[0])} proposals",
            impls={
                "rcnn_lab": torch.no_grad()(lambda: ours.roi_heads(features, proposals, sizes)[0]),
                "torchvision": torch.no_grad()(
                    lambda: theirs.roi_heads(features, proposals, sizes)[0]
                ),
            },
            compare=compare_detections,
            repeats=7,
        ),
    ]


def _train_step(model: nn.Module, images, targets):
    def step():
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)  # the samplers draw the same anchors and proposals in both
        losses = model(images, targets)
        sum(losses.values()).backward()
        model.eval()
        return {k: v.detach() for k, v in losses.items()}

    return step


def train_case(device, quick: bool) -> Case:
    ours, theirs = build_pair("fasterrcnn_resnet50_fpn", str(device), quick)
    h, w = QUICK_SIZE if quick else FULL_SIZE
    images = scenes.images(2, h, w, device=device)
    targets = scenes.targets(2, h, w, BOXES_PER_IMAGE, device=device)
    return Case(
        name="train step",
        group="train",
        params=f"resnet50_fpn, 2x{h}x{w}, {BOXES_PER_IMAGE} boxes each, forward+backward",
        impls={
            "rcnn_lab": _train_step(ours, images, targets),
            "torchvision": _train_step(theirs, images, targets),
        },
        compare=lambda a, b: {"max_loss_diff": max_abs_diff(a, b)},
        repeats=3,
        warmup=0,
    )


#: factory key -> builder of the cases whose names start with that key
MODEL_FACTORIES = {
    "rpn": lambda device, quick: head_cases(device, quick)[:1],
    "roi_heads": lambda device, quick: head_cases(device, quick)[1:],
    "resnet50_fpn": lambda device, quick: [
        inference_case("fasterrcnn_resnet50_fpn", batch, device, quick) for batch in (1, 2)
    ],
    "mobilenet_v3_large_fpn": lambda device, quick: [
        inference_case("fasterrcnn_mobilenet_v3_large_fpn", 1, device, quick)
    ],
    "train": lambda device, quick: [train_case(device, quick)],
}
