"""Machinery of tests/test_bad_inputs.py: the case record, its runner and the input factories.

A case pairs one call of rcnn_lab with (optionally) the same call of torchvision and says what
must happen: ``EQUAL`` (both return, and the results agree: ``torch.testing.assert_close``
with dtype checking, NaN equal to NaN, integer tensors such as NMS keep indices compared
exactly) or ``(exception type(s), regex)`` (rcnn_lab raises it, the message naming the bad
argument; when a torchvision call is given too, it must reject the input as well, with any
exception). Calls that could crash torchvision's C++ kernels (NaN or out-of-range RoIs, empty
feature maps) are never handed to torchvision: those cases have no torchvision call.

Every factory returns fresh tensors (never shared between the two libraries, so an in-place
change by one cannot leak into the other), and every module pair is built from the same seed
and the same ``state_dict``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision.models.detection as tvd
import torchvision.ops as tvops
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor as TVFastRCNNPredictor
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.transform import (
    GeneralizedRCNNTransform as TVGeneralizedRCNNTransform,
)

import rcnn_lab

EQUAL = "equal"
#: "a clear error": what the fixed library raises for a bad argument, ValueError or TypeError
BAD = (ValueError, TypeError)
NUM_CLASSES = 5
#: small images keep every model call in milliseconds
SMALL = dict(min_size=64, max_size=96)


@dataclass(frozen=True)
class Case:
    """One bad (or borderline) input: rcnn_lab's call, torchvision's call, the expectation."""

    id: str
    ours: Callable[[], Any]
    theirs: Callable[[], Any] | None
    expected: str | tuple[type[BaseException] | tuple[type[BaseException], ...], str]
    tol: dict = field(default_factory=dict)
    #: applied to both results before comparing (e.g. to ignore the order of exact ties)
    key: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.expected == EQUAL and self.theirs is None:
            raise AssertionError(f"{self.id}: an 'equal' case needs a torchvision call")


def raises(exc: type[BaseException] | tuple, regex: str) -> tuple:
    """The expectation "rcnn_lab raises ``exc`` with a message matching ``regex``"."""
    return (exc, regex)


def run_case(case: Case) -> None:
    """Assert what ``case.expected`` says."""
    if case.expected == EQUAL:
        ours = case.ours()
        theirs = case.theirs()
        if case.key is not None:
            ours, theirs = case.key(ours), case.key(theirs)
        assert_same(ours, theirs, **case.tol)
        return
    exc, regex = case.expected
    with pytest.raises(exc, match=regex):
        case.ours()
    if case.theirs is not None:  # torchvision rejects it too (with whatever exception)
        with pytest.raises(Exception):  # noqa: B017, PT011 - any error from torchvision is fine
            case.theirs()


def assert_same(ours: Any, theirs: Any, path: str = "result", **tol: Any) -> None:
    """Recursive equality: tensors by assert_close (dtype checked, NaN == NaN), containers by
    structure, ImageLists by tensors and sizes, numbers and strings exactly."""
    if isinstance(ours, Tensor) or isinstance(theirs, Tensor):
        assert isinstance(ours, Tensor) and isinstance(theirs, Tensor), path
        torch.testing.assert_close(
            ours, theirs, equal_nan=True, msg=lambda m: f"{path}: {m}", **tol
        )
    elif hasattr(ours, "image_sizes") and hasattr(theirs, "image_sizes"):
        assert_same(ours.tensors, theirs.tensors, f"{path}.tensors", **tol)
        assert_same(list(ours.image_sizes), list(theirs.image_sizes), f"{path}.image_sizes")
    elif isinstance(ours, Mapping):
        assert isinstance(theirs, Mapping), path
        assert sorted(ours) == sorted(theirs), f"{path}: keys {sorted(ours)} != {sorted(theirs)}"
        for key in ours:
            assert_same(ours[key], theirs[key], f"{path}[{key!r}]", **tol)
    elif isinstance(ours, (list, tuple)):
        assert isinstance(theirs, (list, tuple)), path
        assert len(ours) == len(theirs), f"{path}: length {len(ours)} != {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{path}[{i}]", **tol)
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


# ------------------------------------------------------------------------------ small helpers


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def in_autocast(fn: Callable[[], Any], dtype: torch.dtype) -> Callable[[], Any]:
    """``fn`` run under ``torch.autocast("cpu", dtype=dtype)``."""

    def call() -> Any:
        with torch.autocast("cpu", dtype=dtype):
            return fn()

    return call


def seeded(fn: Callable[[], Any], seed: int = 0) -> Callable[[], Any]:
    """``fn`` run right after ``torch.manual_seed(seed)`` (same sampler draws in both libraries)."""

    def call() -> Any:
        torch.manual_seed(seed)
        return fn()

    return call


_PARAMETER = re.compile(
    r"\b(pretrained_backbone|pretrained|weights_backbone|weights|"
    r"trainable_backbone_layers|num_classes)\b"
)


def with_warnings(fn: Callable[[], Any]) -> tuple[Any, list[tuple[str, str]]]:
    """(result, sorted (category, first parameter named in the message) of ``fn``'s warnings).

    The wording may differ from torchvision's; the category and the parameter may not.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    seen = []
    for w in caught:
        named = _PARAMETER.search(str(w.message))
        seen.append((w.category.__name__, named.group(1) if named else str(w.message)[:40]))
    return result, sorted(set(seen))


def unordered_detections(detections: list[dict]) -> list[dict]:
    """Detections re-sorted by (label, box): for inputs whose scores tie exactly (a constant
    image gives many identical RoI features), the order among ties is not part of the contract."""
    out = []
    for d in detections:
        rows = torch.cat([d["labels"][:, None].double(), d["boxes"].double().round(decimals=5)], 1)
        order = torch.arange(len(rows))
        for col in reversed(range(rows.shape[1])):  # lexicographic: stable sorts, last key first
            order = order[torch.sort(rows[order, col], stable=True).indices]
        out.append({k: v[order] for k, v in d.items()})
    return out


def structure(model: nn.Module) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, requires_grad) of every parameter and buffer: what a builder decided."""
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    return [(k, tuple(v.shape), grads.get(k, False)) for k, v in model.state_dict().items()]


# ---------------------------------------------------------------------------- box factories


def boxes_of(rows: Sequence[Sequence[float]], dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64).to(dtype).reshape(-1, 4)


def random_boxes(
    n: int, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 100.0
) -> Tensor:
    """[n, 4] valid boxes (x2 > x1, y2 > y1) inside [0, 1.5 * scale]."""
    g = gen(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 2 + 1
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def cluster_boxes(
    n: int, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 100.0
) -> Tensor:
    """[n, 4] boxes jittered around 4 centres: plenty of overlaps for NMS to suppress."""
    g = gen(seed)
    centres = torch.rand(4, 2, generator=g, dtype=torch.float64) * scale
    pick = torch.randint(0, 4, (n,), generator=g)
    centre = centres[pick] + torch.randn(n, 2, generator=g, dtype=torch.float64) * scale / 40
    half = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.3 + 0.2) * scale / 4
    return torch.cat([centre - half, centre + half], dim=1).to(dtype)


def degenerate_boxes(dtype: torch.dtype = torch.float32) -> Tensor:
    """Zero-width, zero-height, point, x2 < x1, y2 < y1, duplicate and nested boxes."""
    rows = [
        [10, 10, 10, 30],  # zero width
        [10, 10, 30, 10],  # zero height
        [5, 5, 5, 5],  # a point
        [30, 10, 10, 30],  # x2 < x1
        [10, 30, 30, 10],  # y2 < y1
        [0, 0, 20, 20],
        [0, 0, 20, 20],  # duplicate
        [5, 5, 15, 15],  # nested
        [1, 1, 21, 21],
        [-10, -10, 5, 5],  # partly negative coordinates
    ]
    return boxes_of(rows, dtype)


def scores_for(boxes: Tensor, seed: int = 1, ties: bool = False) -> Tensor:
    n = boxes.shape[0]
    if ties:
        return torch.full((n,), 0.5, dtype=boxes.dtype)
    return torch.rand(n, generator=gen(seed), dtype=torch.float64).to(boxes.dtype)


def class_ids(n: int, seed: int = 2, classes: int = 3, low: int = 0) -> Tensor:
    return torch.randint(low, low + classes, (n,), generator=gen(seed))


def feature(shape: Sequence[int], seed: int = 3, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.rand(*shape, generator=gen(seed), dtype=torch.float64).to(dtype)


def rois_of(rows: Sequence[Sequence[float]], dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64).to(dtype).reshape(-1, 5)


def good_rois(dtype: torch.dtype = torch.float32) -> Tensor:
    """[6, 5] RoIs over a batch of 2 feature maps of 16 x 20, some partly outside."""
    return rois_of(
        [
            [0, 1, 1, 8, 9],
            [0, 2.5, 3.25, 14.75, 12.5],
            [1, 0, 0, 19, 15],
            [1, 4, 4, 6, 5],
            [1, -3, -2, 5, 4],
            [0, 15, 10, 24, 20],
        ],
        dtype,
    )


# ------------------------------------------------------------------------ module pairs (both)


def pair(make_theirs: Callable[[], nn.Module], make_ours: Callable[[], nn.Module]):
    """(ours, theirs) with torchvision's seeded initial weights loaded into ours strictly."""
    torch.manual_seed(0)
    theirs = make_theirs()
    ours = make_ours()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def fresh(cached: Callable[[], tuple], dtype: torch.dtype | None = None):
    """Deep copies of a cached (ours, theirs) pair: cases never see each other's state (modes,
    BatchNorm statistics, the scales a MultiScaleRoIAlign infers on its first call)."""
    ours, theirs = copy.deepcopy(cached())
    if dtype is not None:
        ours, theirs = ours.to(dtype), theirs.to(dtype)
    return ours, theirs


