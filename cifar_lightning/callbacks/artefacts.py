"""The run's pictures and tables, written while it trains and tests (drawing lives in :mod:`cifar_lightning.plots`).

``RunArtefacts`` (in ``conf/callbacks/default.yaml``) saves ``augmented_batch.png`` at the first
training batch, and ``misclassified.png``, ``confusion_matrix.png/.csv`` and ``curves.png`` when
testing ends, logging the pictures to TensorBoard too; :func:`log_hparams` fills TensorBoard's
HParams table once the final metrics are known.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from cifar_lightning.predictions import PredictionCollector
from cifar_lightning.plots import (
    augmented_title,
    plot_augmented_batch,
    save_figure,
    write_curves,
    write_prediction_artefacts,
)

log = logging.getLogger(__name__)


def _tensorboards(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def _classes(trainer: pl.Trainer, num_classes: int) -> list[str]:
    return list(getattr(trainer.datamodule, "classes", None) or map(str, range(num_classes)))


class RunArtefacts(pl.Callback):
    """Writes augmented_batch.png, misclassified.png, confusion_matrix.png/.csv and curves.png into ``dirpath``.

    The test predictions are the logits ``test_step`` returns, so the confusion matrix agrees
    exactly with ``test/acc``. With several devices each rank sees only part of the test set:
    the prediction artefacts are then left to ``python -m cifar_lightning.cli.report <run_dir>``.
    """

    def __init__(self, dirpath: str | Path, max_wrong: int = 25) -> None:
        self.dirpath = Path(dirpath)
        self.max_wrong = max_wrong
        self._batch_saved = False
        self._collector: PredictionCollector | None = None
        self._summary: dict[str, Any] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Sequence[Tensor],
                             batch_idx: int) -> None:
        """The batch after ``on_after_batch_transfer``: float NCHW in [0, 1] (real colours), soft targets."""
        if self._batch_saved or not trainer.is_global_zero:
            return
        self._batch_saved = True
        images, targets = batch
        title = augmented_title(type(getattr(pl_module, "batch_aug", None)).__name__)
        fig = plot_augmented_batch(images, targets, _classes(trainer, targets.shape[1]), title)
        save_figure(fig, self.dirpath / "augmented_batch.png", [lg.experiment for lg in _tensorboards(trainer)],
                    trainer.global_step)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._collector = PredictionCollector(self.max_wrong) if trainer.world_size == 1 else None

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._collector is None:
            return
        if not isinstance(outputs, Tensor):
            raise TypeError("RunArtefacts needs test_step to return the batch's logits")
        self._collector.update(batch[0], outputs, batch[1])

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tensorboards = _tensorboards(trainer)
        if self._collector is not None and self._collector.seen:
            preds = self._collector.result()
            self._summary = write_prediction_artefacts(
                self.dirpath, preds, _classes(trainer, preds.num_classes),
                [lg.experiment for lg in tensorboards], trainer.global_step)
        elif trainer.is_global_zero:
            log.info("test predictions not collected on %d devices; run python -m cifar_lightning.cli.report %s",
                     trainer.world_size, self.dirpath)
        if not trainer.is_global_zero:
            return
        for lg in tensorboards:
            lg.experiment.flush()
        write_curves(self.dirpath, tensorboards[0].log_dir if tensorboards else None)

    def state_dict(self) -> dict[str, Any]:
        """Sent back by spawned DDP workers (cifar_lightning.strategies), so summary() has it in the main process."""
        return {"summary": self._summary}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._summary = dict(state_dict.get("summary") or {})

    def summary(self) -> dict[str, Any]:
        """Per-class test accuracy and the number of wrong test predictions, for metrics.json."""
        return self._summary


def log_hparams(loggers: Sequence[Logger], cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Hyperparameters with the final metrics, for TensorBoard's HParams table.

    TensorBoard takes the table's columns from one run, so every run logs the same keys:
    Hydra's choice in each config group and the main numbers.
    """
    from hydra.core.hydra_config import HydraConfig

    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    params = {group: str(option) for group, option in choices.items() if not group.startswith(("hydra", "paths"))}
    for key in ("module.optimizer.lr", "module.weight_decay", "module.label_smoothing", "data.batch_size",
                "trainer.max_epochs", "trainer.precision", "seed"):
        params[key] = OmegaConf.select(cfg, key)
    params["params"] = metrics.get("params")
    final = {f"hparams/{k}": metrics[k] for k in ("test_acc", "test_loss", "best_val_acc") if metrics.get(k) is not None}
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger) and final:
            lg.log_hyperparams(params, final)
            lg.finalize("success")  # flush now: testing already closed the writer this reopened
