"""Bad-input sweep over the public entry points, with torchvision 0.29 as the oracle.

One table, ``CASES``: each case gives the same malformed, degenerate, non-finite, mixed-dtype or
low-precision input to rcnn_lab and (where that is safe) to torchvision, and asserts either that
the two results are equal or that rcnn_lab raises a ValueError/TypeError whose message names the
bad argument (the runner and the input factories are in tests/bad_input_cases.py). Inputs that
could crash torchvision's C++ kernels (NaN or out-of-range RoIs) are never handed to it. A few
Hypothesis properties add random degenerate boxes. Models are tiny or small and built once.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision.models.detection as tvd
import torchvision.ops as tvops
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TVSampler
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator

import rcnn_lab
from rcnn_lab import ops
from tests.bad_input_cases import (
    ANCHOR_RATIOS,
    ANCHOR_SIZES,
    BAD,
    EQUAL,
    IMAGE_SIZES,
    NUM_CLASSES,
    RPN_ARGS,
    Case,
    WeightsRequested,
    box_targets,
    boxes_of,
    builder_pair,
    class_ids,
    cluster_boxes,
    degenerate_boxes,
    detector_pair,
    evaluate,
    feature,
    fpn_inputs,
    fpn_pair,
    fresh,
    good_rois,
    image_list,
    images,
    in_autocast,
    no_weight_download,
    op_case,
    proposals,
    pyramid,
    raises,
    random_boxes,
    roi_heads_kwargs,
    roi_heads_pair,
    rois_of,
    rpn_head_pair,
    rpn_pair,
    run_case,
    scores_for,
    seeded,
    structure,
    train,
    transform_pair,
    unordered_detections,
    with_warnings,
)

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
NAN, INF = float("nan"), float("inf")
#: boxes whose areas (~10^6) overflow float16 (max 65504): IoUs must not be computed in float16
LARGE = 2000.0


def nan_inf_boxes(dtype=F32):
    return boxes_of([[0, 0, NAN, 4], [0, -INF, 2, 2], [1, 1, INF, INF], [0, 0, 3, 3]], dtype)


def big(dtype):
    return lambda: cluster_boxes(60, dtype=dtype, scale=LARGE)


def big_scores(dtype):
    return lambda: scores_for(cluster_boxes(60), 3).to(dtype)


# ======================================================================== ops: box geometry


def geometry_cases() -> list[Case]:
    cases = [
        op_case("box_area", "int64", lambda: random_boxes(8).long()),
        op_case("box_area", "float16_large", lambda: random_boxes(8, dtype=F16, scale=LARGE)),
        op_case("box_area", "empty", lambda: torch.zeros(0, 4)),
        op_case("box_area", "degenerate", degenerate_boxes),
        op_case("box_area", "nan_inf", nan_inf_boxes),
        op_case("box_area", "batched_3d", lambda: random_boxes(6).reshape(2, 3, 4)),
        op_case(
            "box_area",
            "last_dim_5",
            torch.zeros(3, 5),
            expected=raises(ValueError, "boxes"),
            tv=False,
        ),
        op_case(
            "box_area",
            "bad_fmt",
            random_boxes(2),
            fmt="xyxyxy",
            expected=raises(ValueError, "fmt"),
            tv=False,
        ),
        # box_iou
        op_case(
            "box_iou", "int64", lambda: random_boxes(5).long(), lambda: random_boxes(7, 1).long()
        ),
        op_case(
            "box_iou",
            "float64_and_float32",
            lambda: random_boxes(5, dtype=F64),
            lambda: random_boxes(7, 1),
        ),
        op_case(
            "box_iou",
            "float16_large",
            lambda: random_boxes(5, 0, F16, LARGE),
            lambda: random_boxes(7, 1, F16, LARGE),
        ),
        op_case("box_iou", "empty_both", lambda: torch.zeros(0, 4), lambda: torch.zeros(0, 4)),
        op_case("box_iou", "degenerate", degenerate_boxes, degenerate_boxes),
        op_case(
            "box_iou",
            "two_points_nan",
            lambda: boxes_of([[1, 1, 1, 1]]),
            lambda: boxes_of([[1, 1, 1, 1]]),
        ),
        op_case("box_iou", "nan_inf", nan_inf_boxes, lambda: random_boxes(3)),
        op_case(
            "box_iou",
            "batched_3d",
            lambda: random_boxes(6).reshape(2, 3, 4),
            lambda: random_boxes(4, 1).reshape(2, 2, 4),
        ),
        op_case(
            "box_iou",
            "boxes1_last_dim_5",
            torch.zeros(2, 5),
            random_boxes(3),
            expected=raises(ValueError, "boxes1"),
        ),
        op_case(
            "box_iou",
            "boxes2_last_dim_3",
            random_boxes(3),
            torch.zeros(2, 3),
            expected=raises(ValueError, "boxes2"),
            tv=False,
        ),
        op_case(
            "box_iou",
            "boxes1_1d",
            random_boxes(1)[0],
            random_boxes(3),
            expected=raises(ValueError, "boxes1"),
            tv=False,
        ),
        op_case(
            "box_iou",
            "bad_fmt",
            random_boxes(2),
            random_boxes(2),
            fmt="yxyx",
            expected=raises(ValueError, "fmt"),
            tv=False,
        ),
        # box_convert
        op_case("box_convert", "xyxy_to_cxcywh_degenerate", degenerate_boxes, "xyxy", "cxcywh"),
        op_case("box_convert", "cxcywh_to_xywh_degenerate", degenerate_boxes, "cxcywh", "xywh"),
        op_case("box_convert", "int64", lambda: random_boxes(4).long(), "cxcywh", "xywh"),
        op_case("box_convert", "float16", lambda: random_boxes(4, dtype=F16), "xyxy", "cxcywh"),
        op_case("box_convert", "nan_inf", nan_inf_boxes, "xyxy", "cxcywh"),
        op_case(
            "box_convert",
            "bad_in_fmt",
            random_boxes(2),
            "xyxy2",
            "xywh",
            expected=raises(ValueError, "in_fmt"),
        ),
        op_case(
            "box_convert",
            "bad_out_fmt",
            random_boxes(2),
            "xyxy",
            "XYWH",
            expected=raises(ValueError, "out_fmt"),
        ),
        op_case(
            "box_convert",
            "last_dim_5",
            torch.zeros(2, 5),
            "xyxy",
            "xywh",
            expected=raises(ValueError, "boxes"),
        ),
        # clip_boxes_to_image
        op_case(
            "clip_boxes_to_image", "int64", lambda: random_boxes(6, scale=60.0).long(), (40, 50)
        ),
        op_case("clip_boxes_to_image", "degenerate", degenerate_boxes, (40, 50)),
        op_case("clip_boxes_to_image", "nan_inf", nan_inf_boxes, (40, 50)),
        op_case("clip_boxes_to_image", "empty", lambda: torch.zeros(0, 4), (40, 50)),
        op_case(
            "clip_boxes_to_image", "float_size", lambda: random_boxes(6, scale=60.0), (20.5, 25.5)
        ),
        op_case(
            "clip_boxes_to_image",
            "size_of_3",
            random_boxes(2),
            (20, 25, 3),
            expected=raises(ValueError, "size"),
        ),
        op_case(
            "clip_boxes_to_image",
            "last_dim_5",
            torch.zeros(2, 5),
            (40, 50),
            expected=raises(ValueError, "boxes"),
        ),
        # remove_small_boxes
        op_case("remove_small_boxes", "degenerate_negative_min_size", degenerate_boxes, -25.0),
        op_case("remove_small_boxes", "nan_inf", nan_inf_boxes, 1.0),
        op_case("remove_small_boxes", "empty", lambda: torch.zeros(0, 4), 1.0),
        op_case("remove_small_boxes", "nan_min_size", lambda: random_boxes(4), NAN),
        op_case(
            "remove_small_boxes",
            "last_dim_3",
            torch.zeros(2, 3),
            1.0,
            expected=raises(ValueError, "boxes"),
        ),
    ]
    return cases


# ================================================================================= ops: NMS


def nms_cases() -> list[Case]:
    c32, c64 = (lambda: cluster_boxes(60)), (lambda: cluster_boxes(60, dtype=F64))
    s32, s64 = (lambda: scores_for(c32())), (lambda: scores_for(c64()))

    def three():
        return boxes_of([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]])

    s3 = torch.tensor([0.9, 0.8, 0.7])
    cases = [
        op_case("nms", "float64", c64, s64, 0.5),
        op_case("nms", "empty", torch.zeros(0, 4), torch.zeros(0), 0.5),
        op_case("nms", "tied_scores", c32, lambda: scores_for(c32(), ties=True), 0.5),
        op_case("nms", "duplicates_tied", lambda: c32()[:1].repeat(5, 1), torch.ones(5), 0.5),
        op_case("nms", "degenerate", degenerate_boxes, lambda: scores_for(degenerate_boxes()), 0.5),
        op_case(
            "nms",
            "all_zero_area",
            lambda: boxes_of([[3, 3, 3, 9]] * 4),
            torch.tensor([0.1, 0.4, 0.4, 0.2]),
            0.0,
        ),
        op_case(
            "nms",
            "nan_scores",
            lambda: random_boxes(6),
            torch.tensor([0.5, NAN, 0.9, NAN, 0.1, 0.3]),
            0.5,
        ),
        op_case(
            "nms",
            "nan_box",
            lambda: three().index_put_((torch.tensor([0]), torch.tensor([2])), torch.tensor(NAN)),
            s3,
            0.5,
        ),
        op_case("nms", "threshold_0", c32, s32, 0.0),
        op_case("nms", "threshold_negative", c32, s32, -0.5),
        op_case("nms", "threshold_nan", c32, s32, NAN),
        op_case("nms", "threshold_numpy", c32, s32, np.float64(0.3)),
        op_case(
            "nms",
            "iou_exactly_at_threshold",
            lambda: boxes_of([[0, 0, 10, 10], [0, 0, 10, 5]]),
            torch.tensor([0.9, 0.8]),
            0.5,
        ),
        # item 3: float16/bfloat16 boxes are decided in float32, as torchvision's autocast does
        op_case("nms", "float16_large_boxes", big(F16), big_scores(F16), 0.5, upcast=True),
        op_case("nms", "bfloat16_large_boxes", big(BF16), big_scores(BF16), 0.5, upcast=True),
        op_case(
            "nms", "autocast_float16-float16_large", big(F16), big_scores(F16), 0.5, autocast=F16
        ),
        op_case(
            "nms", "autocast_bfloat16-float32_large", big(F32), big_scores(F32), 0.5, autocast=BF16
        ),
        op_case("nms", "autocast_bfloat16-float64", c64, s64, 0.5, autocast=BF16),
        # shapes and dtypes torchvision rejects too
        op_case(
            "nms",
            "int_boxes",
            random_boxes(3).long(),
            torch.rand(3),
            0.5,
            expected=raises(ValueError, "boxes"),
        ),
        op_case(
            "nms",
            "float64_boxes_float32_scores",
            random_boxes(3, dtype=F64),
            torch.rand(3),
            0.5,
            expected=raises(ValueError, "scores"),
        ),
        op_case(
            "nms",
            "scores_2d",
            random_boxes(3),
            torch.rand(3, 1),
            0.5,
            expected=raises(ValueError, "scores"),
        ),
        op_case(
            "nms",
            "scores_too_short",
            random_boxes(3),
            torch.rand(2),
            0.5,
            expected=raises(ValueError, "scores"),
        ),
        op_case(
            "nms",
            "boxes_last_dim_5",
            torch.rand(3, 5),
            torch.rand(3),
            0.5,
            expected=raises(ValueError, "boxes"),
        ),
        # item 5: a threshold that is not a number
        op_case(
            "nms",
            "iou_threshold_None",
            random_boxes(3),
            torch.rand(3),
            None,
            expected=raises(BAD, "iou_threshold"),
        ),
        op_case(
            "nms",
            "iou_threshold_str",
            random_boxes(3),
            torch.rand(3),
            "0.5",
            expected=raises(BAD, "iou_threshold"),
        ),
        op_case(
            "nms",
            "boxes_as_list",
            [[0.0, 0.0, 1.0, 1.0]],
            torch.rand(1),
            0.5,
            expected=raises(BAD, "boxes"),
            tv=False,
        ),
    ]
    b, s, i = c32, s32, (lambda: class_ids(60))

    def many():
        return torch.cat([cluster_boxes(1200, dtype=F64), degenerate_boxes(F64).repeat(10, 1)])

    cases += [
        op_case(
            "batched_nms",
            "empty",
            torch.zeros(0, 4),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.int64),
            0.5,
        ),
        op_case("batched_nms", "negative_idxs", b, s, lambda: class_ids(60, low=-2), 0.5),
        op_case("batched_nms", "bool_idxs", b, s, lambda: class_ids(60, classes=2).bool(), 0.5),
        op_case("batched_nms", "tied_scores", b, lambda: scores_for(b(), ties=True), i, 0.5),
        op_case(
            "batched_nms",
            "degenerate",
            degenerate_boxes,
            lambda: scores_for(degenerate_boxes()),
            lambda: class_ids(10),
            0.5,
        ),
        # > 4000 coordinates: torchvision's per-class path
        op_case(
            "batched_nms",
            "per_class_path_degenerate",
            many,
            lambda: scores_for(many()),
            lambda: class_ids(1300, classes=5),
            0.5,
        ),
        op_case("batched_nms", "float16_large", big(F16), big_scores(F16), i, 0.5, upcast=True),
        op_case(
            "batched_nms",
            "autocast_float16-float16_large",
            big(F16),
            big_scores(F16),
            i,
            0.5,
            autocast=F16,
        ),
        op_case(
            "batched_nms",
            "idxs_too_short",
            b,
            s,
            class_ids(59),
            0.5,
            expected=raises(ValueError, "idxs"),
        ),
        op_case(
            "batched_nms",
            "iou_threshold_None",
            b,
            s,
            i,
            None,
            expected=raises(BAD, "iou_threshold"),
        ),
        op_case(
            "batched_nms",
            "int_boxes",
            lambda: b().long(),
            s,
            i,
            0.5,
            expected=raises(ValueError, "boxes"),
            tv=False,
        ),
    ]
    return cases


# ============================================================================ ops: RoIAlign


def x_map(dtype=F32):
    return feature((2, 3, 16, 20), dtype=dtype)


def roi_align_grad(lib):
    """Output and input gradient of a RoIAlign whose input requires grad."""

    def call():
        inp = x_map().requires_grad_(True)
        out = lib.roi_align(inp, good_rois(), (3, 2), 0.5, 2, True)
        return out, torch.autograd.grad((out * out).sum(), inp)[0]

    return call


def roi_align_cases() -> list[Case]:
    x, r = x_map, good_rois
    ra = "roi_align"
    cases = [
        op_case(ra, "float32_adaptive", x, r, 3, 1.0, -1),
        op_case(ra, "float32_aligned", x, r, (2, 4), 0.5, 2, True),
        op_case(ra, "float64", lambda: x(F64), lambda: r(F64), 3, 1.0, -1, True),
        op_case(ra, "float16", lambda: x(F16), lambda: r(F16), 3, 1.0, 2, upcast=True),
        op_case(ra, "empty_rois", x, torch.zeros(0, 5), 3),
        op_case(ra, "list_of_boxes", x, lambda: [r()[:3, 1:], r()[3:, 1:]], 3, 1.0, 2),
        op_case(
            ra, "x2_lt_x1_aligned", x, rois_of([[0, 8, 8, 1, 1], [1, 5, 9, 2, 3]]), 2, 1.0, -1, True
        ),
        op_case(ra, "x2_lt_x1_legacy", x, rois_of([[0, 8, 8, 1, 1], [1, 5, 9, 2, 3]]), 2, 1.0, 2),
        op_case(
            ra,
            "zero_area_aligned",
            x,
            rois_of([[0, 3, 3, 3, 3], [1, 4, 2, 4, 9]]),
            2,
            1.0,
            -1,
            True,
        ),
        op_case(
            ra, "outside_map", x, rois_of([[0, 30, 30, 40, 40], [1, -20, -20, -5, -5]]), 2, 1.0, 2
        ),
        op_case(ra, "sampling_ratio_0", x, r, 2, 1.0, 0),
        op_case(ra, "output_size_0", x, r, 0, 1.0, 2),
        op_case(ra, "zero_images_no_rois", lambda: feature((0, 3, 8, 8)), torch.zeros(0, 5), 2),
        Case(f"{ra}-requires_grad", roi_align_grad(ops), roi_align_grad(tvops), EQUAL),
        # item 3: under autocast RoIAlign runs in float32 and returns the input's dtype
        op_case(ra, "autocast_bfloat16-float32", x, r, 3, 0.5, -1, True, autocast=BF16),
        op_case(
            ra,
            "autocast_float16-float16",
            lambda: x(F16),
            lambda: r(F16),
            3,
            0.5,
            -1,
            True,
            autocast=F16,
        ),
        op_case(
            ra,
            "autocast_bfloat16-float64",
            lambda: x(F64),
            lambda: r(F64),
            3,
            0.5,
            -1,
            True,
            autocast=BF16,
        ),
    ]
    bad = dict(expected=raises(BAD, "output_size"))
    unsafe = dict(tv=False)  # never given to torchvision's kernel: it reads out of bounds
    cases += [
        # item 5: sizes and ratios that are not integers
        op_case(ra, "output_size_float", x, r, 2.5, **bad),
        op_case(ra, "output_size_None", x, r, None, **bad),
        op_case(ra, "output_size_negative", x, r, -2, **bad),
        op_case(ra, "output_size_triple", x, r, (2, 2, 2), **bad, **unsafe),
        op_case(
            ra, "sampling_ratio_float", x, r, 2, 1.0, 1.5, expected=raises(BAD, "sampling_ratio")
        ),
        op_case(
            ra, "sampling_ratio_None", x, r, 2, 1.0, None, expected=raises(BAD, "sampling_ratio")
        ),
        # item 6: non-finite RoIs or scale
        op_case(
            ra,
            "nan_roi",
            x,
            rois_of([[0, 1, 1, NAN, 5]]),
            2,
            expected=raises(ValueError, "boxes|rois"),
            **unsafe,
        ),
        op_case(
            ra,
            "inf_roi",
            x,
            rois_of([[0, 1, 1, INF, 5]]),
            2,
            expected=raises(ValueError, "boxes|rois"),
            **unsafe,
        ),
        op_case(
            ra,
            "nan_batch_index",
            x,
            rois_of([[NAN, 1, 1, 4, 5]]),
            2,
            expected=raises(ValueError, "boxes|rois|batch"),
            **unsafe,
        ),
        op_case(
            ra,
            "nan_in_list_of_boxes",
            x,
            lambda: [boxes_of([[1, 1, NAN, 5]]), boxes_of([[1, 1, 4, 5]])],
            2,
            expected=raises(ValueError, "boxes|rois"),
            **unsafe,
        ),
        op_case(
            ra,
            "spatial_scale_nan",
            x,
            r,
            2,
            NAN,
            expected=raises(ValueError, "spatial_scale"),
            **unsafe,
        ),
        # batch indices outside the batch
        op_case(
            ra,
            "batch_index_too_large",
            x,
            rois_of([[2, 1, 1, 4, 5]]),
            2,
            expected=raises(ValueError, "boxes|batch"),
            **unsafe,
        ),
        op_case(
            ra,
            "batch_index_fractional",
            x,
            rois_of([[0.5, 1, 1, 4, 5]]),
            2,
            expected=raises(ValueError, "boxes|batch"),
            **unsafe,
        ),
        op_case(
            ra,
            "more_box_lists_than_images",
            x,
            lambda: [boxes_of([[1, 1, 4, 5]])] * 3,
            2,
            expected=raises(ValueError, "boxes|batch"),
            **unsafe,
        ),
        # dtypes and shapes
        op_case(
            ra,
            "rois_float64_input_float32",
            x,
            lambda: r(F64),
            2,
            expected=raises(ValueError, "boxes|rois"),
        ),
        op_case(ra, "int_input", lambda: x().long(), r, 2, expected=raises(ValueError, "input")),
        op_case(
            ra, "rois_k4_tensor", x, lambda: r()[:, 1:], 2, expected=raises(ValueError, "boxes")
        ),
        op_case(
            ra, "list_entry_k5", x, lambda: [r()], 2, expected=raises(ValueError, r"boxes\[0\]")
        ),
        op_case(ra, "empty_list", x, [], 2, expected=raises(ValueError, "boxes"), **unsafe),
    ]
    cases += [
        Case(
            "RoIAlign-aligned_float32",
            lambda: ops.RoIAlign(3, 0.5, 2, aligned=True)(x(), r()),
            lambda: tvops.RoIAlign(3, 0.5, 2, aligned=True)(x(), r()),
            EQUAL,
        ),
        Case(
            "RoIAlign-output_size_float",
            lambda: ops.RoIAlign(2.5, 1.0, 2)(x(), r()),
            lambda: tvops.RoIAlign(2.5, 1.0, 2)(x(), r()),
            raises(BAD, "output_size"),
        ),
        Case(
            "RoIAlign-nan_roi",
            lambda: ops.RoIAlign(2, 1.0, 2)(x(), rois_of([[0, NAN, 1, 4, 5]])),
            None,
            raises(ValueError, "boxes|rois"),
        ),
    ]
    return cases


def multiscale_cases() -> list[Case]:
    def both(feats, boxes, sizes=IMAGE_SIZES, names=("0", "1"), ratio=2, upcast=False):
        def run(lib, up):
            def call():
                f, b = feats(), boxes()
                if up:
                    f = OrderedDict((k, v.float()) for k, v in f.items())
                    b = [t.float() for t in b]
                out = lib.MultiScaleRoIAlign(list(names), 3, ratio)(f, b, sizes)
                return out.half() if up else out

            return call

        return run(ops, False), run(tvops, upcast)

    def props(dtype=F32):
        return proposals(dtype, count=8)

    def wide():
        return [random_boxes(6, 7, scale=200.0), random_boxes(5, 8, scale=200.0)]

    equal = {
        "float64": both(lambda: pyramid(dtype=F64), lambda: props(F64)),
        "float16": both(lambda: pyramid(dtype=F16), lambda: props(F16), upcast=True),
        "all_levels_used": both(pyramid, wide),
        "one_image_without_boxes": both(pyramid, lambda: [torch.zeros(0, 4), props()[1]]),
        "no_boxes_at_all": both(pyramid, lambda: [torch.zeros(0, 4), torch.zeros(0, 4)]),
        "degenerate_boxes": both(pyramid, lambda: [degenerate_boxes(), degenerate_boxes()[:3]]),
        "x2_lt_x1_only": both(
            pyramid, lambda: [boxes_of([[30, 30, 10, 10]]), boxes_of([[9, 1, 2, 8]])]
        ),
        "names_missing_from_x": both(pyramid, props, names=("0", "1", "2", "3")),
        "fewer_box_lists_than_images": both(pyramid, lambda: props()[:1]),
    }
    cases = [Case(f"MultiScaleRoIAlign-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]
    ours, theirs = both(pyramid, props, ratio=-1)
    cases.append(
        Case(
            "MultiScaleRoIAlign-autocast_bfloat16",
            in_autocast(ours, BF16),
            in_autocast(theirs, BF16),
            EQUAL,
        )
    )

    def ours_only(feats, boxes, sizes=IMAGE_SIZES, names=("0", "1"), out=3):
        return lambda: ops.MultiScaleRoIAlign(list(names), out, 2)(feats(), boxes(), sizes)

    def nan_box():
        return [boxes_of([[1, 1, NAN, 9]]), props()[1]]

    def inf_box():
        return [boxes_of([[1, 1, INF, 9]]), props()[1]]

    errors = {
        "no_image_shapes": (ours_only(pyramid, props, sizes=[]), ValueError, "image_shapes"),
        "nan_box": (ours_only(pyramid, nan_box), ValueError, "boxes|rois"),
        "nan_box_single_level": (
            ours_only(pyramid, nan_box, names=("0",)),
            ValueError,
            "boxes|rois",
        ),
        "inf_box": (ours_only(pyramid, inf_box), ValueError, "boxes|rois"),
        "more_box_lists_than_images": (
            ours_only(pyramid, lambda: props() * 2),
            ValueError,
            "boxes|batch",
        ),
        "float_output_size": (ours_only(pyramid, props, out=3.5), BAD, "output_size"),
    }
    cases += [
        Case(f"MultiScaleRoIAlign-{k}", call, None, raises(exc, rx))
        for k, (call, exc, rx) in errors.items()
    ]
    return cases


# ============================================================================== components


def anchor_cases() -> list[Case]:
    def both(feats, sizes=ANCHOR_SIZES, ratios=ANCHOR_RATIOS, img_sizes=None, ac=None):
        def run(lib):
            cls = rcnn_lab.AnchorGenerator if lib == "ours" else TVAnchorGenerator

            def call():
                return cls(sizes, ratios)(
                    image_list(lib, 2, sizes=img_sizes), list(feats().values())
                )

            return in_autocast(call, ac) if ac else call

        return run("ours"), run("theirs")

    def maps(*hw):
        return lambda: OrderedDict((str(i), feature((2, 8, *s))) for i, s in enumerate(hw))

    equal = {
        "float64": both(lambda: pyramid(dtype=F64)),
        "float16": both(lambda: pyramid(dtype=F16)),
        "autocast_bfloat16": both(pyramid, ac=BF16),
        "one_by_one_maps": both(maps((1, 1), (1, 1))),
        "maps_larger_than_image": both(maps((128, 128), (70, 3))),
        "negative_ratio_nan": both(pyramid, ratios=((-1.0, 1.0),) * 2),
        "zero_size": both(pyramid, sizes=((0,), (0, 8))),
        "image_sizes_unrelated_to_batch": both(pyramid, img_sizes=[(64, 64), (10, 10)]),
    }
    cases = [Case(f"AnchorGenerator-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]

    def ours():
        return rcnn_lab.AnchorGenerator(ANCHOR_SIZES, ANCHOR_RATIOS)

    def theirs():
        return TVAnchorGenerator(ANCHOR_SIZES, ANCHOR_RATIOS)

    def three_maps():
        return [*pyramid().values(), feature((2, 8, 4, 4))]

    def empty_map():
        return [feature((2, 8, 0, 4)), feature((2, 8, 4, 4))]

    cases += [
        Case(
            "AnchorGenerator-empty_sizes",
            lambda: rcnn_lab.AnchorGenerator((), (1.0,)),
            None,
            raises(ValueError, "sizes"),
        ),
        Case(
            "AnchorGenerator-levels_mismatch",
            lambda: rcnn_lab.AnchorGenerator(((16,), (32,)), ((1.0,),) * 3),
            None,  # torchvision zips the two and drops the third level of ratios silently
            raises(ValueError, "aspect_ratios"),
        ),
        Case(
            "AnchorGenerator-more_maps_than_levels",
            lambda: ours()(image_list("ours"), three_maps()),
            lambda: theirs()(image_list("theirs"), three_maps()),
            raises(ValueError, "feature_maps"),
        ),
        Case(
            "AnchorGenerator-empty_feature_map",
            lambda: ours()(image_list("ours"), empty_map()),
            lambda: theirs()(image_list("theirs"), empty_map()),
            raises(ValueError, r"feature_maps\[0\]"),
        ),
    ]
    return cases


def box_coder_cases() -> list[Case]:
    def both(fn, weights=(10.0, 10.0, 5.0, 5.0)):
        return (lambda: fn(rcnn_lab.BoxCoder(weights))), (lambda: fn(TVBoxCoder(weights)))

    def props(dtype=F32):
        return random_boxes(6, seed=3, dtype=dtype)

    def codes(c=1, dtype=F32, scale=1.0):
        return feature((6, 4 * c), seed=4, dtype=dtype) * scale - scale / 2

    def poke(value):
        return codes().masked_fill(torch.eye(6, 4, dtype=torch.bool), value)

    equal = {
        "encode_zero_size_proposals": both(lambda c: c.encode([props()], [degenerate_boxes()[:6]])),
        "encode_zero_size_targets": both(lambda c: c.encode([degenerate_boxes()[:6]], [props()])),
        "encode_single_nan": both(
            lambda c: c.encode_single(boxes_of([[0, 0, NAN, 4]]), props()[:1])
        ),
        "decode_huge_deltas_clamped": both(lambda c: c.decode(codes(scale=1e4), [props()])),
        "decode_nan_deltas": both(lambda c: c.decode(poke(NAN), [props()])),
        "decode_float64_codes_float32_boxes": both(lambda c: c.decode(codes(dtype=F64), [props()])),
        "decode_float16": both(lambda c: c.decode(codes(dtype=F16), [props(F16)])),
        "decode_degenerate_boxes": both(
            lambda c: c.decode(feature((10, 4), 5), [degenerate_boxes()])
        ),
        "decode_empty_images": both(lambda c: c.decode(torch.zeros(0, 4), [torch.zeros(0, 4)] * 2)),
    }
    cases = [Case(f"BoxCoder-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]

    def coder():
        return rcnn_lab.BoxCoder((1.0, 1.0, 1.0, 1.0))

    def tv_coder():
        return TVBoxCoder((1.0, 1.0, 1.0, 1.0))

    cases += [
        Case(
            "BoxCoder-weights_of_3",
            lambda: rcnn_lab.BoxCoder((1.0, 1.0, 1.0)),
            None,
            raises(ValueError, "weights"),
        ),
        Case(
            "BoxCoder-decode_codes_count",
            lambda: coder().decode(feature((5, 4)), [props()]),
            lambda: tv_coder().decode(feature((5, 4)), [props()]),
            raises(ValueError, "rel_codes"),
        ),
        Case(
            "BoxCoder-encode_image_count",
            lambda: coder().encode([props(), props()], [props()]),
            None,
            raises(ValueError, "reference_boxes|proposals"),
        ),
        Case(
            "BoxCoder-encode_single_shapes",
            lambda: coder().encode_single(props(), props()[:4]),
            lambda: tv_coder().encode_single(props(), props()[:4]),
            raises(ValueError, "reference_boxes|proposals"),
        ),
    ]
    return cases


def matcher_sampler_cases() -> list[Case]:
    def match(quality, hi=0.7, lo=0.3, low_quality=True):
        return (
            lambda: rcnn_lab.Matcher(hi, lo, low_quality)(quality()),
            lambda: TVMatcher(hi, lo, low_quality)(quality()),
        )

    def iou(dtype=F32):
        return tvops.box_iou(random_boxes(3), cluster_boxes(40)).to(dtype)

    equal = {
        "float64": match(lambda: iou(F64)),
        "float16": match(lambda: iou(F16)),
        "all_zero_quality": match(lambda: torch.zeros(3, 10)),
        "nan_quality": match(lambda: iou().masked_fill(iou() > 0.2, NAN)),
        "equal_thresholds": match(iou, 0.5, 0.5),
    }
    cases = [Case(f"Matcher-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]
    cases += [
        Case(
            "Matcher-no_ground_truth",
            lambda: rcnn_lab.Matcher(0.7, 0.3)(torch.zeros(0, 5)),
            lambda: TVMatcher(0.7, 0.3)(torch.zeros(0, 5)),
            raises(ValueError, "ground-truth"),
        ),
        Case(
            "Matcher-no_prediction",
            lambda: rcnn_lab.Matcher(0.7, 0.3)(torch.zeros(2, 0)),
            lambda: TVMatcher(0.7, 0.3)(torch.zeros(2, 0)),
            raises(ValueError, "proposal"),
        ),
        Case(
            "Matcher-1d_quality",
            lambda: rcnn_lab.Matcher(0.7, 0.3)(torch.zeros(5)),
            None,
            raises(ValueError, "match_quality_matrix"),
        ),
        Case(
            "Matcher-low_above_high",
            lambda: rcnn_lab.Matcher(0.3, 0.7),
            lambda: TVMatcher(0.3, 0.7),
            raises(ValueError, "low_threshold"),
        ),
    ]

    def sample(matched, batch=16, fraction=0.25):
        return (
            seeded(lambda: rcnn_lab.BalancedPositiveNegativeSampler(batch, fraction)(matched())),
            seeded(lambda: TVSampler(batch, fraction)(matched())),
        )

    def labels():
        return [class_ids(50, 5, classes=4, low=-1), class_ids(30, 6, classes=3, low=-1)]

    equal = {
        "typical": sample(labels),
        "batch_0": sample(labels, batch=0),
        "fraction_0": sample(labels, fraction=0.0),
        "all_ignored": sample(lambda: [torch.full((20,), -1)]),
        "empty_image": sample(lambda: [torch.zeros(0, dtype=torch.int64), labels()[0]]),
    }
    sampler = rcnn_lab.BalancedPositiveNegativeSampler
    cases += [
        Case(f"BalancedPositiveNegativeSampler-{k}", o, t, EQUAL) for k, (o, t) in equal.items()
    ]
    errors = {
        "negative_batch": (lambda: sampler(-1, 0.5), "batch_size_per_image"),
        "fraction_above_1": (lambda: sampler(8, 1.5), "positive_fraction"),
        "tensor_not_list": (lambda: sampler(8, 0.5)(labels()[0]), "matched_idxs"),
    }
    cases += [
        Case(f"BalancedPositiveNegativeSampler-{k}", call, None, raises(ValueError, rx))
        for k, (call, rx) in errors.items()
    ]
    return cases


def head_and_fpn_cases() -> list[Case]:
    def head(feats, dtype=None, ac=None):
        def run(i):
            def call():
                return fresh(rpn_head_pair, dtype)[i](list(feats().values()))

            return in_autocast(call, ac) if ac else call

        return run(0), run(1)

    def nan_map():
        return OrderedDict(
            [("0", feature((1, 8, 4, 4)).masked_fill(torch.eye(4, dtype=torch.bool), NAN))]
        )

    equal = {
        "float64": head(lambda: pyramid(dtype=F64), F64),
        "float16": head(lambda: pyramid(dtype=F16), F16),
        "bfloat16": head(lambda: pyramid(dtype=BF16), BF16),
        "autocast_bfloat16": head(pyramid, ac=BF16),
        "nan_features": head(nan_map),
    }
    cases = [Case(f"RPNHead-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]

    def ours_head():
        return fresh(rpn_head_pair)[0]

    cases += [
        Case(
            "RPNHead-tensor_not_list",
            lambda: ours_head()(pyramid()["0"]),
            None,
            raises(ValueError, "x"),
        ),
        Case(
            "RPNHead-in_channels_0",
            lambda: rcnn_lab.RPNHead(0, 3),
            None,
            raises(ValueError, "in_channels"),
        ),
        Case(
            "RPNHead-num_anchors_0",
            lambda: rcnn_lab.RPNHead(8, 0),
            None,
            raises(ValueError, "num_anchors"),
        ),
    ]

    def fpn(feats, dtype=None):
        return (
            lambda: fresh(fpn_pair, dtype)[0](feats()),
            lambda: fresh(fpn_pair, dtype)[1](feats()),
        )

    equal = {
        "float64": fpn(lambda: fpn_inputs(dtype=F64), F64),
        "float16": fpn(lambda: fpn_inputs(dtype=F16), F16),
        "odd_sizes": fpn(lambda: fpn_inputs(sizes=((15, 21), (7, 11), (3, 5)))),
        "coarse_larger_than_fine": fpn(lambda: fpn_inputs(sizes=((4, 4), (8, 8), (16, 16)))),
    }
    cases += [Case(f"FeaturePyramidNetwork-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]

    def two_maps():
        return OrderedDict(list(fpn_inputs().items())[:2])

    cases += [
        Case(
            "FeaturePyramidNetwork-two_maps_for_three_levels",
            lambda: fresh(fpn_pair)[0](two_maps()),
            None,
            raises(ValueError, "x"),
        ),
        Case(
            "FeaturePyramidNetwork-zero_channels",
            lambda: rcnn_lab.FeaturePyramidNetwork([4, 0], 8),
            None,
            raises(ValueError, "in_channels_list"),
        ),
        Case(
            "FeaturePyramidNetwork-extra_blocks_not_a_block",
            lambda: rcnn_lab.FeaturePyramidNetwork([4, 8], 8, extra_blocks=nn.Identity()),
            None,
            raises(TypeError, "extra_blocks"),
        ),
    ]
    return cases


# ===================================================================================== RPN


def rpn_cases() -> list[Case]:
    def run(i, lib, feats=pyramid, targets=None, training=False, dtype=None, sizes=None, n=2):
        module = fresh(rpn_pair, dtype)[i].train(training)
        torch.manual_seed(0)
        imgs = image_list(lib, n, dtype=dtype or F32, sizes=sizes)
        return module(imgs, feats(), targets() if targets else None)

    def both(**kw):
        return (lambda: run(0, "ours", **kw)), (lambda: run(1, "theirs", **kw))

    f64 = dict(feats=lambda: pyramid(dtype=F64), dtype=F64)

    def t64(**kw):
        return lambda: box_targets(F64, **kw)

    neg = {"boxes": torch.zeros(0, 4, dtype=F64), "labels": torch.zeros(0, dtype=torch.int64)}
    equal = {
        "eval_float64": both(**f64),
        "eval_tiny_image_sizes": both(sizes=[(1, 1), (2, 64)]),
        "train_float64": both(**f64, targets=t64(), training=True),
        "train_negative_image": both(
            **f64, training=True, targets=lambda: [box_targets(F64)[0], dict(neg)]
        ),
        "train_float32_targets_float64_features": both(**f64, targets=box_targets, training=True),
        "train_zero_area_target": both(
            **f64,
            training=True,
            targets=t64(boxes=[boxes_of([[5, 5, 5, 20]], F64), boxes_of([[1, 1, 9, 9]], F64)]),
        ),
        "train_target_outside_image": both(
            **f64,
            training=True,
            targets=t64(
                boxes=[boxes_of([[-50, -50, 200, 10]], F64), boxes_of([[70, 70, 90, 90]], F64)]
            ),
        ),
    }
    cases = [Case(f"RegionProposalNetwork-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]
    ours, theirs = both(targets=box_targets, training=True)
    cases.append(
        Case(
            "RegionProposalNetwork-train_autocast_bfloat16",
            in_autocast(ours, BF16),
            in_autocast(theirs, BF16),
            EQUAL,
        )
    )

    def ours_only(**kw):
        return lambda: run(0, "ours", **kw)

    errors = {
        "train_without_targets": (ours_only(training=True), both(training=True)[1], "targets"),
        "train_one_target_for_two_images": (
            ours_only(training=True, targets=lambda: box_targets()[:1]),
            None,
            "targets",
        ),
        "train_boxes_1d": (
            ours_only(
                training=True,
                targets=lambda: box_targets(
                    boxes=[torch.tensor([1.0, 2, 3, 4]), boxes_of([[1, 1, 5, 5]])]
                ),
            ),
            None,
            "boxes",
        ),
        # item 7: image sizes that do not describe the batch
        "more_image_sizes_than_images": (
            ours_only(sizes=[(64, 64)] * 3),
            None,
            "image_sizes|image_shapes",
        ),
        "fewer_image_sizes_than_images": (
            ours_only(sizes=[(64, 64)]),
            None,
            "image_sizes|image_shapes",
        ),
        "more_feature_maps_than_anchor_levels": (
            ours_only(
                feats=lambda: OrderedDict([*pyramid().items(), ("2", feature((2, 8, 4, 4)))])
            ),
            None,
            "feature_maps",
        ),
        "pre_nms_top_n_not_a_dict": (
            lambda: rcnn_lab.RegionProposalNetwork(
                rcnn_lab.AnchorGenerator(),
                rcnn_lab.RPNHead(8, 3),
                **{**RPN_ARGS, "pre_nms_top_n": 100},
            ),
            None,
            "pre_nms_top_n",
        ),
    }
    cases += [
        Case(f"RegionProposalNetwork-{k}", o, t, raises(ValueError, rx))
        for k, (o, t, rx) in errors.items()
    ]
    return cases


# ================================================================================ RoIHeads


def roi_heads_cases() -> list[Case]:
    def run(
        i,
        props=proposals,
        targets=None,
        training=False,
        dtype=None,
        sizes=IMAGE_SIZES,
        feats=pyramid,
        **over,
    ):
        module = fresh(lambda: roi_heads_pair(**over), dtype)[i].train(training)
        torch.manual_seed(0)
        return module(feats(), props(), list(sizes), targets() if targets else None)

    def both(**kw):
        return (lambda: run(0, **kw)), (lambda: run(1, **kw))

    f64 = dict(dtype=F64, feats=lambda: pyramid(dtype=F64), props=lambda: proposals(F64))

    def no_props():
        return [torch.zeros(0, 4, dtype=F64)] * 2

    def neg():
        return {
            "boxes": torch.zeros(0, 4, dtype=F64),
            "labels": torch.zeros(0, dtype=torch.int64),
        }

    def t64(**kw):
        return lambda: box_targets(F64, **kw)

    tr = dict(training=True, targets=t64())
    equal = {
        "eval_float64": both(**f64),
        "eval_no_proposals": both(**{**f64, "props": no_props}),
        "eval_degenerate_proposals": both(
            **{**f64, "props": lambda: [degenerate_boxes(F64), degenerate_boxes(F64)[:4]]}
        ),
        "eval_proposals_outside_image": both(
            **{**f64, "props": lambda: [random_boxes(5, 1, F64, 500.0) - 200, proposals(F64)[1]]}
        ),
        "eval_detections_per_img_0": both(**f64, detections_per_img=0),
        "train_float64": both(**f64, **tr),
        "train_negative_image": both(
            **f64, training=True, targets=lambda: [box_targets(F64)[0], neg()]
        ),
        "train_all_negative": both(**f64, training=True, targets=lambda: [neg(), neg()]),
        "train_no_proposals": both(**{**f64, "props": no_props}, **tr),
        "train_background_labels": both(
            **f64, training=True, targets=t64(labels=[torch.tensor([0, 0]), torch.tensor([0])])
        ),
        "train_one_roi_all_foreground": both(
            **f64, **tr, batch_size_per_image=1, positive_fraction=1.0
        ),
    }
    cases = [Case(f"RoIHeads-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]
    ours, theirs = both(training=True, targets=box_targets)
    cases.append(
        Case(
            "RoIHeads-train_autocast_bfloat16",
            in_autocast(ours, BF16),
            in_autocast(theirs, BF16),
            EQUAL,
        )
    )

    def err(name, exc, rx, theirs=None, **kw):
        return Case(f"RoIHeads-{name}", lambda: run(0, **kw), theirs, raises(exc, rx))

    def labels(*rows, dtype=torch.int64):
        return t64(labels=[torch.tensor(r, dtype=dtype) for r in rows])

    tr64 = dict(f64, training=True)
    cases += [
        err("train_without_targets", ValueError, "targets", both(training=True)[1], training=True),
        err(
            "train_missing_labels",
            ValueError,
            "labels",
            targets=lambda: [{"boxes": t["boxes"]} for t in box_targets(F64)],
            **tr64,
        ),
        err(
            "train_int_boxes",
            TypeError,
            "boxes",
            targets=lambda: [{**t, "boxes": t["boxes"].long()} for t in box_targets()],
            **tr64,
        ),
        err(
            "train_int32_labels",
            TypeError,
            "labels",
            targets=labels([1, 2], [1], dtype=torch.int32),
            **tr64,
        ),
        err("train_negative_label", ValueError, "labels", targets=labels([1, -1], [1]), **tr64),
        err(
            "train_label_num_classes",
            ValueError,
            "labels",
            targets=labels([1, NUM_CLASSES], [1]),
            **tr64,
        ),
        # item 7: fewer proposal lists / image sizes than images in the features
        err(
            "eval_fewer_proposal_lists_than_images",
            ValueError,
            "proposals",
            props=lambda: proposals()[:1],
        ),
        err(
            "eval_fewer_image_shapes_than_images", ValueError, "image_shapes", sizes=IMAGE_SIZES[:1]
        ),
        err(
            "train_fewer_proposal_lists_than_images",
            ValueError,
            "proposals|targets",
            training=True,
            props=lambda: proposals()[:1],
            targets=box_targets,
        ),
        # item 6 through the pooler: a NaN proposal
        err(
            "eval_nan_proposal",
            ValueError,
            "boxes|rois|proposals",
            props=lambda: [boxes_of([[1, 1, NAN, 9]]), proposals()[1]],
        ),
        Case(
            "RoIHeads-mask_head_given",
            lambda: rcnn_lab.RoIHeads(**roi_heads_kwargs("ours"), mask_head=nn.Identity()),
            None,
            raises(NotImplementedError, "mask_head"),
        ),
    ]
    return cases


# =============================================================================== transform


def transform_cases() -> list[Case]:
    def run(i, imgs=images, targets=None, training=False, grad=False, **kw):
        module = transform_pair(**kw)[i].train(training)
        torch.manual_seed(0)
        ims = imgs()
        if grad:
            ims = [im.requires_grad_(True) for im in ims]
        out, tgts = module(ims, targets() if targets else None)
        if grad:  # the gradient flows back to the caller's images
            return out, tgts, torch.autograd.grad(out.tensors.square().sum(), ims)
        return out, tgts

    def both(**kw):
        return (lambda: run(0, **kw)), (lambda: run(1, **kw))

    def t():
        return box_targets(n=2)

    def int_boxes():
        return box_targets(
            boxes=[boxes_of([[1, 2, 30, 40]]).long(), boxes_of([[3, 3, 9, 9]]).long()]
        )

    def no_boxes():
        return box_targets(
            boxes=[torch.zeros(0, 4)] * 2, labels=[torch.zeros(0, dtype=torch.int64)] * 2
        )

    equal = {
        "eval_float32": both(),
        "eval_float16": both(imgs=lambda: images(F16)),
        "eval_bfloat16": both(imgs=lambda: images(BF16)),
        "train_float64_images_float32_boxes": both(
            training=True, imgs=lambda: images(F64), targets=t
        ),
        "train_int_boxes": both(training=True, targets=int_boxes),
        "train_no_boxes": both(training=True, targets=no_boxes),
        "train_degenerate_boxes": both(
            training=True, targets=lambda: box_targets(boxes=[degenerate_boxes()] * 2)
        ),
        # item 1: images that require grad
        "requires_grad_eval": both(grad=True),
        "requires_grad_train": both(grad=True, training=True, targets=t),
        "one_pixel_image": both(imgs=lambda: images(shapes=((3, 1, 1),))),
        "elongated_images": both(imgs=lambda: images(shapes=((3, 4, 300), (3, 300, 5)))),
        "min_size_choices_train": both(training=True, min_size=(48, 64, 80)),
        "nan_pixels": both(imgs=lambda: [images()[0].masked_fill(images()[0] > 0.9, NAN)]),
    }
    cases = [Case(f"GeneralizedRCNNTransform-{k}", o, t_, EQUAL) for k, (o, t_) in equal.items()]
    ours, theirs = both(training=True, targets=t)
    cases.append(
        Case(
            "GeneralizedRCNNTransform-autocast_bfloat16",
            in_autocast(ours, BF16),
            in_autocast(theirs, BF16),
            EQUAL,
        )
    )

    def err(name, rx, exc=ValueError, tv=True, **kw):
        theirs = (lambda: run(1, **kw)) if tv else None
        return Case(
            f"GeneralizedRCNNTransform-{name}", lambda: run(0, **kw), theirs, raises(exc, rx)
        )

    cases += [
        err("empty_list", "images", imgs=lambda: []),
        err("one_channel", r"images\[0\]", tv=False, imgs=lambda: [feature((1, 60, 80))]),
        err(
            "zero_height",
            r"images\[1\]",
            tv=False,
            imgs=lambda: [feature((3, 8, 8)), feature((3, 0, 8))],
        ),
        err("uint8", "float", TypeError, imgs=lambda: [(images()[0] * 255).to(torch.uint8)]),
        # the short side of a 2 x 300 image would shrink to 0 pixels
        err(
            "image_resized_to_nothing",
            r"images\[0\]|size",
            BAD,
            imgs=lambda: images(shapes=((3, 2, 300),)),
        ),
        err("targets_count", "targets", targets=lambda: box_targets(n=1)),
        err(
            "boxes_last_dim_5",
            "boxes",
            tv=False,
            targets=lambda: box_targets(boxes=[torch.zeros(1, 5)] * 2),
        ),
        err("target_without_boxes", "boxes", targets=lambda: [{"labels": torch.tensor([1])}] * 2),
    ]
    return cases


# ========================================================================= whole detector


def detector_cases() -> list[Case]:
    def run(
        i,
        imgs=lambda: images(F64),
        targets=None,
        training=False,
        dtype=None,
        pair_=detector_pair,
        ac=None,
        **kw,
    ):
        model = fresh(lambda: pair_(**kw), dtype)[i]
        ims, tgts = imgs(), (targets() if targets else None)
        step = (
            (lambda: train(model, ims, tgts)) if training else (lambda: evaluate(model, ims, tgts))
        )
        return in_autocast(step, ac)() if ac is not None else step()

    def both(**kw):
        return (lambda: run(0, **kw)), (lambda: run(1, **kw))

    def t64(**kw):
        return lambda: box_targets(F64, **kw)

    def neg():
        return {
            "boxes": torch.zeros(0, 4, dtype=F64),
            "labels": torch.zeros(0, dtype=torch.int64),
        }

    def grad_imgs():
        return [im.requires_grad_(True) for im in images(F64)]

    tr = dict(training=True, targets=t64())
    one = dict(labels=[torch.tensor([1]), torch.tensor([2])])
    equal = {
        "eval_float64": both(),
        "eval_requires_grad_images": both(imgs=grad_imgs),
        "eval_batch_tensor": both(imgs=lambda: feature((2, 3, 50, 70), dtype=F64)),
        "eval_elongated_images": both(imgs=lambda: images(F64, shapes=((3, 4, 200), (3, 150, 6)))),
        "eval_targets_given": both(targets=t64()),
        "train_float64": both(**tr),
        "train_requires_grad_images": both(**tr, imgs=grad_imgs),
        "train_negative_image": both(training=True, targets=lambda: [box_targets(F64)[0], neg()]),
        "train_all_negative": both(training=True, targets=lambda: [neg(), neg()]),
        "train_float32_boxes": both(training=True, targets=box_targets),
        "train_box_outside_image": both(
            training=True,
            targets=t64(
                boxes=[boxes_of([[-30, -30, 200, 20]], F64), boxes_of([[60, 80, 400, 400]], F64)],
                **one,
            ),
        ),
        "train_background_labels": both(
            training=True, targets=t64(labels=[torch.tensor([0, 0]), torch.tensor([0])])
        ),
        "train_many_boxes": both(
            training=True,
            targets=lambda: (
                [
                    {
                        "boxes": random_boxes(60, 5, F64, 40.0),
                        "labels": class_ids(60, 6, NUM_CLASSES - 1, 1),
                    }
                ]
                * 2
            ),
        ),
        "eval_autocast_bfloat16": both(imgs=images, dtype=F32, ac=BF16),
        "train_autocast_bfloat16": both(
            imgs=images, targets=box_targets, training=True, dtype=F32, ac=BF16
        ),
        # a real builder's model (MobileNetV3-Large 320 FPN, random weights, float64)
        "builder_eval_float64": both(pair_=builder_pair),
        "builder_train_requires_grad_images": both(pair_=builder_pair, **tr, imgs=grad_imgs),
    }
    cases = [Case(f"FasterRCNN-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]
    # A constant image gives many RoIs the same features: their scores tie up to the last bit
    # of float64, and which of two such overlapping boxes NMS keeps is rounding, not contract.
    # So no per-class NMS (threshold 1) and no cap: all candidate detections, as a set.
    for name, imgs in (
        ("eval_constant_image", lambda: [torch.zeros(3, 60, 80, dtype=F64)]),
        ("eval_one_pixel_image", lambda: [feature((3, 1, 1), dtype=F64)]),
    ):
        o, t = both(imgs=imgs, box_detections_per_img=1000, box_nms_thresh=1.0)
        cases.append(Case(f"FasterRCNN-{name}", o, t, EQUAL, key=unordered_detections))

    def err(name, rx, exc=ValueError, tv=False, **kw):
        theirs = (lambda: run(1, **kw)) if tv else None
        return Case(f"FasterRCNN-{name}", lambda: run(0, **kw), theirs, raises(exc, rx))

    def box(*row):
        return t64(boxes=[boxes_of([row], F64)] * 2, labels=[torch.tensor([1])] * 2)

    def labels(*rows, dtype=torch.int64):
        return t64(labels=[torch.tensor(r, dtype=dtype) for r in rows])

    tr = dict(training=True)

    def nan_image():
        return [images(F64)[0].masked_fill(images(F64)[0] > 0.5, NAN)]

    def inf_image():
        return [images(F64)[0].masked_fill(images(F64)[0] > 0.5, INF)]

    cases += [
        err("eval_empty_list", "images", tv=True, imgs=lambda: []),
        err("eval_single_3d_tensor", "images|list", imgs=lambda: feature((3, 40, 40), dtype=F64)),
        err(
            "eval_one_channel_image", r"images\[0\]", imgs=lambda: [feature((1, 40, 40), dtype=F64)]
        ),
        err(
            "eval_uint8_image",
            "float",
            TypeError,
            tv=True,
            imgs=lambda: [torch.zeros(3, 40, 40, dtype=torch.uint8)],
        ),
        err("eval_nan_image", "images.*NaN", imgs=nan_image),
        err("eval_inf_image", "images.*inf", imgs=inf_image),
        err("eval_degenerate_target", "invalid box", tv=True, targets=box(10, 10, 10, 30)),
        # float32 images into a float64 model: an error that names the images, not a conv's
        err("eval_float32_images_float64_model", "images|image", BAD, imgs=images),
        err("train_without_targets", "targets", tv=True, **tr),
        err(
            "train_one_target_for_two_images",
            "targets",
            tv=True,
            targets=lambda: box_targets(F64)[:1],
            **tr,
        ),
        err(
            "train_missing_boxes",
            "boxes",
            tv=True,
            targets=lambda: [{"labels": t["labels"]} for t in box_targets(F64)],
            **tr,
        ),
        err(
            "train_boxes_last_dim_5",
            "boxes",
            tv=True,
            targets=t64(boxes=[torch.zeros(1, 5, dtype=F64)] * 2),
            **tr,
        ),
        err(
            "train_int_boxes",
            "boxes",
            targets=t64(
                boxes=[boxes_of([[1, 2, 30, 40]]).long()] * 2, labels=[torch.tensor([1])] * 2
            ),
            **tr,
        ),
        err("train_nan_box", "boxes.*NaN", targets=box(1, 2, NAN, 40), **tr),
        err("train_inf_box", "boxes.*inf", targets=box(1, 2, INF, 40), **tr),
        err("train_zero_width_box", "invalid box", tv=True, targets=box(10, 2, 10, 40), **tr),
        err("train_x2_lt_x1_box", "invalid box", tv=True, targets=box(30, 2, 10, 40), **tr),
        err("train_negative_label", "labels", targets=labels([1, -1], [2]), **tr),
        err(
            "train_label_equal_num_classes",
            "labels",
            tv=True,
            targets=labels([1, NUM_CLASSES], [2]),
            **tr,
        ),
        err(
            "train_int32_labels",
            "labels",
            TypeError,
            tv=True,
            targets=labels([1, 2], [2], dtype=torch.int32),
            **tr,
        ),
        err("train_labels_count", "labels", targets=labels([1], [2]), **tr),
    ]
    return cases


# ================================================================================ builders


BUILDERS = [
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
]
MOBILE = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _built(lib: str, name: str, *args, **kwargs):
    """(parameter/buffer structure, warnings) of a builder call; weights are never downloaded:
    a builder that asks for some gets WeightsRequested, and the weights' name is returned."""
    fn = getattr(rcnn_lab if lib == "ours" else tvd, name)

    def build():
        try:
            return structure(fn(*args, **kwargs))
        except WeightsRequested as asked:
            return f"requested {asked}"

    torch.manual_seed(0)
    with no_weight_download():
        return with_warnings(build)