@functools.cache
def rpn_head_pair():
    return pair(lambda: TVRPNHead(8, 3), lambda: rcnn_lab.RPNHead(8, 3))


@functools.cache
def fpn_pair():
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool as TVLastLevelMaxPool

    from rcnn_lab.fpn import LastLevelMaxPool

    return pair(
        lambda: tvops.FeaturePyramidNetwork([4, 8, 16], 8, extra_blocks=TVLastLevelMaxPool()),
        lambda: rcnn_lab.FeaturePyramidNetwork([4, 8, 16], 8, extra_blocks=LastLevelMaxPool()),
    )


def fpn_inputs(sizes=((16, 20), (8, 10), (4, 5)), dtype=torch.float32, n=2) -> OrderedDict:
    channels = (4, 8, 16)
    return OrderedDict(
        (f"c{i}", feature((n, c, *hw), seed=10 + i, dtype=dtype))
        for i, (c, hw) in enumerate(zip(channels, sizes))
    )


RPN_ARGS = dict(
    fg_iou_thresh=0.7,
    bg_iou_thresh=0.3,
    batch_size_per_image=32,
    positive_fraction=0.5,
    pre_nms_top_n={"training": 100, "testing": 50},
    post_nms_top_n={"training": 40, "testing": 20},
    nms_thresh=0.7,
)
ANCHOR_SIZES, ANCHOR_RATIOS = ((16,), (32,)), ((0.5, 1.0, 2.0),) * 2


