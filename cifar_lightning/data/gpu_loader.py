"""The GPU data path: the whole dataset as uint8 on the device, batches cut and augmented there.

On a GPU a 55k-parameter net trains faster than CPU workers can decode and augment images,
so (as in airbench) the images live on the device and each batch is gathered with a random
crop of the reflect-padded image and a random horizontal flip in a single indexing op.
Batch regularizers (CutOut, RICAP, ...) still run in the LightningModule. The Albumentations
path (``data=cifar10``) stays the reference for the original study's per-image pipeline.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from cifar_lightning.data.datamodule import CIFAR10DataModule, split_indices


def reflect_pad(images: Tensor, padding: int) -> Tensor:
    """uint8 NHWC -> uint8 NHWC padded by ``padding`` px with reflection (done once per run)."""
    if padding == 0:
        return images
    nchw = images.permute(0, 3, 1, 2).float()
    return F.pad(nchw, (padding,) * 4, mode="reflect").to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def crop_flip(padded: Tensor, index: Tensor, size: int, padding: int, flip: bool,
              generator: torch.Generator | None = None) -> Tensor:
    """Random ``size`` crops (offsets 0..2*padding) of ``padded[index]``, mirrored with p=0.5; uint8 NHWC."""
    n, device = len(index), padded.device
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device, generator=generator)
    ramp = torch.arange(size, device=device)
    cols = ramp.view(1, 1, size).expand(n, 1, size)
    if flip:
        mirror = torch.rand(n, 1, 1, device=device, generator=generator) < 0.5
        cols = torch.where(mirror, size - 1 - cols, cols)
    return padded[index.view(n, 1, 1), dy + ramp.view(1, size, 1), dx + cols]


class DeviceBatches:
    """An epoch of batches from device-resident uint8 images; reshuffled (and re-augmented) each epoch.

    Under DDP each of ``world_size`` processes takes its own share (``rank``): every rank draws the same
    permutation (same seed) and keeps every ``world_size``-th image of it, so the shares are disjoint and
    all ranks step the same number of batches; evaluation images are dealt out the same way, and the
    accuracy metrics add up over ranks.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, train: bool, padding: int = 4,
                 flip: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not train:
            images, labels = images[rank::world_size], labels[rank::world_size]
        self.images = reflect_pad(images, padding) if train else images
        self.labels, self.batch_size, self.train = labels, batch_size, train
        self.rank, self.world_size = rank, world_size
        self.padding, self.flip, self.size = padding, flip, images.shape[1]
        self.generator = torch.Generator(device=images.device)
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.world_size // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        if not self.train:
            for start in range(0, n, self.batch_size):
                yield self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]
            return
        self.generator.manual_seed(self.seed + self.epoch)  # a resumed epoch sees the same order
        self.epoch += 1
        order = torch.randperm(n, device=self.images.device, generator=self.generator)[self.rank::self.world_size]
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield crop_flip(self.images, index, self.size, self.padding, self.flip, self.generator), self.labels[index]


class GPUCIFAR10DataModule(CIFAR10DataModule):
    """CIFAR-10 held on the trainer's device; random crop + flip on the device instead of Albumentations."""

    def __init__(self, source, *, padding: int, flip: bool, batch_size: int, eval_batch_size: int, val_size: int,
                 split_seed: int, seed: int) -> None:
        """Every setting comes from ``conf/data/cifar10_gpu.yaml`` (no second set of defaults here)."""
        super().__init__(source, batch_size=batch_size, eval_batch_size=eval_batch_size, val_size=val_size,
                         split_seed=split_seed, num_workers=0)
        self.padding, self.flip, self.seed = padding, flip, seed

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        a = self.load()
        train_idx, val_idx = split_indices(len(a.train_labels), self.val_size, self.split_seed)
        device = self._device()
        shard = {"rank": self.trainer.global_rank, "world_size": self.trainer.world_size} if self.trainer else {}

        def to_device(images, labels) -> tuple[Tensor, Tensor]:
            return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)

        self.train_batches = DeviceBatches(*to_device(a.train_images[train_idx], a.train_labels[train_idx]),
                                           self.batch_size, True, self.padding, self.flip, self.seed, **shard)
        self.val_batches = DeviceBatches(*to_device(a.train_images[val_idx], a.train_labels[val_idx]),
                                         self.eval_batch_size, False, **shard)
        self.test_batches = DeviceBatches(*to_device(a.test_images, a.test_labels), self.eval_batch_size, False,
                                          **shard)

    def state_dict(self) -> dict[str, int]:
        """Kept in each checkpoint: the epoch the training batches serve next, so a resumed run goes on
        with the order and crops of the epoch it resumes at, not those of epoch 0."""
        return {"train_epoch": self.train_batches.epoch}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.train_batches.epoch = state_dict["train_epoch"]

    def train_dataloader(self) -> DeviceBatches:
        return self.train_batches

    def val_dataloader(self) -> DeviceBatches | list:
        return self.val_batches if self.val_size else []

    def test_dataloader(self) -> DeviceBatches:
        return self.test_batches
