"""Batch-level regularizers applied on the device inside the LightningModule.

Every regularizer maps ``(images, labels) -> (images, soft_targets)``: images are float
``[B, C, H, W]`` in [0, 1], labels int64 ``[B]``, soft targets float ``[B, num_classes]``
whose rows sum to 1. Cross-entropy against soft targets is linear in the target, so an
area-weighted target (RICAP) gives exactly the paper's area-weighted sum of losses.
torchvision's ``MixUp``/``CutMix`` have the same signature and are used as they are
(see ``conf/aug/mixup.yaml``); CutOut and RICAP have no library version and live here.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def cutout_boxes(batch: int, height: int, width: int, size: int, device: torch.device | str = "cpu") -> Tensor:
    """Boxes ``[B, 4]`` as (top, left, bottom, right), exclusive ends, centre uniform, clipped at the borders."""
    cy = torch.randint(0, height, (batch,), device=device)
    cx = torch.randint(0, width, (batch,), device=device)
    top, left = (cy - size // 2).clamp(min=0), (cx - size // 2).clamp(min=0)
    bottom, right = (cy - size // 2 + size).clamp(max=height), (cx - size // 2 + size).clamp(max=width)
    return torch.stack([top, left, bottom, right], dim=1)


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks ``[B, 1, H, W]``, True inside each box (vectorised: no Python loop over the batch)."""
    rows = torch.arange(height, device=boxes.device).view(1, height, 1)
    cols = torch.arange(width, device=boxes.device).view(1, 1, width)
    top, left, bottom, right = (b.view(-1, 1, 1) for b in boxes.unbind(1))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return inside.unsqueeze(1)


class NoBatchAug:
    """Identity regularizer: one-hot targets, so every aug shares the soft-target loss."""

    def __init__(self, num_classes: int = 10) -> None:
        self.num_classes = num_classes

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return images, F.one_hot(labels, self.num_classes).to(images.dtype)


class CutOut(NoBatchAug):
    """CutOut (DeVries & Taylor, 2017): one ``size`` x ``size`` hole per image, filled with ``fill``.

    The hole's centre is uniform over the image and the hole is clipped at the borders, as in
    the paper; ``fill`` is the dataset mean in [0, 1] so the hole is zero after normalization.
    """

    def __init__(self, size: int = 16, p: float = 1.0, fill: Sequence[float] = (0.0, 0.0, 0.0),
                 num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.size, self.p, self.fill = size, p, tuple(fill)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = images.shape
        boxes = cutout_boxes(b, h, w, self.size, device=images.device)
        mask = box_masks(boxes, h, w)
        mask &= (torch.rand(b, 1, 1, 1, device=images.device) < self.p)
        fill = torch.tensor(self.fill, dtype=images.dtype, device=images.device).view(1, c, 1, 1)
        return torch.where(mask, fill, images), F.one_hot(labels, self.num_classes).to(images.dtype)


def ricap_boundary(height: int, width: int, beta: float) -> tuple[int, int]:
    """The RICAP split point (w, h) drawn from Beta(beta, beta) (Takahashi et al., 2018)."""
    dist = torch.distributions.Beta(beta, beta)
    return int(round(width * float(dist.sample()))), int(round(height * float(dist.sample())))


class RICAP(NoBatchAug):
    """Random Image Cropping And Patching: four random crops from four shuffled copies of the
    batch tile each image; the target is the four labels weighted by their patches' areas."""

    def __init__(self, beta: float = 0.3, p: float = 1.0, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.beta, self.p = beta, p

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if torch.rand(()) >= self.p:
            return super().__call__(images, labels)
        b, _, h, w = images.shape
        bw, bh = ricap_boundary(h, w, self.beta)
        sizes = [(bw, bh), (w - bw, bh), (bw, h - bh), (w - bw, h - bh)]  # top-left, top-right, bottom-left, bottom-right
        targets = torch.zeros(b, self.num_classes, dtype=images.dtype, device=images.device)
        patches = []
        for pw, ph in sizes:
            order = torch.randperm(b, device=images.device)
            x0 = int(torch.randint(0, w - pw + 1, ()))
            y0 = int(torch.randint(0, h - ph + 1, ()))
            patches.append(images[order, :, y0:y0 + ph, x0:x0 + pw])
            targets += F.one_hot(labels[order], self.num_classes).to(images.dtype) * (pw * ph / (w * h))
        rows = [torch.cat(patches[:2], dim=3), torch.cat(patches[2:], dim=3)]
        return torch.cat(rows, dim=2).contiguous(memory_format=_memory_format(images)), targets


def _memory_format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