def builder_cases() -> list[Case]:
    def both(name, *args, **kwargs):
        return (lambda: _built("ours", name, *args, **kwargs)), (
            lambda: _built("theirs", name, *args, **kwargs)
        )

    # item 4: torchvision's legacy interface warns and maps pretrained=... onto weights=...
    equal = {
        f"{MOBILE}-pretrained_False": both(
            MOBILE, pretrained=False, weights_backbone=None, num_classes=3
        ),
        f"{MOBILE}-pretrained_True_asks_for_coco_weights": both(MOBILE, pretrained=True),
        f"{MOBILE}-pretrained_backbone_True_asks_for_imagenet": both(
            MOBILE, weights=None, pretrained_backbone=True
        ),
        f"{MOBILE}-positional_False_True": both(
            MOBILE, False, True, num_classes=3, pretrained_backbone=False
        ),
        f"{MOBILE}-trainable_layers_without_weights": both(
            MOBILE, weights=None, weights_backbone=None, trainable_backbone_layers=2
        ),
        f"{MOBILE}-trainable_layers_7_without_weights": both(
            MOBILE, weights=None, weights_backbone=None, trainable_backbone_layers=7
        ),
        "fasterrcnn_resnet50_fpn-pretrained_both_False": both(
            "fasterrcnn_resnet50_fpn", pretrained=False, pretrained_backbone=False
        ),
    }
    cases = [Case(f"builder-{k}", o, t, EQUAL) for k, (o, t) in equal.items()]
    # item 4: a misspelt keyword is a TypeError naming it (torchvision drops it silently)
    for name in BUILDERS:
        cases.append(
            Case(
                f"builder-{name}-misspelt_rpn_nms_tresh",
                lambda n=name: getattr(rcnn_lab, n)(
                    weights=None, weights_backbone=None, rpn_nms_tresh=0.3
                ),
                None,
                raises(TypeError, "rpn_nms_tresh"),
            )
        )
    cases += [
        Case(
            f"builder-{MOBILE}-unknown_keyword",
            lambda: getattr(rcnn_lab, MOBILE)(weights=None, weights_backbone=None, not_a_keyword=1),
            None,
            raises(TypeError, "not_a_keyword"),
        ),
        Case(
            f"builder-{MOBILE}-pretrained_and_weights",
            lambda: getattr(rcnn_lab, MOBILE)(pretrained=True, weights=None, weights_backbone=None),
            None,
            raises(TypeError, "pretrained"),
        ),
    ]
    return cases


