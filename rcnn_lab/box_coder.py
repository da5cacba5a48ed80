"""BoxCoder: boxes <-> regression deltas (dx, dy, dw, dh) relative to reference boxes.

The parameterisation of R-CNN (Girshick et al. 2014, App. C), used by Faster R-CNN
(Ren et al. 2015, Sec. 3.1.2, Eq. 2): with a reference box of centre (x_a, y_a) and size
(w_a, h_a) and a target box (x, y, w, h),

    dx = wx * (x - x_a) / w_a      dy = wy * (y - y_a) / h_a
    dw = ww * log(w / w_a)         dh = wh * log(h / h_a)

Widths are x2 - x1 (no "+1" pixel convention). Shapes: K boxes, C classes (each box may carry
one set of 4 deltas per class, so codes are [K, 4*C]).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Largest log-scale step decode() lets through exp(): a 16 px box may grow to 1000 px, no
# further, so an untrained head cannot overflow exp() into inf boxes.
DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)

#: The smooth-L1 loss on box deltas (RPN and RoI heads) is quadratic below 1/9 and linear
#: above: Detectron's sigma = 3, beta = 1/sigma^2.
SMOOTH_L1_BETA = 1.0 / 9.0
_COORDS = 4  # x1, y1, x2, y2 -- and likewise dx, dy, dw, dh


def _sizes_and_centres(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Widths/heights and centres of [K, 4] boxes, each as [K, 2] (x part, y part)."""
    sizes = boxes[:, 2:] - boxes[:, :2]  # [K, 2] (w, h)
    centres = boxes[:, :2] + 0.5 * sizes  # [K, 2] (cx, cy)
    return sizes, centres


class BoxCoder:
    """Encode boxes as deltas relative to reference boxes, and decode deltas back to boxes.

    Args:
        weights: (wx, wy, ww, wh), multipliers of the four deltas; (1, 1, 1, 1) in the RPN,
            (10, 10, 5, 5) in the RoI heads of torchvision's Faster R-CNN.
        bbox_xform_clip: upper bound on dw and dh (after dividing by the weights) before exp().
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float],
        bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP,
    ) -> None:
        if len(weights) != _COORDS:
            raise ValueError(f"weights: expected 4 numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: list[Tensor], proposals: list[Tensor]) -> tuple[Tensor, ...]:
        """Per image, the deltas that move ``proposals`` onto ``reference_boxes``.

        Args:
            reference_boxes: per image a [K_i, 4] tensor, the targets (e.g. matched gt boxes).
            proposals: per image a [K_i, 4] tensor, the boxes the deltas are relative to.

        Returns:
            a tuple of [K_i, 4] delta tensors, one per image.
        """
        if len(reference_boxes) != len(proposals):
            raise ValueError(
                f"reference_boxes and proposals must list the same images: got "
                f"{len(reference_boxes)} and {len(proposals)} tensors"
            )
        if len(reference_boxes) == 0:
            return ()
        counts = [len(boxes) for boxes in reference_boxes]
        deltas = self.encode_single(torch.cat(reference_boxes), torch.cat(proposals))  # [K, 4]
        return deltas.split(counts, 0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Deltas [K, 4] (dx, dy, dw, dh) that move [K, 4] ``proposals`` onto ``reference_boxes``.

        Computed in ``reference_boxes``' dtype and on its device. Zero-size boxes give inf/nan,
        as in torchvision: callers only encode matched boxes of positive size.
        """
        if (
            reference_boxes.shape != proposals.shape
            or reference_boxes.dim() != 2
            or reference_boxes.shape[1] != _COORDS
        ):
            raise ValueError(
                f"reference_boxes and proposals: expected two [K, 4] tensors, got shapes "
                f"{tuple(reference_boxes.shape)} and {tuple(proposals.shape)}"
            )
        weights = torch.as_tensor(
            self.weights, dtype=reference_boxes.dtype, device=reference_boxes.device
        )
        ref_sizes, ref_centres = _sizes_and_centres(proposals)  # [K, 2] each
        gt_sizes, gt_centres = _sizes_and_centres(reference_boxes)  # [K, 2] each
        # weight first, then divide: the exact operation order of torchvision (bitwise equal)
        d_centre = weights[:2] * (gt_centres - ref_centres) / ref_sizes  # [K, 2] (dx, dy)
        d_size = weights[2:] * torch.log(gt_sizes / ref_sizes)  # [K, 2] (dw, dh)
        return torch.cat([d_centre, d_size], dim=1)  # [K, 4]

    def decode(self, rel_codes: Tensor, boxes: list[Tensor]) -> Tensor:
        """Apply deltas to the boxes of all images at once.

        Args:
            rel_codes: [K, 4*C] deltas (any shape with K*4*C elements), K = total boxes.
            boxes: per image a [K_i, 4] tensor of reference boxes (anchors or proposals).

        Returns:
            [K, C, 4] decoded boxes; when there are no boxes at all, whatever
            ``decode_single`` returns for ``rel_codes`` as given (torchvision's behaviour).
        """
        if not isinstance(boxes, (list, tuple)):
            raise ValueError(f"boxes: expected a list or tuple of tensors, got {type(boxes)}")
        if not isinstance(rel_codes, Tensor):
            raise ValueError(f"rel_codes: expected a Tensor, got {type(rel_codes)}")
        total = sum(int(b.shape[0]) for b in boxes)
        reference = torch.cat(list(boxes), dim=0) if boxes else rel_codes.new_zeros((0, _COORDS))
        if total > 0:
            if rel_codes.numel() % (total * _COORDS) != 0:
                raise ValueError(
                    f"rel_codes: expected 4*C deltas for each of the {total} boxes, got shape "
                    f"{tuple(rel_codes.shape)}"
                )
            rel_codes = rel_codes.reshape(total, -1)  # [K, 4*C]
        decoded = self.decode_single(rel_codes, reference)  # [K, 4*C]
        return decoded.reshape(total, -1, _COORDS) if total > 0 else decoded  # [K, C, 4]

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Boxes [K, 4*C] obtained by applying [K, 4*C] deltas to [K, 4] reference boxes.

        Computed in ``rel_codes``' dtype. dw and dh are clamped to ``bbox_xform_clip`` first.
        """
        if rel_codes.dim() != 2 or rel_codes.shape[1] % _COORDS != 0:
            raise ValueError(
                f"rel_codes: expected [K, 4*C] deltas, got shape {tuple(rel_codes.shape)}"
            )
        boxes = boxes.to(rel_codes.dtype)
        sizes, centres = _sizes_and_centres(boxes)  # [K, 2] each
        wx, wy, ww, wh = self.weights
        # divide by Python numbers (not a weight tensor): on CUDA a scalar divisor becomes a
        # multiplication by its reciprocal, and torchvision's results depend on that
        dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy  # [K, C] each
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)  # [K, C]
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)  # [K, C]
        centre_x = dx * sizes[:, 0:1] + centres[:, 0:1]  # [K, C]
        centre_y = dy * sizes[:, 1:2] + centres[:, 1:2]  # [K, C]
        half_w = 0.5 * (torch.exp(dw) * sizes[:, 0:1])  # [K, C]
        half_h = 0.5 * (torch.exp(dh) * sizes[:, 1:2])  # [K, C]
        corners = [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h]
        return torch.stack(corners, dim=2).flatten(1)  # [K, C, 4] -> [K, 4*C]
