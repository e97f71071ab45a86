"""Host time a Lightning training step costs beyond the math: ``Trainer.fit`` on a net so small that
the step is all overhead, with (1) a bare LightningModule (loss only), (2) the project's
ClassifierModule, (3) ClassifierModule logging its loss and accuracy through ``self.log`` every step
(the usual idiom, which this project's module avoids). On a GPU, where a 55k-parameter net's step is
launch-bound, host time per step is what separates the Lightning loop from a bare PyTorch loop.

    python -m benchmarks.step_overhead [--device cuda] [--steps 3000] [--repeats 3]
"""
from __future__ import annotations

import statistics
import time
from functools import partial

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import device_of, hardware, parser
from cifar_lightning.module import ClassifierModule


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))


class BareModule(pl.LightningModule):
    """The least a LightningModule does: forward, loss, optimizer."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        return F.cross_entropy(self.net(images.permute(0, 3, 1, 2).float()), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class LogEveryStep(ClassifierModule):
    """ClassifierModule with the loss and accuracy logged through ``self.log`` at every step."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, *args) -> None:
        pass

    def on_train_epoch_end(self) -> None:
        pass


def ms_per_step(module: pl.LightningModule, steps: int, device: torch.device) -> float:
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randint(0, 256, (steps * 8, 4, 4, 3), dtype=torch.uint8, generator=g),
                                    torch.randint(0, 10, (steps * 8,), generator=g)), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, accelerator=device.type, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=25)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=data)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    device = device_of(args.device)
    def project(cls: type[ClassifierModule]) -> ClassifierModule:  # a fresh net for every fit
        return cls(net=tiny_net(), optimizer=partial(torch.optim.SGD, lr=0.01), channels_last=False)

    variants = {"bare LightningModule": BareModule, "ClassifierModule": partial(project, ClassifierModule),
                "ClassifierModule, self.log every step": partial(project, LogEveryStep)}
    print(f"Host time per training step (batch 8 of 4x4 images, a linear net), {args.steps} steps per fit")
    print(f"hardware: {hardware(device)}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so a busy neighbour slows every variant alike
        for name, make in variants.items():
            times[name].append(ms_per_step(make(), args.steps, device))
    base = statistics.median(times["bare LightningModule"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:40s} {median:6.3f} ms/step (median of {args.repeats}), {median - base:+.3f} vs the bare module")


if __name__ == "__main__":
    main()