# =================================================================================== table


CASES: list[Case] = [
    *geometry_cases(),
    *nms_cases(),
    *roi_align_cases(),
    *multiscale_cases(),
    *anchor_cases(),
    *box_coder_cases(),
    *matcher_sampler_cases(),
    *head_and_fpn_cases(),
    *rpn_cases(),
    *roi_heads_cases(),
    *transform_cases(),
    *detector_cases(),
    *builder_cases(),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case):
    run_case(case)


def test_the_table_covers_every_entry_point_once_per_id():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    kinds = {case.expected == EQUAL for case in CASES}
    assert kinds == {True, False}
    entry_points = {case.id.split("-")[0] for case in CASES}
    assert entry_points >= {
        *("box_area", "box_iou", "box_convert", "clip_boxes_to_image", "remove_small_boxes"),
        *("nms", "batched_nms", "roi_align", "RoIAlign", "MultiScaleRoIAlign"),
        *("AnchorGenerator", "BoxCoder", "Matcher", "BalancedPositiveNegativeSampler"),
        *("RPNHead", "RegionProposalNetwork", "RoIHeads", "GeneralizedRCNNTransform"),
        *("FeaturePyramidNetwork", "FasterRCNN", "builder"),
    }, entry_points


# ================================================== item 2: training with no sampled RoI


