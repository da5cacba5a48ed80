"""ImageList: a padded batch plus per-image sizes, interchangeable with torchvision's."""

from __future__ import annotations

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator

import rcnn_lab
from rcnn_lab.image_list import ImageList


def test_keeps_tensors_and_sizes():
    batch = torch.rand(2, 3, 32, 48)
    sizes = [(32, 40), (30, 48)]
    images = ImageList(batch, sizes)
    assert images.tensors is batch
    assert images.image_sizes == sizes


def test_to_returns_new_list_with_cast_tensors_and_same_sizes():
    images = ImageList(torch.rand(1, 3, 8, 8), [(8, 7)])
    moved = images.to(torch.device("cpu"))
    assert isinstance(moved, ImageList) and moved is not images
    assert moved.image_sizes == [(8, 7)]
    torch.testing.assert_close(moved.tensors, images.tensors, rtol=0, atol=0)
    cast = images.to(torch.float64)  # Tensor.to's other forms pass through
    assert cast.tensors.dtype == torch.float64
    assert images.tensors.dtype == torch.float32  # the original is untouched


def test_exported_and_usable_by_torchvision_components():
    assert rcnn_lab.ImageList is ImageList
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    anchors = TvAnchorGenerator(((16,),), ((1.0,),))(images, [torch.zeros(1, 1, 4, 4)])
    assert anchors[0].shape == (16, 4)


def test_repr_names_shape_and_sizes():
    text = repr(ImageList(torch.zeros(2, 3, 5, 6), [(5, 6), (4, 4)]))
    assert "(2, 3, 5, 6)" in text and "(4, 4)" in text