@functools.cache
def rpn_pair():
    def theirs():
        anchors = TVAnchorGenerator(ANCHOR_SIZES, ANCHOR_RATIOS)
        return TVRegionProposalNetwork(anchors, TVRPNHead(8, 3), **RPN_ARGS)

    def ours():
        anchors = rcnn_lab.AnchorGenerator(ANCHOR_SIZES, ANCHOR_RATIOS)
        return rcnn_lab.RegionProposalNetwork(anchors, rcnn_lab.RPNHead(8, 3), **RPN_ARGS)

    return pair(theirs, ours)


def pyramid(n: int = 2, dtype: torch.dtype = torch.float32, seed: int = 20) -> OrderedDict:
    """Two 8-channel levels of a 64 x 64 padded batch: strides 4 and 8."""
    return OrderedDict(
        [
            ("0", feature((n, 8, 16, 16), seed=seed, dtype=dtype)),
            ("1", feature((n, 8, 8, 8), seed=seed + 1, dtype=dtype)),
        ]
    )


IMAGE_SIZES = [(64, 64), (56, 48)]


def image_list(lib, n: int = 2, dtype=torch.float32, sizes=None):
    cls = rcnn_lab.ImageList if lib == "ours" else TVImageList
    return cls(feature((n, 3, 64, 64), seed=30, dtype=dtype), list(sizes or IMAGE_SIZES[:n]))