@pytest.mark.parametrize("where", ["RoIHeads", "FasterRCNN"])
def test_training_with_no_sampled_roi_gives_finite_losses(where):
    """box_batch_size_per_image=0 samples no RoI: torchvision's Fast R-CNN losses are the NaN of
    an empty mean; rcnn_lab's must be finite and backpropagate, and the RPN losses (which do
    not depend on the RoI sample) must equal torchvision's."""
    if where == "RoIHeads":
        ours = fresh(lambda: roi_heads_pair(batch_size_per_image=0), F64)[0].train()
        torch.manual_seed(0)
        _, losses = ours(pyramid(dtype=F64), proposals(F64), IMAGE_SIZES, box_targets(F64))
    else:
        ours, theirs = fresh(lambda: detector_pair(box_batch_size_per_image=0))
        losses = train(ours, images(F64), box_targets(F64))
        theirs_losses = train(theirs, images(F64), box_targets(F64))
        assert torch.isnan(theirs_losses["loss_classifier"])  # the oracle's behaviour
        rpn_keys = ("loss_objectness", "loss_rpn_box_reg")
        torch.testing.assert_close(
            [losses[k] for k in rpn_keys], [theirs_losses[k] for k in rpn_keys]
        )
    for key in ("loss_classifier", "loss_box_reg"):
        assert torch.isfinite(losses[key]), (key, losses[key])
    sum(losses.values()).backward()  # the losses keep a graph: a training loop runs unchanged
    grads = [p.grad for p in ours.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ================================================================= Hypothesis properties


def _boxes(max_n: int):
    """Lists of boxes, many degenerate: negative, zero and positive sides, repeated corners."""
    coord = st.floats(-50, 150, allow_nan=False, width=32)
    side = st.sampled_from([0.0, -5.0, 1.0]) | st.floats(-20, 80, allow_nan=False, width=32)
    box = st.tuples(coord, coord, side, side).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])
    return st.lists(box, max_size=max_n)


