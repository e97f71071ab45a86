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
from cifar_lightning.tta import Shifts, TestTimeAveraged
from cifar_lightning.tta import views as tta_views

MAX_IMAGES = 2**20  # the most images one pass of an exported network takes (its dynamic batch range)


def export_model(net: nn.Module, path: str | Path, image_size: int = 32, tta_flip: bool = False,
                 tta_shifts: Shifts = ()) -> Path:
    """Export ``net`` (eval mode, float32, CPU) with a dynamic batch dimension, written atomically; with
    test-time augmentation (``tta_flip``, ``tta_shifts``) built in, so the program scores what the run's
    test scored."""
    model = copy.deepcopy(net).float().cpu().eval().to(memory_format=torch.contiguous_format)
    example = torch.rand(2, 3, image_size, image_size)
    views = len(tta_views(example, tta_flip, tta_shifts))
    model = TestTimeAveraged(model, tta_flip, tta_shifts) if views > 1 else model
    # the views of a batch pass the network as one batch: a program with V views takes MAX_IMAGES // V images
    batch = torch.export.Dim("batch", min=1, max=MAX_IMAGES // views)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
    return Path(path)


def load_exported(path: str | Path) -> nn.Module:
    """The callable module of an exported program."""
    return torch.export.load(str(path)).module()
