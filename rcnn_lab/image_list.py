"""ImageList: a padded batch of images that remembers each image's own size.

Images of different sizes are padded to one [N, 3, H, W] tensor so the backbone can run on them
together; the anchor generator and the box post-processing still need each image's real size,
which ``image_sizes`` keeps (height, width per image, before padding).

Shapes: N images, H x W the padded size of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ImageList:
    """A batch of images padded to a common size, plus each image's size before padding.

    Args:
        tensors: [N, D, H, W] padded images (or any tensor whose batch dimension is first).
        image_sizes: N pairs ``(height, width)`` in pixels, the size of each image before padding.
    """

    def __init__(self, tensors: Tensor, image_sizes: list[tuple[int, int]]) -> None:
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, device: torch.device | str, *args: Any, **kwargs: Any) -> ImageList:
        """A new ImageList whose tensors are moved/cast by ``Tensor.to``; the sizes are shared."""
        return ImageList(self.tensors.to(device, *args, **kwargs), self.image_sizes)

    def __repr__(self) -> str:
        """Short summary: the padded batch shape and the per-image sizes."""
        return f"ImageList(tensors={tuple(self.tensors.shape)}, image_sizes={self.image_sizes})"