@st.composite
def _nms_inputs(draw, max_n=40):
    rows = draw(_boxes(max_n))
    if rows and draw(st.booleans()):  # exact duplicates
        rows = rows + rows[: draw(st.integers(1, len(rows)))]
    levels = draw(st.sampled_from([1, 3, 1000]))  # few levels: many tied scores
    scores = draw(st.lists(st.integers(0, levels), min_size=len(rows), max_size=len(rows)))
    thr = draw(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 1, width=32))
    return rows, [s / levels for s in scores], thr


@settings(max_examples=60, deadline=None)
@given(_nms_inputs(), st.sampled_from([F32, F64]))
def test_nms_random_degenerate_boxes_equal_torchvision(inputs, dtype):
    rows, scores, thr = inputs
    boxes = torch.tensor(rows, dtype=dtype).reshape(-1, 4)
    scores = torch.tensor(scores, dtype=dtype)
    torch.testing.assert_close(ops.nms(boxes, scores, thr), tvops.nms(boxes, scores, thr))


@settings(max_examples=40, deadline=None)
@given(_nms_inputs(), st.integers(1, 4), st.integers(0, 2**16))
def test_batched_nms_random_degenerate_boxes_equal_torchvision(inputs, classes, seed):
    rows, scores, thr = inputs
    boxes = torch.tensor(rows, dtype=F32).reshape(-1, 4)
    scores = torch.tensor(scores, dtype=F32)
    idxs = class_ids(len(rows), seed=seed, classes=classes, low=-1)
    torch.testing.assert_close(
        ops.batched_nms(boxes, scores, idxs, thr), tvops.batched_nms(boxes, scores, idxs, thr)
    )


