"""Op cases: nms, batched_nms, roi_align forward and backward, MultiScaleRoIAlign, anchors."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList

import rcnn_lab
from benchmarks import scenes
from benchmarks.case import Case, compare_close, compare_identical

IOU_THRESHOLD = 0.5
NMS_SIZES = (1000, 2000, 5000)
#: (label, N, C, H, W, K RoIs, spatial scale): a P4-like map for 2 images and a P2-like one
ROI_SHAPES = [
    ("2x256x50x68 K=512", 2, 256, 50, 68, 512, 1 / 16),
    ("1x256x200x272 K=1000", 1, 256, 200, 272, 1000, 1 / 4),
]
ROI_QUICK_SHAPES = [("1x8x16x20 K=16", 1, 8, 16, 20, 16, 1 / 4)]
OUTPUT_SIZE, SAMPLING_RATIO = 7, 2
#: FPN levels of a 800 x 1066 image padded to 800 x 1088: strides 4..64, as in ResNet-50-FPN
FPN_STRIDES = {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}
FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * len(FPN_SIZES)


def _pair(ours, theirs, *inputs) -> dict:
    """Both implementations bound to the same inputs, as the harness calls them."""
    return {"rcnn_lab": lambda: ours(*inputs), "torchvision": lambda: theirs(*inputs)}


def nms_cases(device: torch.device, quick: bool) -> list[Case]:
    cases = []
    for scene, make in (("uniform", scenes.uniform_boxes), ("clustered", scenes.clustered_boxes)):
        for n in (200,) if quick else NMS_SIZES:
            boxes, scores = make(n, n, device)
            cases.append(
                Case(
                    name=f"nms {scene} {n}",
                    group="op",
                    params=f"N={n}, IoU {IOU_THRESHOLD}",
                    impls=_pair(
                        rcnn_lab.ops.nms, torchvision.ops.nms, boxes, scores, IOU_THRESHOLD
                    ),
                    compare=compare_identical,
                    repeats=15,
                )
            )
    return cases


def batched_nms_cases(device: torch.device, quick: bool) -> list[Case]:
    # <= 4000 coordinates: one NMS with per-class offsets; above: NMS class by class
    sizes = [(300, 10)] if quick else [(1000, 80), (20_000, 80)]
    cases = []
    for n, classes in sizes:
        b, s, i = scenes.class_boxes(n, classes, n + classes, device)
        cases.append(
            Case(
                name=f"batched_nms {n}",
                group="op",
                params=f"N={n}, {classes} classes",
                impls=_pair(
                    rcnn_lab.ops.batched_nms, torchvision.ops.batched_nms, b, s, i, IOU_THRESHOLD
                ),
                compare=compare_identical,
                repeats=9,
            )
        )
    return cases


def _roi_align_call(fn, x, rois, scale, backward, grad):
    def call():
        if backward:
            x.grad = None
            fn(x, rois, OUTPUT_SIZE, scale, SAMPLING_RATIO).backward(grad)
            return x.grad
        with torch.no_grad():
            return fn(x, rois, OUTPUT_SIZE, scale, SAMPLING_RATIO)

    return call


def roi_align_cases(device: torch.device, quick: bool) -> list[Case]:
    cases = []
    for label, n, c, h, w, k, scale in ROI_QUICK_SHAPES if quick else ROI_SHAPES:
        g = torch.Generator().manual_seed(0)
        rois = scenes.make_rois(n, h, w, k, scale, device)
        grad = torch.randn(k, c, OUTPUT_SIZE, OUTPUT_SIZE, generator=g).to(device)
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            x = torch.randn(n, c, h, w, generator=g).to(device).requires_grad_(backward)
            impls = {
                "rcnn_lab": _roi_align_call(rcnn_lab.ops.roi_align, x, rois, scale, backward, grad),
                "torchvision": _roi_align_call(
                    torchvision.ops.roi_align, x, rois, scale, backward, grad
                ),
            }
            cases.append(
                Case(
                    name=f"roi_align {mode} {label.split()[0]}",
                    group="op",
                    params=f"{label}, sr={SAMPLING_RATIO}",
                    impls=impls,
                    compare=compare_close,
                    repeats=7,
                )
            )
    return cases


def _fpn_features(device, quick: bool, batch: int, channels: int):
    """Random FPN-like feature maps of a padded image, the image size and the padded size."""
    image_size, padded = ((64, 85), (64, 96)) if quick else ((800, 1066), (800, 1088))
    g = torch.Generator().manual_seed(3)
    features = OrderedDict(
        (name, torch.randn(batch, channels, -(-padded[0] // s), -(-padded[1] // s), generator=g))
        for name, s in FPN_STRIDES.items()
    )
    return {k: v.to(device) for k, v in features.items()}, image_size, padded


def multiscale_roi_align_case(device: torch.device, quick: bool) -> Case:
    batch, channels, k = (1, 8, 20) if quick else (1, 256, 1000)
    features, image_size, _ = _fpn_features(device, quick, batch, channels)
    boxes = [scenes.proposals(image_size, k, seed=i, device=device) for i in range(batch)]
    sizes = [image_size] * batch
    names = ["0", "1", "2", "3"]
    ours = rcnn_lab.ops.MultiScaleRoIAlign(names, OUTPUT_SIZE, SAMPLING_RATIO)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, OUTPUT_SIZE, SAMPLING_RATIO)
    return Case(
        name="MultiScaleRoIAlign",
        group="op",
        params=f"{batch}x{channels}, image {image_size[0]}x{image_size[1]}, K={k}",
        impls={
            "rcnn_lab": torch.no_grad()(lambda: ours(features, boxes, sizes)),
            "torchvision": torch.no_grad()(lambda: theirs(features, boxes, sizes)),
        },
        compare=compare_close,
        repeats=7,
    )


def anchors_case(device: torch.device, quick: bool) -> Case:
    batch = 2
    features, image_size, padded = _fpn_features(device, quick, batch, channels=1)
    tensors = torch.zeros(batch, 3, *padded, device=device)
    sizes = [image_size] * batch
    maps = list(features.values())
    ours = rcnn_lab.AnchorGenerator(FPN_SIZES, ASPECT_RATIOS)
    theirs = TVAnchorGenerator(FPN_SIZES, ASPECT_RATIOS)
    ours_list, theirs_list = rcnn_lab.ImageList(tensors, sizes), TVImageList(tensors, sizes)
    return Case(
        name="anchors",
        group="op",
        params=f"{batch} images {padded[0]}x{padded[1]}, 5 levels, 3 ratios",
        impls={
            "rcnn_lab": lambda: ours(ours_list, maps),
            "torchvision": lambda: theirs(theirs_list, maps),
        },
        compare=compare_identical,
        repeats=15,
    )


#: factory key -> builder of the cases whose names start with that key
OP_FACTORIES = {
    "nms": nms_cases,
    "batched_nms": batched_nms_cases,
    "roi_align": roi_align_cases,
    "MultiScaleRoIAlign": lambda device, quick: [multiscale_roi_align_case(device, quick)],
    "anchors": lambda device, quick: [anchors_case(device, quick)],
}
