"""v2 augmentation keeps boxes on their pixels; seeding; the detection collate function."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from rcnn_lab.data import (
    SeededTransforms,
    ShapesDataset,
    collate,
    eval_transforms,
    train_transforms,
)
from rcnn_lab.data.transforms import to_model_format


def _one_box_sample(x1=4, y1=2, x2=9, y2=7, height=12, width=20):
    """A black image with one white rectangle, and its target."""
    image = torch.zeros(3, height, width)
    image[:, y1:y2, x1:x2] = 1.0
    target = {
        "boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32),
        "labels": torch.tensor([3]),
        "image_id": 5,
        "area": torch.tensor([25.0]),
        "iscrowd": torch.tensor([0]),
    }
    return image, target


def _white_box(image: torch.Tensor) -> list[float]:
    """The pixel box (x1, y1, x2, y2) around the pixels brighter than 0.5."""
    rows = torch.nonzero(image[0].gt(0.5).any(dim=1)).flatten()
    cols = torch.nonzero(image[0].gt(0.5).any(dim=0)).flatten()
    return [cols[0].item(), rows[0].item(), cols[-1].item() + 1.0, rows[-1].item() + 1.0]


def test_flip_maps_boxes_with_the_pixels():
    image, target = _one_box_sample()
    flip = train_transforms(hflip_p=1.0, scale_range=(1.0, 1.0), photometric=False)
    out, out_target = to_model_format(image, target, flip)
    assert torch.equal(out, image.flip(-1))
    assert out_target["boxes"].tolist() == [[20.0 - 9, 2.0, 20.0 - 4, 7.0]]
    assert out_target["boxes"].tolist() == [_white_box(out)]
    assert out_target["labels"].tolist() == [3] and out_target["image_id"] == 5
    assert type(out) is torch.Tensor and type(out_target["boxes"]) is torch.Tensor


def test_scale_jitter_moves_boxes_with_the_pixels():
    torch.manual_seed(0)
    zoom = train_transforms(hflip_p=0.0, scale_range=(0.8, 1.25), photometric=False)
    for _ in range(10):
        image, target = _one_box_sample(6, 4, 14, 9, height=24, width=30)
        out, out_target = to_model_format(image, target, zoom)
        assert out.shape == image.shape  # the canvas keeps its size
        box = out_target["boxes"][0].tolist()
        assert all(abs(a - b) <= 1.0 for a, b in zip(box, _white_box(out)))  # bilinear edges


def test_boxes_pushed_off_the_image_are_dropped_with_their_entries():
    image, target = _one_box_sample(0, 0, 2, 2, height=40, width=40)
    target["boxes"] = torch.tensor([[0.0, 0.0, 2.0, 2.0], [15.0, 15.0, 25.0, 25.0]])
    target.update(labels=torch.tensor([1, 2]), area=torch.tensor([4.0, 100.0]))
    target["iscrowd"] = torch.tensor([0, 0])
    torch.manual_seed(0)
    zoom_in = train_transforms(hflip_p=0.0, scale_range=(2.0, 2.0), photometric=False)
    _, out_target = to_model_format(image, target, zoom_in)
    # zoomed 2x about the centre (20, 20): the corner box leaves the image, the central one grows
    assert out_target["boxes"].tolist() == [[10.0, 10.0, 30.0, 30.0]]
    assert out_target["labels"].tolist() == [2] and out_target["area"].tolist() == [100.0]
    assert out_target["iscrowd"].tolist() == [0]


def test_augmented_shapes_targets_stay_valid():
    torch.manual_seed(0)
    ds = ShapesDataset("train", size=6, transforms=train_transforms())
    for i in range(len(ds)):
        image, target = ds[i]
        boxes = target["boxes"]
        assert image.shape == (3, 160, 160) and 0 <= image.min() and image.max() <= 1
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes <= 160).all()
        n = len(boxes)
        assert target["labels"].shape == target["area"].shape == target["iscrowd"].shape == (n,)


def test_global_seed_reproduces_augmentation():
    ds = ShapesDataset("train", size=3, transforms=train_transforms())
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append([ds[i] for i in range(3)])
    for (a, ta), (b, tb) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])


def test_seeded_transforms_depend_only_on_seed_epoch_and_image_id():
    seeded = SeededTransforms(train_transforms(), seed=11)
    ds = ShapesDataset("train", size=4, transforms=seeded)
    torch.manual_seed(0)
    first = ds[2][0]
    state = torch.get_rng_state()
    torch.manual_seed(123)  # the caller's RNG does not matter ...
    assert torch.equal(ds[2][0], first)
    assert not torch.equal(torch.get_rng_state(), state)  # ... and is left alone
    seeded.set_epoch(1)
    assert not torch.equal(ds[2][0], first)  # a new epoch, a new augmentation
    seeded.set_epoch(0)
    assert torch.equal(ds[2][0], first)


def test_eval_transforms_convert_uint8_images():
    image = torch.full((3, 4, 5), 255, dtype=torch.uint8)
    out, target = eval_transforms()(image, {"labels": torch.tensor([1])})
    assert out.dtype == torch.float32 and out.max() == 1.0


def test_collate_returns_lists_for_a_detector():
    ds = ShapesDataset("val", size=5)
    images, targets = collate([ds[0], ds[1], ds[2]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == 3
    assert torch.equal(images[1], ds[1][0]) and targets[2]["image_id"] == 2
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate))
    assert [len(images) for images, _ in batches] == [2, 2, 1]
    assert [t["image_id"] for _, targets in batches for t in targets] == [0, 1, 2, 3, 4]
