"""What the benchmarks share: the project's config, the device, the hardware line, and the model's
training step written as a bare PyTorch loop (the yardstick for the Lightning loop and the input)."""
from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

import cifar_lightning  # noqa: F401 - registers the ${pixels:...} resolver
from cifar_lightning.data.batches import to_float_nchw
from cifar_lightning.module import decay_groups

ROOT = Path(__file__).resolve().parents[1]

# The figures are the output: keep Lightning's per-fit banner and known warnings out of it.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, as ``train.py`` composes it (without the Hydra node)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="measurements per setting; best and median are printed")
    return p


def device_of(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return torch.device(name)


def trainer_option(device: torch.device) -> str:
    """The project's trainer preset for the device (gpu: bf16 autocast, cuDNN benchmark)."""
    return "trainer=gpu" if device.type == "cuda" else "trainer=cpu"


def hardware(device: torch.device) -> str:
    """One line naming the machine the figures came from."""
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    line = f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        line += f"; GPU {torch.cuda.get_device_name(device)}"
    return line


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall time and this process's CPU time (all its threads) since ``start()``, in seconds.

    On a shared machine the wall clock also counts the neighbours' turns; the CPU clock counts only
    the work this process did, so images per CPU-second compares loops more steadily there."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start()

    def start(self) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        synchronize(self.device)
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def best_and_median(values: Sequence[float]) -> str:
    return f"best {max(values):8.0f}   median {statistics.median(values):8.0f}"


class InMemoryBatches(Dataset):
    """Whole batches by index list: a loader that costs next to nothing, so the loop is what gets timed."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: list[int]) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def random_batches(batch_size: int, num_batches: int, device: torch.device, seed: int = 0) -> DataLoader:
    """``num_batches`` shuffled batches of random uint8 HWC images and labels, as the CPU loaders yield them."""
    g = torch.Generator().manual_seed(seed)
    n = batch_size * num_batches
    data = InMemoryBatches(torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g),
                           torch.randint(0, 10, (n,), generator=g))
    sampler = BatchSampler(RandomSampler(range(n), generator=g), batch_size, drop_last=True)
    return DataLoader(data, batch_size=None, sampler=sampler, pin_memory=device.type == "cuda")


def bare_images_per_sec(cfg: DictConfig, batches: Iterable, device: torch.device, warmup: int,
                        steps: int) -> tuple[float, float]:
    """Train images per second and per CPU-second of the project's step as a plain loop: uint8 -> float
    NCHW channels_last, the ``aug`` regularizer, soft-target cross-entropy, the ``module`` optimizer and
    one-cycle schedule, bf16 autocast when the trainer preset asks for it. The clocks start once batch
    ``warmup`` is fetched."""
    torch.manual_seed(cfg.seed)
    torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)
    net = instantiate(cfg.model).to(device, memory_format=torch.channels_last).train()
    batch_aug = instantiate(cfg.aug)
    optimizer = instantiate(cfg.module.optimizer)(decay_groups(net, cfg.module.weight_decay))
    scheduler = instantiate(cfg.module.scheduler)(optimizer, total_steps=warmup + steps) if cfg.module.scheduler else None
    bf16 = cfg.trainer.precision == "bf16-mixed"
    images_seen, clock = 0, Clock(device)
    for i, (images, labels) in enumerate(batches):
        if i == warmup:
            clock.start()
            images_seen = 0
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images, targets = batch_aug(to_float_nchw(images), labels)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(images)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg.module.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        images_seen += len(labels)
        if i == warmup + steps - 1:
            break
    else:
        raise ValueError(f"the loader ran out before {warmup + steps} batches")
    wall, cpu = clock.stop()
    return images_seen / wall, images_seen / cpu
