"""Test-time augmentation: a network's logits averaged over views of each image (``module.tta_flip``:
the mirror; ``module.tta_shifts``: the image translated by a few pixels, and each of those mirrored too).

The same function serves validation, test, ``evaluate`` and the exported program
(:class:`TestTimeAveraged`), so a ``model.pt2`` scores what its run's test scored.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shifts = Sequence[Sequence[int]]  # [[dx, dy], ...] in pixels; +dx shows content from further right


def shift(x: Tensor, dx: int, dy: int) -> Tensor:
    """``x`` [N, C, H, W] translated by (dx, dy) pixels, borders reflected as in the random-crop training
    augmentation (the view a crop at offset (pad + dx, pad + dy) of the padded image would give)."""
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (pad,) * 4, mode="reflect")[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def views(x: Tensor, flip: bool = False, shifts: Shifts = ()) -> list[Tensor]:
    """The image, its shifted copies and, with ``flip``, the mirror of each."""
    out = [x, *(shift(x, int(dx), int(dy)) for dx, dy in shifts)]
    return out + [v.flip(3) for v in out] if flip else out


def predict_logits(net: nn.Module, x: Tensor, flip: bool = False, shifts: Shifts = ()) -> Tensor:
    """Logits for evaluation: the mean over :func:`views` (just ``net(x)`` without TTA). All views go
    through the network as one batch: one pass, so an exported program holds one copy of the graph. Memory
    grows with the views (10 views of an evaluation batch of 2,000 is a pass of 20,000 images): lower
    ``data.eval_batch_size`` if it runs out. In eval mode only: in train mode the views would share the
    BatchNorm batch statistics."""
    batch = views(x, flip, shifts)
    return net(torch.cat(batch)).unflatten(0, (len(batch), -1)).mean(0)


class TestTimeAveraged(nn.Module):
    """``net`` with :func:`predict_logits`'s averaging built in, for export: same parameters, a larger batch."""

    def __init__(self, net: nn.Module, flip: bool = False, shifts: Shifts = ()) -> None:
        super().__init__()
        self.net, self.flip, self.shifts = net, flip, [tuple(map(int, s)) for s in shifts]

    def forward(self, x: Tensor) -> Tensor:
        return predict_logits(self.net, x, self.flip, self.shifts)