def box_targets(dtype=torch.float32, boxes=None, labels=None, n: int = 2) -> list[dict]:
    """n targets: image 0 with two objects, image 1 with one (each overridable)."""
    default = [
        ([[4, 6, 40, 44], [20, 10, 60, 30]], [1, 4]),
        ([[10, 12, 30, 40]], [2]),
    ]
    targets = []
    for i in range(n):
        b, l = default[i % 2]
        targets.append(
            {
                "boxes": boxes_of(b, dtype) if boxes is None else boxes[i],
                "labels": torch.tensor(l) if labels is None else labels[i],
            }
        )
    return targets


def roi_heads_kwargs(lib: str, **overrides) -> dict:
    pool = rcnn_lab.ops.MultiScaleRoIAlign if lib == "ours" else tvops.MultiScaleRoIAlign
    head = rcnn_lab.TwoMLPHead if lib == "ours" else TVTwoMLPHead
    predictor = rcnn_lab.FastRCNNPredictor if lib == "ours" else TVFastRCNNPredictor
    args = dict(
        box_roi_pool=pool(["0", "1"], 7, 2),
        box_head=head(8 * 7 * 7, 32),
        box_predictor=predictor(32, NUM_CLASSES),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=32,
        positive_fraction=0.25,
        bbox_reg_weights=None,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=20,
    )
    args.update(overrides)
    return args


@functools.cache
def roi_heads_pair(**overrides):
    return pair(
        lambda: TVRoIHeads(**roi_heads_kwargs("theirs", **overrides)),
        lambda: rcnn_lab.RoIHeads(**roi_heads_kwargs("ours", **overrides)),
    )


def proposals(dtype=torch.float32, n: int = 2, count: int = 12) -> list[Tensor]:
    return [random_boxes(count, seed=40 + i, dtype=dtype, scale=40.0) for i in range(n)]


