"""RPNHead and RegionProposalNetwork: parity with torchvision for the same weights, features,
targets and seed (proposals, losses, gradients), in float64 (exact) and float32."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection.image_list import ImageList as TVImageList

from rcnn_lab import AnchorGenerator, ImageList, RegionProposalNetwork, RPNHead
from rcnn_lab.rpn import concat_box_prediction_layers

IN_CHANNELS = 8
TWO_LEVELS = (((32,), (64,)), ((0.5, 1.0, 2.0),) * 2)
FPN_LEVELS = (((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)


def make_pair(levels=TWO_LEVELS, dtype=torch.float64, pre=(200, 100), post=(100, 50), **kwargs):
    """A torchvision RPN and an rcnn_lab RPN with identical weights and settings."""
    settings_ = dict(
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n=dict(training=pre[0], testing=pre[1]),
        post_nms_top_n=dict(training=post[0], testing=post[1]),
        nms_thresh=0.7,
    )
    settings_.update(kwargs)
    num_anchors = len(levels[1][0])
    torch.manual_seed(0)
    theirs = tv_rpn.RegionProposalNetwork(
        tv_rpn.AnchorGenerator(*levels), tv_rpn.RPNHead(IN_CHANNELS, num_anchors), **settings_
    ).to(dtype)
    ours = RegionProposalNetwork(
        AnchorGenerator(*levels), RPNHead(IN_CHANNELS, num_anchors), **settings_
    ).to(dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def make_batch(image_sizes, num_levels, dtype, seed=1, num_boxes=(3, 0)):
    """Padded images, one feature map per level (stride 4, 8, ...) and targets per image."""
    g = torch.Generator().manual_seed(seed)
    height = max(h for h, _ in image_sizes)
    width = max(w for _, w in image_sizes)
    images = torch.zeros(len(image_sizes), 3, height, width, dtype=dtype)
    features = {
        str(level): torch.randn(
            len(image_sizes),
            IN_CHANNELS,
            height // 2 ** (level + 2),
            width // 2 ** (level + 2),
            generator=g,
            dtype=dtype,
        )
        for level in range(num_levels)
    }
    targets = []
    for (h, w), count in zip(image_sizes, num_boxes, strict=True):
        corners = torch.rand(count, 2, 2, generator=g, dtype=dtype) * torch.tensor(
            [w, h], dtype=dtype
        )  # [G, 2 corners, (x, y)]
        boxes = torch.cat([corners.min(1).values, corners.max(1).values + 4], dim=1)  # [G, 4]
        targets.append({"boxes": boxes})
    return images, features, targets


def run_both(theirs, ours, images, image_sizes, features, targets, train, seed=5):
    theirs.train(train)
    ours.train(train)
    torch.manual_seed(seed)
    their_out = theirs(TVImageList(images, image_sizes), features, targets)
    torch.manual_seed(seed)
    our_out = ours(ImageList(images, image_sizes), features, targets)
    return their_out, our_out


def assert_same(their_out, our_out, rtol=0.0, atol=0.0):
    (their_boxes, their_losses), (our_boxes, our_losses) = their_out, our_out
    assert len(their_boxes) == len(our_boxes)
    for a, b in zip(their_boxes, our_boxes, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol)
    assert set(their_losses) == set(our_losses)
    for key in their_losses:
        assert their_losses[key].dtype == our_losses[key].dtype
        torch.testing.assert_close(our_losses[key], their_losses[key], rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------ head


def test_head_keys_and_seeded_init_equal_torchvision():
    for depth in (0, 1, 2):
        torch.manual_seed(3)
        theirs = tv_rpn.RPNHead(IN_CHANNELS, 3, conv_depth=depth)
        torch.manual_seed(3)
        ours = RPNHead(IN_CHANNELS, 3, conv_depth=depth)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for (name, a), b in zip(
            ours.state_dict().items(), theirs.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name


def test_head_init_statistics():
    head = RPNHead(64, 9)
    for name, param in head.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(param, torch.zeros_like(param))
        else:
            assert (
                0.008 < float(param.detach().std()) < 0.012
                and abs(float(param.detach().mean())) < 0.002
            )


def test_head_loads_version_1_keys():
    theirs = tv_rpn.RPNHead(IN_CHANNELS, 3)
    old = {k.replace("conv.0.0.", "conv."): v for k, v in theirs.state_dict().items()}
    assert "conv.weight" in old  # a plain dict: no metadata, i.e. version None
    ours = RPNHead(IN_CHANNELS, 3)
    ours.load_state_dict(old, strict=True)
    assert torch.equal(ours.conv[0][0].weight, theirs.conv[0][0].weight)
    # nested inside an RPN, with explicit version-1 metadata
    their_rpn, our_rpn = make_pair()
    state = their_rpn.state_dict()
    old_state = type(state)(
        (k.replace("head.conv.0.0.", "head.conv."), v) for k, v in state.items()
    )
    old_state._metadata = {k: dict(v) for k, v in state._metadata.items()}
    old_state._metadata["head"]["version"] = 1
    our_rpn.head.conv[0][0].weight.data.zero_()
    our_rpn.load_state_dict(old_state, strict=True)
    assert torch.equal(our_rpn.head.conv[0][0].weight, their_rpn.head.conv[0][0].weight)


def test_head_outputs_and_flattening_equal_torchvision():
    theirs = tv_rpn.RPNHead(IN_CHANNELS, 3)
    ours = RPNHead(IN_CHANNELS, 3)
    ours.load_state_dict(theirs.state_dict())
    feats = [torch.randn(2, IN_CHANNELS, 7, 5), torch.randn(2, IN_CHANNELS, 4, 3)]
    their_out, our_out = theirs(feats), ours(feats)
    for a, b in zip(their_out[0] + their_out[1], our_out[0] + our_out[1], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert our_out[0][0].shape == (2, 3, 7, 5) and our_out[1][0].shape == (2, 12, 7, 5)
    for num_classes in (1, 2):  # C = 2: the paper's two-logit (softmax) variant
        cls = [torch.randn(2, 3 * num_classes, 7, 5), torch.randn(2, 3 * num_classes, 4, 3)]
        reg = [torch.randn(2, 12, 7, 5), torch.randn(2, 12, 4, 3)]
        expected = tv_rpn.concat_box_prediction_layers(cls, reg)
        got = concat_box_prediction_layers(cls, reg)
        assert got[0].shape == (2 * 3 * (35 + 12), num_classes)
        for a, b in zip(expected, got, strict=True):
            assert torch.equal(a, b)


def test_head_bad_arguments():
    with pytest.raises(ValueError, match="num_anchors"):
        RPNHead(8, 0)
    with pytest.raises(ValueError, match=r"\[N, D, H, W\]"):
        RPNHead(8, 3)([torch.zeros(8, 4, 4)])


# ------------------------------------------------------------------------------- network


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("levels", [TWO_LEVELS, FPN_LEVELS], ids=["2 levels", "5 levels"])
def test_parity_float64_exact(train, levels):
    image_sizes = [(128, 160), (100, 130), (128, 90)]
    theirs, ours = make_pair(levels)
    images, features, targets = make_batch(
        image_sizes, len(levels[0]), torch.float64, num_boxes=(3, 0, 6)
    )
    their_out, our_out = run_both(theirs, ours, images, image_sizes, features, targets, train)
    assert_same(their_out, our_out)  # bit-for-bit
    assert all(len(b) == (100 if train else 50) for b in our_out[0])
    assert set(our_out[1]) == ({"loss_objectness", "loss_rpn_box_reg"} if train else set())
    if train:  # the batch has positives: the box loss is exercised too
        assert our_out[1]["loss_rpn_box_reg"].item() > 0


def test_parity_float32():
    image_sizes = [(128, 160), (96, 128)]
    theirs, ours = make_pair(FPN_LEVELS, dtype=torch.float32)
    images, features, targets = make_batch(image_sizes, 5, torch.float32, num_boxes=(4, 2))
    for train in (True, False):
        their_out, our_out = run_both(theirs, ours, images, image_sizes, features, targets, train)
        assert_same(their_out, our_out, rtol=1e-5, atol=1e-4)


def test_parity_negative_images_and_thresholds():
    image_sizes = [(96, 128), (96, 128)]
    # an all-background batch, a tiny pre-NMS top-n, a score threshold and a loose NMS
    theirs, ours = make_pair(pre=(5, 5), post=(7, 3), score_thresh=0.5, nms_thresh=0.3)
    images, features, targets = make_batch(image_sizes, 2, torch.float64, num_boxes=(0, 0))
    for train in (True, False):
        their_out, our_out = run_both(theirs, ours, images, image_sizes, features, targets, train)
        assert_same(their_out, our_out)
        assert all(len(boxes) <= (7 if train else 3) for boxes in our_out[0])
        if train:  # no positives anywhere: only background is learnt, the box loss is 0
            assert our_out[1]["loss_rpn_box_reg"].item() == 0.0
            assert our_out[1]["loss_objectness"].item() > 0.0


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    heights=st.lists(st.integers(40, 128), min_size=1, max_size=3),
    num_boxes=st.lists(st.integers(0, 5), min_size=3, max_size=3),
    nms_thresh=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    train=st.booleans(),
)
def test_parity_hypothesis_float64(seed, heights, num_boxes, nms_thresh, train):
    image_sizes = [(h, 128 - h // 3) for h in heights]
    theirs, ours = make_pair(nms_thresh=nms_thresh, batch_size_per_image=32)
    images, features, targets = make_batch(
        image_sizes, 2, torch.float64, seed=seed, num_boxes=num_boxes[: len(heights)]
    )
    their_out, our_out = run_both(theirs, ours, images, image_sizes, features, targets, train, seed)
    assert_same(their_out, our_out)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 0.0), (torch.float32, 1e-6)])
def test_loss_gradients_equal_torchvision(dtype, tol):
    image_sizes = [(128, 160), (100, 150)]
    theirs, ours = make_pair(FPN_LEVELS, dtype=dtype)
    images, features, targets = make_batch(image_sizes, 5, dtype, num_boxes=(5, 1))
    their_out, our_out = run_both(theirs, ours, images, image_sizes, features, targets, True)
    sum(their_out[1].values()).backward()
    sum(our_out[1].values()).backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert a.grad is not None and float(a.grad.abs().sum()) > 0, name
        torch.testing.assert_close(a.grad, b.grad, rtol=tol, atol=tol)


def test_no_gradient_through_proposals():
    _, ours = make_pair()
    images, features, targets = make_batch([(96, 128)], 2, torch.float64, num_boxes=(2,))
    ours.train()
    boxes, losses = ours(ImageList(images, [(96, 128)]), features, targets)
    assert not boxes[0].requires_grad
    assert losses["loss_objectness"].requires_grad and losses["loss_rpn_box_reg"].requires_grad


def test_top_n_follows_mode():
    _, ours = make_pair(pre=(11, 22), post=(33, 44))
    assert (ours.pre_nms_top_n(), ours.post_nms_top_n()) == (11, 33)
    ours.eval()
    assert (ours.pre_nms_top_n(), ours.post_nms_top_n()) == (22, 44)


def test_training_without_targets_raises():
    _, ours = make_pair()
    images, features, _ = make_batch([(96, 128)], 2, torch.float64, num_boxes=(1,))
    with pytest.raises(ValueError, match="targets"):
        ours.train()(ImageList(images, [(96, 128)]), features, None)
    with pytest.raises(ValueError, match=r"\['boxes'\]"):
        ours(ImageList(images, [(96, 128)]), features, [{"boxes": torch.zeros(4)}])


def test_parity_realistic_fpn_size_float32():
    """torchvision's Faster R-CNN settings on a 512 x 640 batch: ~87k anchors, thousands of NMS
    candidates per image, bitwise-equal proposals and losses in float32."""
    levels = (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    theirs, ours = make_pair(levels, dtype=torch.float32, pre=(2000, 1000), post=(2000, 1000))
    image_sizes = [(512, 640), (480, 600)]
    images, features, targets = make_batch(image_sizes, 5, torch.float32, num_boxes=(8, 3))
    for train in (True, False):
        their_out, our_out = run_both(theirs, ours, images, image_sizes, features, targets, train)
        assert_same(their_out, our_out)
        assert all(len(b) == (2000 if train else 1000) for b in our_out[0])


def test_batch_size_mismatches_are_named():
    """The anchors follow images.image_sizes, the predictions the feature maps: a mismatch used
    to fail deep inside the box coder with an error about rel_codes."""
    _, ours = make_pair()
    sizes = [(96, 128), (80, 100)]
    images, features, _ = make_batch(sizes, 2, torch.float64, num_boxes=(1, 0))
    ours.eval()
    with pytest.raises(ValueError, match=r"image_sizes lists 3 sizes .* batch of 2 images"):
        ours(ImageList(images, [*sizes, (50, 60)]), features)
    with pytest.raises(ValueError, match=r"image_sizes lists 1 sizes .* batch of 2 images"):
        ours(ImageList(images, sizes[:1]), features)
    short = {**features, "1": features["1"][:1]}
    with pytest.raises(ValueError, match=r"features\['1'\] holds a batch of 1 .* holds 2"):
        ours(ImageList(images, sizes), short)
