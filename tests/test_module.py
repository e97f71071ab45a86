"""The LightningModule's own arithmetic, by direct calls on tiny tensors (no Trainer)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_lightning.module import ClassifierModule


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """By hand: the cross-entropy against (1 - e) * targets + e / classes, averaged over the batch."""
    classes = logits.shape[1]
    soft = (1 - smoothing) * targets + smoothing / classes
    return -(soft * logits.log_softmax(1)).sum(1).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_the_loss_smooths_hard_labels_and_soft_targets(smoothing: float) -> None:
    """Hard labels (validation, test) and soft targets (training, after a batch regularizer) alike."""
    module = ClassifierModule(nn.Linear(2, 4), optimizer=torch.optim.SGD, label_smoothing=smoothing, num_classes=4)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g) * 3
    labels = torch.tensor([0, 3, 1, 1, 2])
    soft = torch.softmax(torch.randn(5, 4, generator=g), 1)
    expected_hard = smoothed_cross_entropy(logits, F.one_hot(labels, 4).float(), smoothing)
    torch.testing.assert_close(module.loss(logits, labels), expected_hard)
    torch.testing.assert_close(module.loss(logits, soft), smoothed_cross_entropy(logits, soft, smoothing))
