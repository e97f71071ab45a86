"""Training throughput: images/s and seconds per epoch, for metrics.json and TensorBoard."""
from __future__ import annotations

import time

import lightning.pytorch as pl


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
