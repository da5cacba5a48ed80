"""RoI heads: box heads, fastrcnn_loss and RoIHeads, by hand and against torchvision.

Our RoIHeads (with rcnn_lab's pooler) and torchvision's (with its own) get the same weights, the
same features and proposals and the same seed; losses, gradients, sampled RoIs and detections
must agree (float64 to ~1e-10, float32 within real tolerances).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models.detection import faster_rcnn as tv_faster_rcnn
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.ops import MultiScaleRoIAlign as TVMultiScaleRoIAlign

from rcnn_lab.ops.poolers import MultiScaleRoIAlign
from rcnn_lab.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    RoIHeads,
    TwoMLPHead,
    fastrcnn_loss,
)

CHANNELS, NUM_CLASSES, REPRESENTATION = 8, 5, 32
LEVELS = ["0", "1", "2", "3"]
PADDED = (256, 320)  # the batch's padded (height, width)
IMAGE_SIZES = [(250, 310), (200, 320), (256, 256)]
HEAD_ARGS = dict(
    fg_iou_thresh=0.5,
    bg_iou_thresh=0.5,
    batch_size_per_image=512,
    positive_fraction=0.25,
    bbox_reg_weights=None,
    score_thresh=0.05,
    nms_thresh=0.5,
    detections_per_img=100,
)


def make_heads(dtype=torch.float64, num_classes=NUM_CLASSES, **overrides):
    """(ours, torchvision's) RoIHeads with identical random weights."""
    args = {**HEAD_ARGS, **overrides}
    g = torch.Generator().manual_seed(0)
    ours = RoIHeads(
        MultiScaleRoIAlign(LEVELS, 7, 2),
        TwoMLPHead(CHANNELS * 49, REPRESENTATION),
        FastRCNNPredictor(REPRESENTATION, num_classes),
        **args,
    )
    with torch.no_grad():  # large enough weights that the scores differ clearly across RoIs
        for param in ours.parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 1
            std = (3.0 / fan_in) ** 0.5 if param.dim() > 1 else 0.3
            param.copy_(torch.randn(param.shape, generator=g) * std)
    theirs = tv_roi_heads.RoIHeads(
        TVMultiScaleRoIAlign(LEVELS, 7, 2),
        tv_faster_rcnn.TwoMLPHead(CHANNELS * 49, REPRESENTATION),
        tv_faster_rcnn.FastRCNNPredictor(REPRESENTATION, num_classes),
        **args,
    )
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(dtype), theirs.to(dtype)


def features_of(dtype=torch.float64, seed=0, num_images=3, requires_grad=False):
    """FPN-like feature maps for a batch padded to PADDED (strides 4, 8, 16, 32)."""
    g = torch.Generator().manual_seed(seed)
    height, width = PADDED
    shapes = [(num_images, CHANNELS, height >> (2 + i), width >> (2 + i)) for i in range(4)]
    return OrderedDict(
        (name, torch.randn(shape, generator=g, dtype=dtype).requires_grad_(requires_grad))
        for name, shape in zip(LEVELS, shapes, strict=True)
    )


def random_boxes(count, image_size, g, dtype=torch.float64, min_side=1.0, max_side=120.0):
    """[count, 4] boxes inside an image of (height, width)."""
    height, width = image_size
    xy = torch.rand(count, 2, generator=g, dtype=dtype) * torch.tensor(
        [width - min_side, height - min_side], dtype=dtype
    )
    wh = min_side + torch.rand(count, 2, generator=g, dtype=dtype) * (max_side - min_side)
    x2y2 = torch.minimum(xy + wh, torch.tensor([width, height], dtype=dtype))
    return torch.cat([xy, x2y2], dim=1)


def make_batch(seed=0, dtype=torch.float64, counts=(300, 200, 250), objects=(4, 0, 7)):
    """Proposals and targets for len(counts) images; an image with 0 objects is negative."""
    g = torch.Generator().manual_seed(seed)
    sizes = IMAGE_SIZES[: len(counts)]
    proposals, targets = [], []
    for count, num_objects, size in zip(counts, objects, sizes, strict=True):
        gt = random_boxes(num_objects, size, g, dtype, min_side=8.0)
        labels = torch.randint(1, NUM_CLASSES, (num_objects,), generator=g)
        # half the proposals are jittered copies of GT boxes, so there are real foregrounds
        near = (
            gt.repeat(count // 2 // max(num_objects, 1) + 1, 1)[: count // 2] if num_objects else gt
        )
        near = near + 6 * torch.randn(near.shape, generator=g, dtype=dtype)
        near = torch.cat([near[:, :2], torch.maximum(near[:, 2:], near[:, :2] + 1)], dim=1)
        rest = random_boxes(count - len(near), size, g, dtype)
        proposals.append(torch.cat([near, rest]))
        targets.append({"boxes": gt, "labels": labels})
    return proposals, targets, sizes


def run_training(heads, features, proposals, targets, sizes, seed=7):
    heads.train()
    torch.manual_seed(seed)
    _, losses = heads(features, [p.clone() for p in proposals], sizes, targets)
    return losses


# ---------------------------------------------------------------------------- box heads


def test_two_mlp_head_keys_and_outputs_match_torchvision():
    ours = TwoMLPHead(CHANNELS * 49, REPRESENTATION).double()
    theirs = tv_faster_rcnn.TwoMLPHead(CHANNELS * 49, REPRESENTATION).double()
    assert (
        list(ours.state_dict())
        == list(theirs.state_dict())
        == [
            "fc6.weight",
            "fc6.bias",
            "fc7.weight",
            "fc7.bias",
        ]
    )
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(11, CHANNELS, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert ours(x).shape == (11, REPRESENTATION) and (ours(x) >= 0).all()


@pytest.mark.parametrize("norm_layer", [None, nn.BatchNorm2d])
@pytest.mark.parametrize("training", [False, True])
def test_conv_fc_head_keys_and_outputs_match_torchvision(norm_layer, training):
    args = ((CHANNELS, 7, 7), [16, 16], [24, 12])
    ours = FastRCNNConvFCHead(*args, norm_layer=norm_layer).double()
    theirs = tv_faster_rcnn.FastRCNNConvFCHead(*args, norm_layer=norm_layer).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        for param in ours.parameters():
            param.normal_()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.train(training)
    theirs.train(training)
    x = torch.randn(9, CHANNELS, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    assert ours(x).shape == (9, 12)


def test_conv_fc_head_initialises_convolutions_like_kaiming():
    head = FastRCNNConvFCHead((64, 7, 7), [256], [8])
    conv = head[0][0]
    assert conv.bias is not None and conv.bias.abs().max() == 0
    # He init with fan_out = 256 * 9: std sqrt(2 / 2304)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)


def test_predictor_matches_torchvision_and_rejects_spatial_maps():
    ours = FastRCNNPredictor(REPRESENTATION, NUM_CLASSES).double()
    theirs = tv_faster_rcnn.FastRCNNPredictor(REPRESENTATION, NUM_CLASSES).double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(6, REPRESENTATION, 1, 1, dtype=torch.float64)
    for a, b in zip(ours(x), theirs(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ours(x)[0].shape == (6, NUM_CLASSES) and ours(x)[1].shape == (6, NUM_CLASSES * 4)
    with pytest.raises(ValueError, match=r"\[K, D, 1, 1\].*\(6, 32, 2, 2\)"):
        ours(torch.randn(6, REPRESENTATION, 2, 2, dtype=torch.float64))


# ---------------------------------------------------------------------------- the losses


def test_fastrcnn_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    deltas = torch.zeros(3, 12)
    deltas[1, 4:8] = torch.tensor([0.05, -0.5, 0.0, 0.0])  # class 1 of RoI 1
    deltas[2, 8:12] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # class 2 of RoI 2
    deltas[0, 4:] = 99.0  # RoI 0 is background: its deltas must not count
    labels = [torch.tensor([0, 1]), torch.tensor([2])]
    targets = [torch.zeros(2, 4), torch.zeros(1, 4)]
    loss_cls, loss_box = fastrcnn_loss(logits, deltas, labels, targets)
    log_p = [logits[i].log_softmax(0)[c] for i, c in enumerate([0, 1, 2])]
    assert loss_cls.item() == pytest.approx(-sum(log_p).item() / 3)
    beta = 1 / 9

    def smooth_l1(x):
        return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta

    expected = (smooth_l1(0.05) + smooth_l1(-0.5) + smooth_l1(1.0)) / 3  # / all 3 RoIs
    assert loss_box.item() == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=3).filter(lambda c: sum(c) > 0),
    num_classes=st.integers(2, 6),
    foreground=st.sampled_from([0.0, 0.25, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_fastrcnn_loss_matches_torchvision(counts, num_classes, foreground, seed):
    g = torch.Generator().manual_seed(seed)
    total = sum(counts)
    logits = torch.randn(total, num_classes, generator=g, dtype=torch.float64)
    deltas = torch.randn(total, num_classes * 4, generator=g, dtype=torch.float64)
    labels = [
        torch.randint(1, num_classes, (n,), generator=g) * (torch.rand(n, generator=g) < foreground)
        for n in counts
    ]
    targets = [torch.randn(n, 4, generator=g, dtype=torch.float64) * 0.2 for n in counts]
    ours = fastrcnn_loss(logits, deltas, labels, targets)
    theirs = tv_roi_heads.fastrcnn_loss(logits, deltas, labels, targets)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    if foreground == 0.0:
        assert ours[1].item() == 0.0


# ---------------------------------------------------------------------------- training


@pytest.mark.parametrize("objects", [(4, 0, 7), (0, 0, 0), (1, 12, 3)])
def test_training_losses_and_gradients_match_torchvision(objects):
    ours, theirs = make_heads()
    proposals, targets, sizes = make_batch(counts=(300, 200, 250), objects=objects)
    results = []
    for heads in (ours, theirs):
        features = features_of(requires_grad=True)
        losses = run_training(heads, features, proposals, targets, sizes)
        sum(losses.values()).backward()
        grads = {name: p.grad for name, p in heads.named_parameters()}
        grads.update({f"feature {k}": v.grad for k, v in features.items()})
        results.append((losses, grads))
    (ours_losses, ours_grads), (tv_losses, tv_grads) = results
    assert list(ours_losses) == ["loss_classifier", "loss_box_reg"]
    for key in tv_losses:
        torch.testing.assert_close(ours_losses[key], tv_losses[key], rtol=1e-10, atol=1e-12)
    assert ours_losses["loss_classifier"] > 0
    assert (ours_losses["loss_box_reg"] > 0) == any(objects)
    assert ours_grads.keys() == tv_grads.keys()
    for name, grad in tv_grads.items():
        scale = grad.abs().max().clamp_min(1e-30)
        assert ((ours_grads[name] - grad).abs().max() / scale) < 1e-8, name
    # the RoI features pass the loss's gradient back to the feature maps
    assert ours_grads["feature 0"].abs().sum() > 0


def test_sampled_rois_labels_and_targets_match_torchvision():
    ours, theirs = make_heads()
    proposals, targets, _ = make_batch(seed=3, objects=(5, 0, 2))
    torch.manual_seed(11)
    mine = ours.select_training_samples([p.clone() for p in proposals], targets)
    torch.manual_seed(11)
    reference = theirs.select_training_samples([p.clone() for p in proposals], targets)
    names = ["proposals", "matched_idxs", "labels"]
    for name, a_list, b_list in zip(names, mine[:3], reference[:3], strict=True):
        for a, b in zip(a_list, b_list, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for image, (a, b, labels) in enumerate(zip(mine[3], reference[3], mine[2], strict=True)):
        positive = labels > 0
        torch.testing.assert_close(a[positive], b[positive], rtol=0, atol=0)
        assert torch.isfinite(a).all(), f"image {image}: regression targets must be finite"
    # 512 RoIs per image (enough candidates), at most 25 % foreground, GT boxes included
    for labels, gt in zip(mine[2], targets, strict=True):
        assert len(labels) <= 512 and (labels > 0).sum() <= 128
        assert (labels > 0).sum() >= min(len(gt["boxes"]), 1)


def test_images_without_objects_give_zero_box_loss_and_finite_targets():
    ours, _ = make_heads()
    proposals, targets, sizes = make_batch(objects=(0, 0, 0))
    losses = run_training(ours, features_of(), proposals, targets, sizes)
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_classifier"])
    torch.manual_seed(0)
    _, _, labels, regression = ours.select_training_samples(proposals, targets)
    assert all((lab == 0).all() for lab in labels)
    assert all(torch.equal(r, torch.zeros_like(r)) for r in regression)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    objects=st.tuples(st.integers(0, 6), st.integers(0, 6)),
    fg=st.sampled_from([(0.5, 0.5), (0.6, 0.3), (0.7, 0.1)]),
    batch=st.sampled_from([(8, 0.5), (512, 0.25), (64, 1.0)]),
)
def test_training_parity_random_settings(seed, objects, fg, batch):
    ours, theirs = make_heads(
        fg_iou_thresh=fg[0],
        bg_iou_thresh=fg[1],
        batch_size_per_image=batch[0],
        positive_fraction=batch[1],
        bbox_reg_weights=(1.0, 2.0, 3.0, 4.0),
    )
    proposals, targets, sizes = make_batch(seed=seed, counts=(60, 90), objects=objects)
    features = features_of(num_images=2, seed=seed)
    a = run_training(ours, features, proposals, targets, sizes, seed=seed)
    b = run_training(theirs, features, proposals, targets, sizes, seed=seed)
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- inference


def run_inference(heads, features, proposals, sizes):
    heads.eval()
    with torch.no_grad():
        detections, losses = heads(features, proposals, sizes)
    assert losses == {}
    return detections


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_detections_match_torchvision(dtype):
    ours, theirs = make_heads(dtype)
    proposals, _, sizes = make_batch(seed=5, dtype=dtype, counts=(400, 300, 350))
    features = features_of(dtype)
    mine = run_inference(ours, features, proposals, sizes)
    reference = run_inference(theirs, features, proposals, sizes)
    assert len(mine) == 3
    for a, b in zip(mine, reference, strict=True):
        assert set(a) == {"boxes", "labels", "scores"}
        assert 0 < len(b["boxes"]) and a["labels"].dtype == torch.int64
        torch.testing.assert_close(a["labels"], b["labels"], rtol=0, atol=0)
        if dtype == torch.float64:
            torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-10)
            torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-12)
        else:
            torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-3)
            torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-5)


def postprocess_both(ours, theirs, logits, deltas, proposals, sizes):
    a = ours.postprocess_detections(logits, deltas, proposals, sizes)
    b = theirs.postprocess_detections(logits, deltas, proposals, sizes)
    for name, a_list, b_list in zip(("boxes", "scores", "labels"), a, b, strict=True):
        for x, y in zip(a_list, b_list, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12, msg=name)
    return a


def test_postprocess_adversarial_cases():
    ours, theirs = make_heads(score_thresh=0.2, detections_per_img=5)
    proposals = [
        torch.tensor(
            [
                [10.0, 10.0, 50.0, 50.0],
                [10.0, 10.0, 50.0, 50.0],  # a duplicate
                [-30.0, -20.0, 400.0, 500.0],  # sticks out of the image: clipped
                [20.0, 20.0, 20.005, 40.0],  # 0.005 px wide: a "small box", dropped
                [100.0, 100.0, 140.0, 150.0],
                [0.0, 0.0, 310.0, 250.0],  # the whole image
            ],
            dtype=torch.float64,
        ),
        torch.zeros(0, 4, dtype=torch.float64),  # an image with no proposals at all
    ]
    logits = torch.tensor(
        [
            [0.0, 3.0, 0.0, 0.0, 0.0],
            [0.0, 2.9, 0.0, 0.0, 0.0],  # same box, same class, lower score: suppressed
            [0.0, 0.0, 4.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 5.0, 0.0],
            [5.0, 0.0, 0.0, 0.0, 0.0],  # background wins: nothing passes the threshold
            [0.0, 1.2, 1.1, 1.0, 0.9],  # four classes around 0.2: threshold decides
        ],
        dtype=torch.float64,
    )
    deltas = torch.zeros(6, NUM_CLASSES * 4, dtype=torch.float64)
    sizes = [(250, 310), (100, 100)]
    boxes, scores, labels = postprocess_both(ours, theirs, logits, deltas, proposals, sizes)
    assert len(boxes[1]) == 0 and boxes[1].shape == (0, 4)
    assert (boxes[0][:, 2] <= 310).all() and (boxes[0][:, 3] <= 250).all()
    assert (boxes[0] >= 0).all() and (scores[0] > 0.2).all()
    assert len(boxes[0]) <= 5 and scores[0].equal(scores[0].sort(descending=True).values)
    # the duplicate (RoI 1) was suppressed by its twin of the same class
    assert (labels[0] == 1).sum() <= 2


@settings(max_examples=30, deadline=None)
@given(
    score_thresh=st.sampled_from([0.0, 0.05, 0.3, 0.9]),
    nms_thresh=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    detections_per_img=st.sampled_from([0, 1, 7, 100]),
    num_classes=st.sampled_from([2, 5]),
    seed=st.integers(0, 2**16),
)
def test_postprocess_parity_random(score_thresh, nms_thresh, detections_per_img, num_classes, seed):
    ours, theirs = make_heads(
        num_classes=num_classes,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    g = torch.Generator().manual_seed(seed)
    proposals = [random_boxes(40, size, g) for size in IMAGE_SIZES[:2]]
    logits = 2 * torch.randn(80, num_classes, generator=g, dtype=torch.float64)
    deltas = 0.5 * torch.randn(80, num_classes * 4, generator=g, dtype=torch.float64)
    boxes, _, _ = postprocess_both(ours, theirs, logits, deltas, proposals, IMAGE_SIZES[:2])
    assert all(len(b) <= detections_per_img for b in boxes)


# ---------------------------------------------------------------------------- inputs


def test_mask_and_keypoint_branches_are_rejected():
    pool, head = MultiScaleRoIAlign(LEVELS, 7, 2), TwoMLPHead(CHANNELS * 49, 8)
    with pytest.raises(NotImplementedError, match="mask_head"):
        RoIHeads(pool, head, FastRCNNPredictor(8, 3), **HEAD_ARGS, mask_head=nn.Identity())
    heads = RoIHeads(pool, head, FastRCNNPredictor(8, 3), **HEAD_ARGS, mask_head=None)
    assert not heads.has_mask() and not heads.has_keypoint() and heads.mask_head is None


def test_target_validation():
    ours, _ = make_heads()
    proposals, targets, sizes = make_batch(counts=(30, 30), objects=(2, 1))
    features = features_of(num_images=2)
    ours.train()
    with pytest.raises(ValueError, match="targets should not be None"):
        ours(features, proposals, sizes, None)
    with pytest.raises(ValueError, match=r"targets\[1\]: expected a 'labels' key"):
        ours(features, proposals, sizes, [targets[0], {"boxes": targets[1]["boxes"]}])
    bad = [targets[0], {**targets[1], "boxes": targets[1]["boxes"].long()}]
    with pytest.raises(TypeError, match="float"):
        ours(features, proposals, sizes, bad)
    bad = [targets[0], {**targets[1], "labels": targets[1]["labels"].int()}]
    with pytest.raises(TypeError, match="int64"):
        ours(features, proposals, sizes, bad)
    for label in (NUM_CLASSES, -3):
        bad = [targets[0], {**targets[1], "labels": torch.tensor([label])}]
        with pytest.raises(ValueError, match=rf"\[0, {NUM_CLASSES}\).*found label {label}"):
            ours(features, proposals, sizes, bad)


def test_loss_gradient_reaches_every_head_parameter():
    ours, _ = make_heads()
    proposals, targets, sizes = make_batch(objects=(3, 2, 1))
    losses = run_training(ours, features_of(), proposals, targets, sizes)
    sum(losses.values()).backward()
    for name, param in ours.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("training", [False, True])
def test_batch_size_mismatches_are_named(training):
    """One proposal list and one image size per image of the features' batch; a short list used
    to fail inside zip(), or worse, to train silently on the images it still covered."""
    ours, _ = make_heads()
    ours.train(training)
    proposals, targets, sizes = make_batch()
    targets = targets if training else None
    cases = [
        (
            features_of(),
            proposals[:2],
            sizes,
            r"N = 3 .*len\(proposals\) = 2, len\(image_shapes\) = 3",
        ),
        (features_of(), proposals, sizes[:2], r"N = 3 .*len\(image_shapes\) = 2"),
        (features_of(num_images=2), proposals, sizes, r"N = 2 .*len\(proposals\) = 3"),
    ]
    for features, boxes, shapes, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(features, boxes, shapes, targets)
    if training:
        with pytest.raises(ValueError, match=r"len\(targets\) = 2"):
            ours(features_of(), proposals, sizes, targets[:2])


def test_fastrcnn_loss_without_rois_is_zero_and_backpropagates():
    """K = 0 sampled RoIs: torchvision's losses are NaN (a mean over nothing); ours are 0 and
    attached to the graph (a documented difference)."""
    weight = torch.randn(REPRESENTATION, NUM_CLASSES * 5, dtype=torch.float64, requires_grad=True)
    outputs = torch.zeros(0, REPRESENTATION, dtype=torch.float64) @ weight  # [0, C*5]
    logits, deltas = outputs.split([NUM_CLASSES, NUM_CLASSES * 4], dim=1)
    labels = [torch.zeros(0, dtype=torch.int64)] * 2
    targets = [torch.zeros(0, 4, dtype=torch.float64)] * 2
    theirs = tv_roi_heads.fastrcnn_loss(logits, deltas, labels, targets)
    assert all(torch.isnan(loss) for loss in theirs)
    loss_classifier, loss_box_reg = fastrcnn_loss(logits, deltas, labels, targets)
    assert loss_classifier == 0 and loss_box_reg == 0
    assert loss_classifier.dtype == loss_box_reg.dtype == torch.float64
    (loss_classifier + loss_box_reg).backward()
    assert weight.grad is not None and not weight.grad.any()


def test_training_without_proposals_or_objects_gives_zero_losses():
    ours, _ = make_heads()
    features = features_of(requires_grad=True)
    proposals = [torch.zeros(0, 4, dtype=torch.float64)] * 3
    targets = [
        {
            "boxes": torch.zeros(0, 4, dtype=torch.float64),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
    ] * 3
    losses = run_training(ours, features, proposals, targets, IMAGE_SIZES)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert all(loss == 0 for loss in losses.values())
    sum(losses.values()).backward()
    for name, param in ours.named_parameters():
        assert param.grad is not None and not param.grad.any(), name
    assert all(feature.grad is not None for feature in features.values())
