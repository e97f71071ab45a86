"""Composable layers of the study's network: conv-BN-ReLU, depthwise-separable conv, residual blocks.

Every layer that can downsample takes ``stride``, ``dilation`` and ``padding`` so the same
blocks build both presets: stride-2 transitions (``model=strided``) and valid dilated
transitions that shrink the map without striding (``model=dilated``).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def same_padding(kernel_size: int, dilation: int) -> int:
    """Padding that keeps the spatial size for stride 1."""
    return dilation * (kernel_size - 1) // 2


class ConvBNAct(nn.Sequential):
    """Dense k x k conv (no bias: BN follows), BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, padding: int | None = None) -> None:
        padding = same_padding(kernel_size, dilation) if padding is None else padding
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConv(nn.Sequential):
    """Depthwise k x k conv then pointwise 1 x 1 conv, BN, ReLU: ~k*k + C_out params per input
    channel instead of k*k*C_out, which is how a 56k-parameter net affords its width.

    ``mid_activation`` adds BN + ReLU between the two convs (MobileNet v1): one more nonlinearity
    per conv for a few BN parameters, at the price of two more kernels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, padding: int | None = None, mid_activation: bool = False) -> None:
        padding = same_padding(kernel_size, dilation) if padding is None else padding
        depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                              groups=in_channels, bias=False)
        mid = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if mid_activation else []
        super().__init__(
            depthwise, *mid,
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """``x + body(x)`` with ``depth`` convs of the same width (dense or depthwise-separable)."""

    def __init__(self, channels: int, depth: int = 2, separable: bool = False, dilation: int = 1,
                 mid_activation: bool = False) -> None:
        super().__init__()
        conv = partial(SeparableConv, mid_activation=mid_activation) if separable else ConvBNAct
        self.body = nn.Sequential(*(conv(channels, channels, 3, dilation=dilation) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class GatedBlock(nn.Module):
    """``skip_scale * x + ffn(norm(depthwise(x)))``: a depthwise k x k conv mixes space, a gated 1 x 1
    feed-forward (GELU(a) * b, as in xvel/cifar10-tiniest) mixes channels.

    Together the depthwise conv and the first 1 x 1 are a depthwise-separable conv with BN between.
    Per block ~k*k*C + 3*C*hidden parameters: the gate buys a multiplicative nonlinearity that a
    55k-parameter net cannot afford to get from width. ``skip_scale`` is a learned per-channel gain,
    kept 1-D so that, like BN scales, it gets no weight decay (``module.decay_groups``).
    """

    def __init__(self, channels: int, hidden: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, padding=same_padding(kernel_size, dilation),
                                   dilation=dilation, groups=channels, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.expand = nn.Conv2d(channels, 2 * hidden, 1)
        self.project = nn.Conv2d(hidden, channels, 1)
        self.skip_scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.expand(self.norm(self.depthwise(x))).chunk(2, dim=1)
        return self.skip_scale.view(1, -1, 1, 1) * x + self.project(F.gelu(a) * b)


class IteratedBlock(nn.Module):
    """One depthwise-separable conv applied ``iterations`` times with the same weights, each time with
    its own BatchNorm and a learned mix of the new features and the last ``history`` states (after
    ResThriftyNet, GCoiffier/ThriftyNets): compute grows with the iterations while the parameters
    barely do, the trade a 55.8k budget on a GPU wants.

    Iteration t computes ``norm_t(mix[t,0] * act(pointwise(depthwise(h))) + sum_i mix[t,i] * state_i)``.
    At the iterations in ``downsample_at`` the depthwise conv runs with stride 2 (a second module
    tied to the same weight, so the layer table sees the stride) and the kept states take every
    second pixel (a stride-2 identity shortcut): no pooling. ``mix`` is stored 1-D so that, like the
    BN scales, it gets no weight decay; it starts as a plain residual update (1 for the new features
    and the latest state, 0 for older ones).
    """

    def __init__(self, channels: int, iterations: int, downsample_at: Sequence[int] = (), history: int = 2,
                 activation: nn.Module | None = None) -> None:
        super().__init__()
        if not 0 < history <= iterations or any(not 0 <= t < iterations for t in downsample_at):
            raise ValueError(f"IteratedBlock: need 0 < history ({history}) <= iterations ({iterations}) and "
                             f"downsample_at {list(downsample_at)} within 0..{iterations - 1}")
        self.iterations, self.history, self.downsample_at = iterations, history, frozenset(downsample_at)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.depthwise_stride2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False)
        self.depthwise_stride2.weight = self.depthwise.weight
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.activation = activation if activation is not None else nn.ReLU()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(iterations))
        mix = torch.zeros(iterations, history + 1)
        mix[:, :2] = 1.0
        self.mix = nn.Parameter(mix.flatten())

    def forward(self, x: Tensor) -> Tensor:
        mix = self.mix.view(self.iterations, self.history + 1)
        states = [x]
        for t, norm in enumerate(self.norms):
            downsample = t in self.downsample_at
            conv = self.depthwise_stride2 if downsample else self.depthwise
            y = mix[t, 0] * self.activation(self.pointwise(conv(states[-1])))
            if downsample:
                states = [s[:, :, ::2, ::2] for s in states]
            for i, state in enumerate(reversed(states), start=1):
                y = y + mix[t, i] * state
            states = (states + [norm(y)])[-self.history:]
        return states[-1]
