"""Composable layers of the study's network: conv-BN-ReLU, depthwise-separable conv, residual block.

Every layer that can downsample takes ``stride``, ``dilation`` and ``padding`` so the same
blocks build both presets: stride-2 transitions (``model=strided``) and valid dilated
transitions that shrink the map without striding (``model=dilated``).
"""
from __future__ import annotations

from functools import partial

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
