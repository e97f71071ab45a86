"""The CPU data path: seeded split and per-worker augmentation streams."""
import albumentations as A
import numpy as np
import torch

from cifar_lightning.data.datamodule import CIFAR10DataModule, split_indices
from cifar_lightning.data.sources import SyntheticSource


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(100, 10, seed=3)
    again, _ = split_indices(100, 10, seed=3)
    assert len(val) == 10 and len(train) == 90 and not set(train) & set(val)
    assert np.array_equal(train, again)
    assert not np.array_equal(val, split_indices(100, 10, seed=4)[1])


def test_loader_workers_draw_different_augmentations():
    """Every image is the same picture, so two workers' batches differ only by their flips."""
    dm = CIFAR10DataModule(SyntheticSource(num_train=64, num_test=8), A.Compose([A.HorizontalFlip(p=0.5)]),
                           batch_size=16, val_size=8, num_workers=2)
    dm.setup()
    dm.train_set.images[:] = dm.train_set.images[0]
    assert not np.array_equal(dm.train_set.images[0], dm.train_set.images[0][:, ::-1])
    batches = iter(dm.train_dataloader())
    first, second = next(batches)[0], next(batches)[0]  # one from each worker
    assert not torch.equal(first, second)