def transform_pair(**kwargs):
    args = dict(SMALL, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    args.update(kwargs)
    return rcnn_lab.GeneralizedRCNNTransform(**args), TVGeneralizedRCNNTransform(**args)


def images(dtype=torch.float32, shapes=((3, 60, 80), (3, 90, 70)), seed=50) -> list[Tensor]:
    return [feature(s, seed=seed + i, dtype=dtype) for i, s in enumerate(shapes)]


# ------------------------------------------------------------------------- detector pairs


class TinyBackbone(nn.Module):
    """Two 8-channel levels (strides 4 and 8): a detector that runs in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.out_channels = 8

    def forward(self, x: Tensor) -> OrderedDict:
        c1 = F.relu(self.conv1(x))
        return OrderedDict([("0", c1), ("1", F.relu(self.conv2(c1)))])


TINY_DETECTOR = dict(
    SMALL,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
    box_batch_size_per_image=64,
    box_detections_per_img=30,
)


def tiny_detector(lib: str, **kwargs) -> nn.Module:
    ours = lib == "ours"
    anchors = (rcnn_lab.AnchorGenerator if ours else TVAnchorGenerator)(ANCHOR_SIZES, ANCHOR_RATIOS)
    pool = (rcnn_lab.ops.MultiScaleRoIAlign if ours else tvops.MultiScaleRoIAlign)(["0", "1"], 7, 2)
    head = (rcnn_lab.TwoMLPHead if ours else TVTwoMLPHead)(8 * 7 * 7, 32)
    predictor = (rcnn_lab.FastRCNNPredictor if ours else TVFastRCNNPredictor)(32, NUM_CLASSES)
    torch.manual_seed(0)
    backbone = TinyBackbone()  # same seed: the same trunk weights in both
    cls = rcnn_lab.FasterRCNN if ours else tvd.FasterRCNN
    return cls(
        backbone,
        rpn_anchor_generator=anchors,
        box_roi_pool=pool,
        box_head=head,
        box_predictor=predictor,
        **{**TINY_DETECTOR, **kwargs},
    )


@functools.cache
def detector_pair(**kwargs):
    """(ours, theirs) FasterRCNN on TinyBackbone, same weights, float64 (no float32 near-ties)."""
    ours, theirs = pair(
        lambda: tiny_detector("theirs", **kwargs), lambda: tiny_detector("ours", **kwargs)
    )
    return ours.double(), theirs.double()


@functools.cache
def builder_pair(name: str = "fasterrcnn_mobilenet_v3_large_320_fpn"):
    """A real builder's model in both libraries (random weights), float64."""
    args = dict(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **TINY_DETECTOR)
    ours, theirs = pair(lambda: getattr(tvd, name)(**args), lambda: getattr(rcnn_lab, name)(**args))
    return ours.double(), theirs.double()


def evaluate(model: nn.Module, images_, targets=None):
    model.eval()
    with torch.no_grad():
        return model(images_, targets) if targets is not None else model(images_)


def train(model: nn.Module, images_, targets=None, seed: int = 0):
    model.train()
    torch.manual_seed(seed)
    return model(images_, targets)


@contextlib.contextmanager
def no_weight_download():
    """Make every WeightsEnum.get_state_dict raise WeightsRequested(weights), offline-safe."""
    from torchvision.models._api import WeightsEnum

    def refuse(self, *args, **kwargs):
        raise WeightsRequested(str(self))

    original = WeightsEnum.get_state_dict
    WeightsEnum.get_state_dict = refuse
    try:
        yield
    finally:
        WeightsEnum.get_state_dict = original


class WeightsRequested(Exception):
    """Raised instead of downloading: carries the name of the weights a builder asked for."""


# ------------------------------------------------------------------------- compact op cases


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _materialise(args: Sequence, upcast: bool = False) -> list:
    """Call the factories among ``args``; with ``upcast``, float16/bfloat16 tensors -> float32."""
    out = []
    for a in args:
        a = a() if callable(a) else a
        if isinstance(a, (list, tuple)) and not isinstance(a, str):
            a = type(a)(_materialise(a, upcast)) if any(isinstance(t, Tensor) for t in a) else a
        elif isinstance(a, Tensor):  # a copy: neither library may see the other's changes
            a = a.float() if upcast and a.dtype in LOW_PRECISION else a.clone()
        out.append(a)
    return out


def _low_precision_dtype(args: Sequence) -> torch.dtype | None:
    for a in args:
        if isinstance(a, Tensor) and a.dtype in LOW_PRECISION:
            return a.dtype
        if isinstance(a, (list, tuple)):
            found = _low_precision_dtype(a)
            if found is not None:
                return found
    return None


def op_case(
    op: str,
    name: str,
    *args: Any,
    expected: Any = EQUAL,
    tv: bool = True,
    autocast: torch.dtype | None = None,
    upcast: bool = False,
    **kwargs: Any,
) -> Case:
    """Case ``<op>-<name>``: ``rcnn_lab.ops.<op>(*args, **kwargs)`` against torchvision's.

    Callable arguments are factories, called anew for each library. ``tv=False``: never hand
    the input to torchvision (a crash risk). ``autocast``: both run under CPU autocast of that
    dtype. ``upcast``: torchvision gets float16/bfloat16 tensors as float32 and its floating
    result is rounded back to that dtype -- the accurate oracle for a low-precision input
    (torchvision's CPU kernels have no bfloat16 NMS/RoIAlign, and round every step in float16).
    """

    def call(lib: Any, up: bool) -> Callable[[], Any]:
        def run() -> Any:
            values = _materialise(args)
            low = _low_precision_dtype(values)
            if up:
                values = _materialise(values, upcast=True)
            result = getattr(lib, op)(*values, **kwargs)
            if up and low is not None and isinstance(result, Tensor) and result.is_floating_point():
                result = result.to(low)
            return result

        return in_autocast(run, autocast) if autocast is not None else run

    return Case(
        f"{op}-{name}", call(rcnn_lab.ops, False), call(tvops, upcast) if tv else None, expected
    )
