"""The opt-in inference fast path against torchvision's eager model.

``rcnn_lab.optimize_for_inference`` folds every FrozenBatchNorm into the convolution before it
and runs the convolutions channels-last. The case times it against torchvision's unchanged
model (the same weights, from :func:`benchmarks.cases_models.build_pair`), so its speed is what
someone swapping torchvision's detector for the optimised one would see.
"""

from __future__ import annotations

import rcnn_lab
from benchmarks.case import Case
from benchmarks.cases_models import inference_case

BUILDER = "fasterrcnn_resnet50_fpn"


def fast_path_case(device, quick: bool, batch: int = 1) -> Case:
    """End-to-end inference: the optimised rcnn_lab model vs torchvision's, same weights."""
    # optimize_for_inference returns a copy: the exact model it starts from is left as it was
    return inference_case(
        BUILDER,
        batch,
        device,
        quick,
        prepare=rcnn_lab.optimize_for_inference,
        label="fast_path",
        note="BN folded, channels-last",
    )


#: factory key -> builder of the cases whose names start with that key
FAST_PATH_FACTORIES = {"fast_path": lambda device, quick: [fast_path_case(device, quick)]}
