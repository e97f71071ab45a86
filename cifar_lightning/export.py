"""``torch.export`` of a trained network: float [N, 3, 32, 32] RGB in [0, 1] in, logits [N, classes] out.

Normalization lives inside the network, so the program needs nothing from this project to run:
``torch.export.load("model.pt2").module()(images)``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from cifar_lightning.io import atomic_path
from cifar_lightning.module import predict_logits


class FlipAveraged(nn.Module):
    """``net``'s logits averaged over each image and its mirror (flip test-time augmentation) as one
    module, so the exported program of a ``module.tta_flip`` run scores what that run's test scored."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.net, x, tta_flip=True)


def export_model(net: nn.Module, path: str | Path, image_size: int = 32, tta_flip: bool = False) -> Path:
    """Export ``net`` (eval mode, float32, CPU; wrapped in :class:`FlipAveraged` if ``tta_flip``) with a
    dynamic batch dimension; written atomically."""
    model = copy.deepcopy(net).float().cpu().eval().to(memory_format=torch.contiguous_format)
    model = FlipAveraged(model) if tta_flip else model
    example = torch.rand(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
    return Path(path)


def load_exported(path: str | Path) -> nn.Module:
    """The callable module of an exported program."""
    return torch.export.load(str(path)).module()
