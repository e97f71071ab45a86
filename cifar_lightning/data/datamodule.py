"""CIFAR-10 as a LightningDataModule: uint8 arrays in memory, a seeded train/val split,
Albumentations per image on the CPU workers; batch regularizers run later on the device."""
from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, get_worker_info

from cifar_lightning.data.sources import CifarArrays
from cifar_lightning.errors import ConfigError

ImageTransform = Callable[..., dict]


class ArrayDataset(Dataset):
    """(uint8 HWC tensor, label) pairs; the device hook turns the batch into float NCHW."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: ImageTransform | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.labels[index])


def seed_worker(worker_id: int) -> None:
    """Seed a loader worker (Lightning's seeding) and give its copy of the Albumentations transform a
    stream of its own: forked copies would otherwise make the same random decisions in every worker."""
    pl_worker_init_function(worker_id)
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(info.seed), random.Random(info.seed))


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index split of the training set."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


class CIFAR10DataModule(pl.LightningDataModule):
    """Train/val/test loaders over an in-memory source.

    ``val_size`` images of the training set are held out for validation (model selection);
    ``val_size=0`` trains on all of it and skips validation (the last epoch is tested).
    """

    def __init__(self, source, train_transform: ImageTransform | None = None,
                 test_transform: ImageTransform | None = None, batch_size: int = 256,
                 eval_batch_size: int = 1000, val_size: int = 5000, split_seed: int = 0,
                 num_workers: int = 2, pin_memory: bool = False, persistent_workers: bool = True) -> None:
        super().__init__()
        self.source = source
        self.train_transform, self.test_transform = train_transform, test_transform
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self.arrays: CifarArrays | None = None

    @property
    def classes(self) -> list[str]:
        return self.load().classes

    def prepare_data(self) -> None:
        self.source.prepare()

    def load(self) -> CifarArrays:
        if self.arrays is None:
            self.arrays = self.source.load()
        return self.arrays

    def setup(self, stage: str | None = None) -> None:
        a = self.load()
        if not 0 <= self.val_size < len(a.train_labels):
            raise ConfigError(f"data.val_size={self.val_size} must be in [0, {len(a.train_labels)}) "
                             f"(the training set has {len(a.train_labels)} images)")
        train_idx, val_idx = split_indices(len(a.train_labels), self.val_size, self.split_seed)
        self.train_set = ArrayDataset(a.train_images[train_idx], a.train_labels[train_idx], self.train_transform)
        self.val_set = ArrayDataset(a.train_images[val_idx], a.train_labels[val_idx], self.test_transform)
        self.test_set = ArrayDataset(a.test_images, a.test_labels, self.test_transform)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # The platform's default start method, named: inside a joblib (loky) sweep worker the default
        # context is loky's, whose processes DataLoader cannot start (pytorch#44687, hydra#964).
        context = multiprocessing.get_all_start_methods()[0] if self.num_workers > 0 else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.persistent_workers and self.num_workers > 0,
                          multiprocessing_context=context, worker_init_fn=seed_worker)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False) if self.val_size else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
