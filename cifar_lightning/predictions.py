"""Test-set predictions, computed once; the confusion matrix, per-class accuracy and the
misclassified grid are all derived from them, so they always agree with each other.

Filled batch by batch, in test-set order, by the :class:`~cifar_lightning.callbacks.artefacts.RunArtefacts`
callback during ``trainer.test`` and by :func:`cifar_lightning.runs.predict` afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_confusion_matrix


@dataclass
class Predictions:
    logits: Tensor        # float [N, C]
    labels: Tensor        # int64 [N]
    wrong_images: Tensor  # float [K, 3, H, W] in [0, 1]: the first K misclassified images, in test order
    wrong_index: Tensor   # int64 [K]: their positions in the test set

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    @property
    def preds(self) -> Tensor:
        return self.logits.argmax(1)

    @property
    def confidence(self) -> Tensor:
        """Softmax probability of the predicted class."""
        return self.logits.float().softmax(1).amax(1)

    def confusion(self) -> Tensor:
        """int64 [C, C]: rows are true classes, columns predicted classes."""
        return multiclass_confusion_matrix(self.preds, self.labels, self.num_classes)

    def accuracy(self) -> float:
        return (self.preds == self.labels).float().mean().item()

    def errors(self) -> int:
        return int((self.preds != self.labels).sum())

    def per_class_accuracy(self) -> Tensor:
        """Recall of each true class; NaN for a class with no test images."""
        matrix = self.confusion()
        return matrix.diag() / matrix.sum(1).double()


class PredictionCollector:
    """Accumulates batches in test order: the logits of every image, the pixels of the first ``max_wrong``
    misclassified ones only (so a 10k-image test set does not have to stay in memory)."""

    def __init__(self, max_wrong: int = 25) -> None:
        self.max_wrong = max_wrong
        self.logits: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.wrong_images: list[Tensor] = []
        self.wrong_index: list[Tensor] = []
        self.seen = self.kept = 0

    def update(self, images: Tensor, logits: Tensor, labels: Tensor) -> None:
        """``images`` float [B, 3, H, W] in [0, 1], ``logits`` [B, C], ``labels`` int [B]."""
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        self.logits.append(logits)
        self.labels.append(labels)
        if self.kept < self.max_wrong:
            wrong = (logits.argmax(1) != labels).nonzero().flatten()[: self.max_wrong - self.kept]
            self.wrong_images.append(images.detach()[wrong.to(images.device)].float().cpu().contiguous())
            self.wrong_index.append(wrong + self.seen)
            self.kept += len(wrong)
        self.seen += len(labels)

    def result(self) -> Predictions:
        if not self.logits:
            raise ValueError("no test batches were collected")
        return Predictions(torch.cat(self.logits), torch.cat(self.labels),
                           torch.cat(self.wrong_images), torch.cat(self.wrong_index))
