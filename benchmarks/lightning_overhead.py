"""(a) What the Lightning loop costs: train images/s of a bare PyTorch loop vs ``Trainer.fit`` with the
project's ClassifierModule (its metrics and logging on, TensorBoard logger, log_every_n_steps as
configured), on the same net (conf/model), random uint8 batches, batch size, channels_last, optimizer
and schedule. Warm-up steps are not timed; the two loops alternate ``--repeats`` times.

    python -m benchmarks.lightning_overhead [--device cuda] [--steps 10] [--repeats 5]
"""
from __future__ import annotations

import statistics
import tempfile

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.common import (
    Clock,
    bare_images_per_sec,
    best_and_median,
    device_of,
    hardware,
    load_config,
    parser,
    random_batches,
    trainer_option,
)
from cifar_lightning.callbacks.speed import TrainSpeed


class Stopwatch(pl.Callback):
    """Times batches ``warmup`` .. ``warmup + steps - 1`` from the first's start to the last's end,
    the same span the bare loop times."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.clock = warmup, steps, Clock(device)
        self.seconds = self.cpu_seconds = 0.0
        self.images = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.clock.start()
            self.images = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.images += len(batch[0])
        if batch_idx == self.warmup + self.steps - 1:
            self.seconds, self.cpu_seconds = self.clock.stop()


def lightning_images_per_sec(cfg, batches, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """Train images per second and per CPU-second of ``Trainer.fit`` on the project's module, trainer
    preset and logger."""
    torch.manual_seed(cfg.seed)
    module = instantiate(cfg.module, net=instantiate(cfg.model), batch_aug=instantiate(cfg.aug))
    stopwatch = Stopwatch(warmup, steps, device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = instantiate(
            cfg.trainer, default_root_dir=tmp, accelerator=device.type, devices=1, max_epochs=1,
            max_steps=warmup + steps, limit_val_batches=0, enable_progress_bar=False, enable_checkpointing=False,
            enable_model_summary=False, logger=TensorBoardLogger(tmp, name="tensorboard", version=""),
            callbacks=[TrainSpeed(), stopwatch])
        trainer.fit(module, train_dataloaders=batches)
    return stopwatch.images / stopwatch.seconds, stopwatch.images / stopwatch.cpu_seconds


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, help="timed steps per measurement (default: 10 on cpu, 300 on cuda)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: 2 on cpu, 30 on cuda)")
    p.add_argument("--model", default="strided", help="a conf/model option")
    args = p.parse_args()
    device = device_of(args.device)
    steps = args.steps or (300 if device.type == "cuda" else 10)
    warmup = args.warmup or (30 if device.type == "cuda" else 2)
    cfg = load_config([f"model={args.model}", "aug=none", trainer_option(device), f"data.batch_size={args.batch_size}"])
    batches = random_batches(args.batch_size, warmup + steps, device)

    print(f"Lightning loop vs bare PyTorch loop: model={args.model}, batch {args.batch_size}, {steps} timed steps "
          f"after {warmup}, precision {cfg.trainer.precision}, {args.device}")
    print(f"hardware: {hardware(device)}")
    bare, lightning = [], []  # (img/s, img per CPU-s) pairs
    for _ in range(args.repeats):  # back to back, so a busy neighbour slows both of a pair alike
        bare.append(bare_images_per_sec(cfg, batches, device, warmup, steps))
        lightning.append(lightning_images_per_sec(cfg, batches, device, warmup, steps))
        print(f"  bare {bare[-1][0]:8.0f} img/s   lightning {lightning[-1][0]:8.0f} img/s   "
              f"ratio {lightning[-1][0] / bare[-1][0]:.3f}   per CPU-second: ratio {lightning[-1][1] / bare[-1][1]:.3f}",
              flush=True)
    for k, clock in enumerate(["img/s", "img per CPU-second"]):
        b, lt = [r[k] for r in bare], [r[k] for r in lightning]
        ratio = statistics.median(x / y for x, y in zip(lt, b))
        print(f"{clock}: bare loop {best_and_median(b)};  Lightning {best_and_median(lt)}")
        print(f"  Lightning / bare: median of the pairs {ratio:.3f}, of the bests {max(lt) / max(b):.3f} "
              "(target >= 0.95)")


if __name__ == "__main__":
    main()
