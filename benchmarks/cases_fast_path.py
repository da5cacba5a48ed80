"""The opt-in inference fast path against torchvision's eager model.

``rcnn_lab.optimize_for_inference`` folds every FrozenBatchNorm into the convolution before it
and runs the convolutions channels-last. The case times it against torchvision's unchanged
model (the same weights, from :func:`benchmarks.cases_models.build_pair`), so its speed is what
someone swapping torchvision's detector for the optimised one would see.
"""

from __future__ import annotations

import torch

import rcnn_lab
from benchmarks.case import Case
from benchmarks.cases_models import _model_inputs, build_pair, compare_detections

BUILDER = "fasterrcnn_resnet50_fpn"


def fast_path_case(device, quick: bool, batch: int = 1) -> Case:
    """End-to-end inference: the optimised rcnn_lab model vs torchvision's, same weights."""
    ours, theirs = build_pair(BUILDER, str(device), quick)
    fast = rcnn_lab.optimize_for_inference(ours)  # a copy: ``ours`` stays the exact path
    images = _model_inputs(device, quick, batch)
    h, w = images[0].shape[-2:]
    return Case(
        name=f"fast_path {BUILDER.removeprefix('fasterrcnn_')} b{batch}",
        group="model",
        params=f"inference, {batch}x{h}x{w}, BN folded, channels-last",
        impls={
            "rcnn_lab": torch.no_grad()(lambda: fast(images)),
            "torchvision": torch.no_grad()(lambda: theirs(images)),
        },
        compare=compare_detections,
        repeats=5,
        warmup=0,  # the parity, counted and memory calls warm up
    )


#: factory key -> builder of the cases whose names start with that key
FAST_PATH_FACTORIES = {"fast_path": lambda device, quick: [fast_path_case(device, quick)]}
