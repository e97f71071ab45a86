"""The study's network: stem, stages C1-C4 of residual blocks, global average pooling, linear head.

One class covers both presets; ``conf/model/*.yaml`` says how each stage is entered
(a stride-2 conv, a valid dilated conv, or nothing) and whether its convs are dense or
depthwise-separable. No max-pooling anywhere.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cifar_lightning.models.blocks import ConvBNAct, ResidualBlock

Transition = Callable[[int, int], nn.Module]


@dataclass
class Stage:
    """One C-block: an optional transition (in_channels, channels) -> module, then residual blocks.

    ``block`` (channels) -> module replaces the default :class:`ResidualBlock` (whose shape
    ``depth``, ``separable``, ``dilation`` and ``mid_activation`` set), e.g. a partial :class:`GatedBlock`.
    """

    channels: int
    blocks: int = 1
    depth: int = 2
    separable: bool = False
    dilation: int = 1
    mid_activation: bool = False
    transition: Transition | None = None
    block: Callable[[int], nn.Module] | None = None

    def make_block(self) -> nn.Module:
        if self.block is not None:
            residual_only = {"depth": 2, "separable": False, "dilation": 1, "mid_activation": False}
            ignored = [k for k, default in residual_only.items() if getattr(self, k) != default]
            if ignored:  # they shape only the default ResidualBlock: silently dropping them would mislead
                raise ValueError(f"model.stages: {', '.join(ignored)} set beside `block`; give them to the block "
                                 "(e.g. block.dilation) or drop `block`")
            return self.block(self.channels)
        return ResidualBlock(self.channels, self.depth, self.separable, self.dilation, self.mid_activation)


class Normalize(nn.Module):
    """Per-channel (x - mean) / std, inside the network so the exported program takes [0, 1] images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Net(nn.Module):
    """Residual CNN without max-pooling; input float [N, 3, H, W] in [0, 1], output logits [N, classes]."""

    def __init__(self, stem_channels: int, stages: Sequence[Stage | dict], num_classes: int = 10,
                 mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
                 std: Sequence[float] = (0.2470, 0.2435, 0.2616), in_channels: int = 3) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = ConvBNAct(in_channels, stem_channels, 3)
        layers: list[nn.Module] = []
        width = stem_channels
        for i, spec in enumerate(stages):
            stage = spec if isinstance(spec, Stage) else Stage(**spec)
            if stage.transition is not None:
                layers.append(stage.transition(width, stage.channels))
            elif stage.channels != width:
                raise ValueError(f"model.stages[{i}]: channels {stage.channels} != incoming {width}; "
                                 "add a transition or match the width")
            width = stage.channels
            layers += [stage.make_block() for _ in range(stage.blocks)]
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(self.normalize(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, the number the study's 55.8k budget counts."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
