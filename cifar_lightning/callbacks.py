"""Lightning callbacks of the project (the rest come from Lightning itself, see conf/callbacks/)."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

log = logging.getLogger(__name__)


class TrainSpeed(pl.Callback):
    """Training images/s per epoch, from the epoch's start to its last batch (data loading included,
    validation excluded), over all DDP processes; logged as ``train/images_per_sec``."""

    def __init__(self) -> None:
        self.epoch_images_per_sec: list[float] = []
        self.epoch_seconds: list[float] = []
        self._start = self._end = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._end, self._images = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._images += len(batch[0]) * trainer.world_size  # every DDP process steps a batch this size
        self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._images == 0:
            return
        seconds = self._end - self._start
        self.epoch_seconds.append(seconds)
        self.epoch_images_per_sec.append(self._images / seconds)
        pl_module.log("train/images_per_sec", self._images / seconds)

    def state_dict(self) -> dict[str, list[float]]:
        """In checkpoints (a resumed run's summary covers all its epochs) and sent back by spawned DDP workers."""
        return {"epoch_images_per_sec": self.epoch_images_per_sec, "epoch_seconds": self.epoch_seconds}

    def load_state_dict(self, state_dict: dict[str, list[float]]) -> None:
        self.epoch_images_per_sec = list(state_dict["epoch_images_per_sec"])
        self.epoch_seconds = list(state_dict["epoch_seconds"])

    def summary(self) -> dict[str, float | None]:
        """Median over epochs after the first (which pays for worker start-up and warm-up)."""
        def median(values: list[float]) -> float | None:
            values = sorted(values[1:] or values)
            return values[len(values) // 2] if values else None
        return {"train_images_per_sec": median(self.epoch_images_per_sec), "epoch_time_s": median(self.epoch_seconds)}


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
