"""The batch every loader yields, uint8 NHWC images (as CIFAR-10 is stored), and its conversion to
what the network takes: float NCHW in [0, 1]. Used on the device after the transfer
(``ClassifierModule.on_after_batch_transfer``) and by every tool that feeds a network outside training."""
from __future__ import annotations

import torch
from torch import Tensor


def to_float_nchw(images: Tensor, channels_last: bool = True) -> Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [0, 1]; the permuted view is already channels_last."""
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float().div_(255)
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