@settings(max_examples=40, deadline=None)
@given(_nms_inputs(max_n=25), st.sampled_from([F16, BF16]))
def test_nms_in_half_precision_decides_in_float32(inputs, dtype):
    """Item 3: float16/bfloat16 boxes (scaled so that their areas overflow float16) keep the
    boxes that torchvision's NMS keeps on the same values in float32."""
    rows, scores, thr = inputs
    boxes = (torch.tensor(rows, dtype=F32).reshape(-1, 4) * 40).to(dtype)
    scores = torch.tensor(scores, dtype=F32).to(dtype)
    expected = tvops.nms(boxes.float(), scores.float(), thr)
    torch.testing.assert_close(ops.nms(boxes, scores, thr), expected)


@settings(max_examples=60, deadline=None)
@given(_boxes(8), _boxes(8), st.sampled_from(["xyxy", "xywh", "cxcywh"]))
def test_box_geometry_on_random_degenerate_boxes_equals_torchvision(rows1, rows2, fmt):
    b1 = torch.tensor(rows1, dtype=F32).reshape(-1, 4)
    b2 = torch.tensor(rows2, dtype=F32).reshape(-1, 4)
    torch.testing.assert_close(ops.box_iou(b1, b2, fmt), tvops.box_iou(b1, b2, fmt), equal_nan=True)
    torch.testing.assert_close(ops.box_area(b1, fmt), tvops.box_area(b1, fmt))
    torch.testing.assert_close(ops.box_convert(b1, fmt, "xyxy"), tvops.box_convert(b1, fmt, "xyxy"))
    torch.testing.assert_close(
        ops.clip_boxes_to_image(b1, (60, 90)), tvops.clip_boxes_to_image(b1, (60, 90))
    )
    torch.testing.assert_close(ops.remove_small_boxes(b1, 3.0), tvops.remove_small_boxes(b1, 3.0))


@settings(max_examples=40, deadline=None)
@given(
    _boxes(6),
    st.sampled_from([-1, 0, 1, 2]),
    st.booleans(),
    st.sampled_from([1.0, 0.5, 0.25]),
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
)
def test_roi_align_on_random_degenerate_rois_equals_torchvision(rows, ratio, aligned, scale, out):
    """Finite RoIs only (NaN is never given to torchvision's kernel), some with x2 < x1 or zero
    size. torchvision raises for an adaptive grid that is negative along exactly one axis
    (aligned, x2 < x1 but y2 > y1: it sizes a buffer with the negative product); that corner is
    left out, while both-negative and zero-size RoIs are in."""
    if aligned and ratio <= 0:
        assume(all((r[2] < r[0]) == (r[3] < r[1]) for r in rows))
    x = feature((2, 3, 12, 15), dtype=F64)
    boxes = torch.tensor(rows, dtype=F64).reshape(-1, 4)
    rois = torch.cat([(torch.arange(len(rows)) % 2).to(F64)[:, None], boxes], dim=1)
    torch.testing.assert_close(
        ops.roi_align(x, rois, out, scale, ratio, aligned),
        tvops.roi_align(x, rois, out, scale, ratio, aligned),
    )
