"""Training progress on the console: Lightning's bar on a terminal, plain log lines elsewhere."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

log = logging.getLogger(__name__)


class LogProgress(ProgressBar):
    """Progress as plain log lines, for a console that is not a terminal (a log file, a batch job):
    a line every ``every_n_batches`` training batches and one per epoch with its metrics, where a
    progress bar would write carriage returns and cursor codes, and nothing until its first refresh."""

    def __init__(self, every_n_batches: int = 50) -> None:
        super().__init__()
        self.every_n_batches = every_n_batches
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str = "") -> str:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k.startswith(prefix) and k != "v_num"}
        return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._enabled and self.every_n_batches and (batch_idx + 1) % self.every_n_batches == 0:
            log.info("epoch %d/%d batch %d/%s: %s", trainer.current_epoch + 1, trainer.max_epochs, batch_idx + 1,
                     trainer.num_training_batches, self._metrics(trainer, pl_module, "train/"))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:  # called after the epoch's validation: its metrics are in
            log.info("epoch %d/%d done in %.1f s: %s", trainer.current_epoch + 1, trainer.max_epochs,
                     time.perf_counter() - self._start, self._metrics(trainer, pl_module))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            log.info("tested: %s", self._metrics(trainer, pl_module))


def progress_bar(refresh_rate: int = 50) -> ProgressBar:
    """Lightning's bar on a terminal; :class:`LogProgress` lines when stderr (where the bar draws) is not one."""
    return TQDMProgressBar(refresh_rate) if sys.stderr.isatty() else LogProgress(refresh_rate)
