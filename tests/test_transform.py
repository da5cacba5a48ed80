"""GeneralizedRCNNTransform against torchvision's: images, sizes, targets, RNG and postprocess."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection.transform import GeneralizedRCNNTransform as TvTransform

from rcnn_lab import GeneralizedRCNNTransform, ImageList
from rcnn_lab.transform import ImageDtypeError, resize_boxes

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZES = [(37, 53), (64, 48), (50, 50)]  # landscape, portrait, square


def _pair(min_size=80, max_size=120, **kwargs):
    ours = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD, **kwargs)
    theirs = TvTransform(min_size, max_size, MEAN, STD, **kwargs)
    return ours, theirs


def _inputs(dtype=torch.float32, sizes=SIZES, seed=0):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for h, w in sizes:
        images.append(torch.rand(3, h, w, generator=g).to(dtype))
        xy = torch.rand(4, 2, generator=g) * torch.tensor([w, h])
        boxes = torch.cat([xy[:2].min(0).values, xy[2:].max(0).values]).reshape(1, 4)
        boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, w, h]])]).to(dtype)  # [2, 4]
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2])})
    return images, targets


def _assert_same(ours_out, theirs_out):
    (ours_list, ours_targets), (theirs_list, theirs_targets) = ours_out, theirs_out
    assert isinstance(ours_list, ImageList)
    assert ours_list.image_sizes == theirs_list.image_sizes
    assert ours_list.tensors.dtype == theirs_list.tensors.dtype
    torch.testing.assert_close(ours_list.tensors, theirs_list.tensors, rtol=0, atol=0)
    if theirs_targets is None:
        assert ours_targets is None
        return
    for ours_t, theirs_t in zip(ours_targets, theirs_targets):
        assert ours_t.keys() == theirs_t.keys()
        for key in theirs_t:
            torch.testing.assert_close(ours_t[key], theirs_t[key], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_targets", [True, False])
def test_eval_matches_torchvision_bit_for_bit(dtype, with_targets):
    ours, theirs = _pair()
    ours.eval(), theirs.eval()
    images, targets = _inputs(dtype)
    targets = targets if with_targets else None
    _assert_same(ours(images, targets), theirs(images, targets))
    out, _ = ours(images)
    assert out.tensors.shape[-2] % 32 == 0 and out.tensors.shape[-1] % 32 == 0
    assert out.image_sizes == [(80, 114), (106, 80), (80, 80)]  # short side 80, long <= 120


def test_max_size_caps_the_longer_side():
    ours, theirs = _pair(min_size=100, max_size=120)
    ours.eval(), theirs.eval()
    images, targets = _inputs(sizes=[(30, 90), (200, 20)])
    _assert_same(ours(images, targets), theirs(images, targets))
    assert ours(images)[0].image_sizes == [(40, 120), (120, 12)]


def test_train_draws_min_size_like_torchvision():
    ours, theirs = _pair(min_size=(64, 72, 80, 96, 112), max_size=200)
    images, targets = _inputs()
    torch.manual_seed(5)
    ours_out = ours(images, targets)
    after_ours = torch.rand(3)
    torch.manual_seed(5)
    theirs_out = theirs(images, targets)
    after_theirs = torch.rand(3)
    _assert_same(ours_out, theirs_out)
    assert torch.equal(after_ours, after_theirs)  # the RNG was consumed identically
    shorts = {min(s) for s in ours_out[0].image_sizes}
    assert shorts <= {64, 72, 80, 96, 112}


def test_train_sizes_vary_with_the_seed():
    ours, _ = _pair(min_size=tuple(range(40, 140, 4)), max_size=400)
    images, _ = _inputs()
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        seen.add(tuple(ours(images)[0].image_sizes))
    assert len(seen) > 1


def test_skip_resize_and_fixed_size_match_torchvision():
    images, targets = _inputs()
    ours, theirs = _pair(_skip_resize=True)
    _assert_same(ours(images, targets), theirs(images, targets))  # training: sizes kept
    assert ours(images)[0].image_sizes == SIZES
    ours, theirs = _pair(fixed_size=(70, 45))
    ours.eval(), theirs.eval()
    _assert_same(ours(images, targets), theirs(images, targets))
    assert ours(images)[0].image_sizes == [(45, 70)] * 3


def test_masks_and_keypoints_match_torchvision():
    ours, theirs = _pair()
    ours.eval(), theirs.eval()
    images, targets = _inputs()
    for i, (t, img) in enumerate(zip(targets, images)):
        masks = torch.zeros(2, *img.shape[-2:], dtype=torch.uint8)
        masks[:, 3:20, 5:30] = 1
        t["masks"] = masks
        t["keypoints"] = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(i)) * 30
    _assert_same(ours(images, targets), theirs(images, targets))


@pytest.mark.parametrize("divisible", [1, 16, 32, 64])
def test_padding_to_a_multiple(divisible):
    ours, theirs = _pair(size_divisible=divisible)
    ours.eval(), theirs.eval()
    images, _ = _inputs()
    _assert_same(ours(images), theirs(images))
    batch = ours(images)[0]
    h, w = batch.image_sizes[0]
    assert batch.tensors.shape[-2] % divisible == 0
    assert torch.all(batch.tensors[0, :, h:, :] == 0) and torch.all(batch.tensors[0, :, :, w:] == 0)


def test_targets_and_images_of_the_caller_are_not_mutated():
    ours, _ = _pair()
    ours.eval()
    images, targets = _inputs()
    before_boxes = [t["boxes"].clone() for t in targets]
    before_images = [img.clone() for img in images]
    _, new_targets = ours(images, targets)
    for t, b in zip(targets, before_boxes):
        assert torch.equal(t["boxes"], b)
    for img, b in zip(images, before_images):
        assert torch.equal(img, b)
    assert new_targets[0] is not targets[0]
    assert not torch.equal(new_targets[0]["boxes"], targets[0]["boxes"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_postprocess_matches_torchvision(dtype):
    ours, theirs = _pair()
    ours.eval(), theirs.eval()
    images, _ = _inputs(dtype)
    batch, _ = ours(images)
    original = [tuple(img.shape[-2:]) for img in images]
    g = torch.Generator().manual_seed(3)
    result = [{"boxes": (torch.rand(5, 4, generator=g) * 80).to(dtype), "scores": torch.rand(5)}]
    result = result + [{"boxes": torch.zeros(0, 4, dtype=dtype), "scores": torch.zeros(0)}] * 2
    ours_res = ours.postprocess([dict(r) for r in result], batch.image_sizes, original)
    theirs_res = theirs.postprocess([dict(r) for r in result], batch.image_sizes, original)
    for a, b in zip(ours_res, theirs_res):
        assert a.keys() == b.keys()
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=0)
    assert ours_res[0]["boxes"] is not result[0]["boxes"]
    ours.train()
    assert ours.postprocess(result, batch.image_sizes, original) is result


def test_resize_then_postprocess_round_trips_boxes():
    ours, _ = _pair()
    ours.eval()
    images, targets = _inputs(torch.float64)
    batch, resized = ours(images, targets)
    back = ours.postprocess(resized, batch.image_sizes, [tuple(i.shape[-2:]) for i in images])
    for b, t in zip(back, targets):
        torch.testing.assert_close(b["boxes"], t["boxes"], rtol=1e-6, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 70), st.integers(1, 70)), min_size=1, max_size=3),
    min_size=st.integers(8, 96),
    max_size=st.integers(8, 160),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_sizes_match_torchvision(sizes, min_size, max_size, training, seed):
    ours, theirs = _pair(min_size=(min_size, min_size + 8), max_size=max_size)
    ours.train(training), theirs.train(training)
    images, targets = _inputs(sizes=sizes, seed=seed)
    torch.manual_seed(seed)
    try:
        theirs_out = theirs(images, targets)
    except RuntimeError:  # an image that would shrink to 0 pixels: ours refuses it clearly
        with pytest.raises(ValueError, match="images: an image of size .* would be resized to"):
            ours(images, targets)
        return
    torch.manual_seed(seed)
    _assert_same(ours(images, targets), theirs_out)


def test_resize_boxes_keeps_dtype_and_handles_empty():
    empty = torch.zeros(0, 4, dtype=torch.float64)
    assert resize_boxes(empty, (10, 20), (20, 40)).shape == (0, 4)
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    out = resize_boxes(boxes, (10, 20), (20, 10))
    assert out.dtype == torch.float64
    assert out.tolist() == [[0.5, 4.0, 1.5, 8.0]]


def test_repr_matches_torchvision():
    ours, theirs = _pair(min_size=(60, 80))
    assert repr(ours) == repr(theirs)


def test_bad_inputs_raise_clear_errors():
    ours, _ = _pair()
    with pytest.raises(ValueError, match=r"images: expected a non-empty list"):
        ours([])
    with pytest.raises(ValueError, match=r"images\[1\]: expected a \[3, H, W\].*\(1, 8, 8\)"):
        ours([torch.rand(3, 8, 8), torch.rand(1, 8, 8)])
    with pytest.raises(ValueError, match=r"images\[0\]: expected a \[3, H, W\].*\(1, 3, 8, 8\)"):
        ours([torch.rand(1, 3, 8, 8)])
    with pytest.raises(ValueError, match=r"\(3, 0, 8\)"):
        ours([torch.rand(3, 0, 8)])
    with pytest.raises(ValueError, match="expected a Tensor"):
        ours([[1.0, 2.0]])
    with pytest.raises(ImageDtypeError, match="floating-point.*torch.uint8"):
        ours([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    with pytest.raises(TypeError):  # what torchvision raises: both clauses catch it
        ours([torch.zeros(3, 8, 8, dtype=torch.int64)])
    with pytest.raises(ValueError, match="targets: expected 1 dicts"):
        ours([torch.rand(3, 8, 8)], [])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]: expected a \[G, 4\]"):
        ours([torch.rand(3, 8, 8)], [{"boxes": torch.zeros(4)}])
    with pytest.raises(ValueError, match=r"targets\[0\]: expected a 'boxes' key"):
        ours([torch.rand(3, 8, 8)], [{"labels": torch.zeros(1)}])


@pytest.mark.parametrize("training", [False, True])
def test_input_gradients_equal_torchvision(training):
    """Images that require grad go through (the padding used to write into unbound views) and
    get torchvision's gradients, padding and multi-scale resizing included."""
    ours, theirs = _pair(min_size=(64, 80, 96), max_size=120)
    ours.train(training), theirs.train(training)
    weight = torch.randn(
        3, 128, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    grads, outputs = [], []
    for transform in (ours, theirs):
        images, _ = _inputs(torch.float64)
        images = [img.requires_grad_() for img in images]
        torch.manual_seed(4)  # the same min_size draws in training
        batch, _ = transform(images)
        h, w = batch.tensors.shape[-2:]
        (batch.tensors * weight[:, :h, :w]).sum().backward()  # weights every output pixel
        outputs.append(batch.tensors.detach())
        grads.append([img.grad for img in images])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for mine, reference in zip(*grads, strict=True):
        assert mine is not None and mine.abs().sum() > 0
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


def test_unknown_keyword_raises_and_torchvisions_extras_are_accepted():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'fixd_size'.*'fixed_size'"):
        GeneralizedRCNNTransform(80, 120, MEAN, STD, fixd_size=(64, 48))
    with pytest.raises(TypeError, match="'rpn_nms_thresh'"):  # torchvision swallows it silently
        GeneralizedRCNNTransform(80, 120, MEAN, STD, rpn_nms_thresh=0.1)
    ours = GeneralizedRCNNTransform(
        80, 120, MEAN, STD, size_divisible=16, fixed_size=(64, 48), _skip_resize=True
    )
    theirs = TvTransform(
        80, 120, MEAN, STD, size_divisible=16, fixed_size=(64, 48), _skip_resize=True
    )
    for name in ("size_divisible", "fixed_size", "_skip_resize"):
        assert getattr(ours, name) == getattr(theirs, name), name
