"""The device-resident data path (data=cifar10_gpu), checked on the CPU."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning import LightningModule, Trainer

from cifar_lightning.data.datamodule import CIFAR10DataModule
from cifar_lightning.data.gpu_loader import DeviceBatches, GPUCIFAR10DataModule, crop_flip, reflect_pad
from cifar_lightning.data.sources import SyntheticSource


def _images(n: int = 6, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8)


def test_crop_without_padding_or_flip_is_the_identity():
    images = _images()
    index = torch.tensor([3, 0, 5])
    assert torch.equal(crop_flip(images, index, 8, padding=0, flip=False), images[index])


def test_every_crop_is_a_window_of_the_padded_image_possibly_mirrored():
    images = _images(4)
    padded = reflect_pad(images, 2)
    out = crop_flip(padded, torch.arange(4), 8, padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    for i in range(4):
        windows = [padded[i, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        windows += [w.flip(1) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)


def _coordinates(size: int) -> torch.Tensor:
    """One uint8 NHWC image whose pixel (y, x) holds (y, x, 0): a crop's smallest (y, x) is its offset."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([y, x, torch.zeros_like(y)], -1).to(torch.uint8)[None]


@pytest.mark.parametrize("padding", [0, 1, 3])
def test_crop_offsets_take_every_value_from_0_to_twice_the_padding(padding: int):
    """Each crop is the window at (dy, dx), mirrored in about half the crops, and every offset pair occurs."""
    size, n = 4, 1000
    padded = _coordinates(size + 2 * padding)
    out = crop_flip(padded, torch.zeros(n, dtype=torch.long), size, padding, flip=True,
                    generator=torch.Generator().manual_seed(0))
    offsets, mirrored = set(), 0
    for crop in out:
        dy, dx = int(crop[..., 0].min()), int(crop[..., 1].min())
        window = padded[0, dy:dy + size, dx:dx + size]
        is_mirror = not torch.equal(crop, window)
        assert torch.equal(crop, window.flip(1) if is_mirror else window)
        offsets.add((dy, dx))
        mirrored += is_mirror
    assert offsets == {(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)}
    assert 0.4 * n < mirrored < 0.6 * n


def test_reflect_pad_mirrors_the_border():
    images = _images(1)
    padded = reflect_pad(images, 2)
    assert padded.shape == (1, 12, 12, 3)
    assert torch.equal(padded[0, 2:10, 2:10], images[0])
    assert torch.equal(padded[0, 2:10, 0], images[0, :, 2])  # reflect (not repeat) the 2nd column


def test_train_batches_cover_each_image_once_and_reshuffle_per_epoch():
    labels = torch.arange(10)
    batches = DeviceBatches(_images(10), labels, batch_size=3, train=True, padding=1, seed=1)
    assert len(batches) == 3
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert len(first) == 9 and len(set(first.tolist())) == 9
    assert not torch.equal(first, second)
    assert all(x.shape == (3, 8, 8, 3) and x.dtype == torch.uint8 for x, _ in batches)


def test_eval_batches_keep_order_and_the_last_partial_batch():
    images, labels = _images(7), torch.arange(7)
    batches = DeviceBatches(images, labels, batch_size=3, train=False)
    assert len(batches) == 3
    assert torch.equal(torch.cat([x for x, _ in batches]), images)


def test_same_seed_gives_the_same_epochs():
    arrays = SyntheticSource(num_train=20, num_test=4).load()
    images, labels = torch.from_numpy(arrays.train_images), torch.from_numpy(arrays.train_labels)
    a = [x for x, _ in DeviceBatches(images, labels, 4, True, seed=3)]
    b = [x for x, _ in DeviceBatches(images, labels, 4, True, seed=3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_ddp_ranks_train_and_evaluate_on_disjoint_shares():
    images, labels = _images(11), torch.arange(11)
    ranks = [DeviceBatches(images, labels, 2, True, padding=1, seed=5, rank=r, world_size=2) for r in (0, 1)]
    assert [len(b) for b in ranks] == [2, 2]  # 11 images / 2 ranks = 5 each -> 2 full batches per rank
    seen = [torch.cat([y for _, y in b]) for b in ranks]
    assert len(set(seen[0].tolist()) | set(seen[1].tolist())) == 8  # disjoint
    evaluated = [torch.cat([y for _, y in DeviceBatches(images, labels, 4, False, rank=r, world_size=2)])
                 for r in (0, 1)]
    assert sorted(torch.cat(evaluated).tolist()) == list(range(11))  # every test image exactly once


class _BatchRecorder(LightningModule):
    """Trains nothing (LR 0); records each training batch's labels and pixels: what an epoch served."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[tuple[list[int], int]]] = {}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        images, labels = batch
        self.seen.setdefault(self.current_epoch, []).append((labels.tolist(), int(images.long().sum())))
        return self.weight * images.float().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(root: Path, epochs: int, ckpt_path: Path | None = None) -> tuple[_BatchRecorder, Trainer]:
    data = GPUCIFAR10DataModule(SyntheticSource(num_train=24, num_test=4), padding=2, flip=True, batch_size=4,
                                eval_batch_size=4, val_size=0, split_seed=0, seed=7)
    module = _BatchRecorder()
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=root)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module, trainer


def test_a_resumed_run_serves_the_epochs_an_uninterrupted_run_serves(tmp_path: Path):
    """The data module keeps the batches' epoch in the checkpoint: after a resume at epoch 2 the shuffle and
    crops are those of epoch 2, not those of a fresh epoch 0."""
    whole, _ = _fit(tmp_path, epochs=4)
    _, stopped = _fit(tmp_path, epochs=2)
    stopped.save_checkpoint(tmp_path / "epoch2.ckpt")
    resumed, _ = _fit(tmp_path, epochs=4, ckpt_path=tmp_path / "epoch2.ckpt")
    assert sorted(resumed.seen) == [2, 3]
    assert resumed.seen[2] == whole.seen[2] and resumed.seen[3] == whole.seen[3]
    assert whole.seen[2] != whole.seen[0] and whole.seen[3] != whole.seen[2]  # each epoch its own order


def test_by_default_training_crops_are_every_window_of_a_4_pixel_pad_and_its_mirror():
    """``DeviceBatches``'s defaults, pad 4 and flip, are the values ``conf/data/cifar10_gpu.yaml`` sets."""
    n, image = 2000, _images(1, size=8)
    padded = reflect_pad(image, 4)[0]
    windows = [padded[dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
    windows = {tuple(w.flatten().tolist()) for w in windows + [w.flip(1) for w in windows]}  # some coincide
    crops = next(iter(DeviceBatches(image.expand(n, -1, -1, -1), torch.arange(n), n, train=True)))[0]
    assert {tuple(crop.flatten().tolist()) for crop in crops} == windows  # each one, and only those
    seeded = DeviceBatches(image.expand(n, -1, -1, -1), torch.arange(n), n, train=True, seed=0)
    assert torch.equal(next(iter(seeded))[0], crops)


def test_batches_told_their_epoch_serve_that_epochs_order_and_crops():
    images, labels = _images(12), torch.arange(12)
    fresh = DeviceBatches(images, labels, 4, True, padding=2, seed=3)
    epochs = [[(x, y) for x, y in fresh] for _ in range(3)]
    told = DeviceBatches(images, labels, 4, True, padding=2, seed=3)
    told.epoch = 2  # as a resumed run's data module sets it from the checkpoint
    for (x, y), (u, v) in zip(told, epochs[2], strict=True):
        assert torch.equal(x, u) and torch.equal(y, v)
    assert not torch.equal(torch.cat([y for _, y in epochs[1]]), torch.cat([y for _, y in epochs[2]]))


def _gpu_data(source: SyntheticSource, **settings) -> GPUCIFAR10DataModule:
    defaults = dict(padding=0, flip=False, batch_size=4, eval_batch_size=3, val_size=6, split_seed=5, seed=2)
    return GPUCIFAR10DataModule(source, **{**defaults, **settings})


def test_the_data_module_serves_the_cpu_modules_split_and_the_whole_test_set():
    """The same train/val split as ``data=cifar10`` (``split_seed``), the test set in order, each loader at
    its own batch size, and the training batches of ``DeviceBatches`` with the module's padding, flip, seed."""
    source = SyntheticSource(num_train=30, num_test=7)
    cpu = CIFAR10DataModule(source, val_size=6, split_seed=5, num_workers=0)
    cpu.setup()
    for padding, flip in [(0, False), (2, True)]:
        gpu = _gpu_data(source, padding=padding, flip=flip)
        gpu.setup()
        assert gpu._device() == torch.device("cpu")  # no trainer yet
        val = list(gpu.val_dataloader())
        assert [len(y) for _, y in val] == [3, 3]
        assert torch.equal(torch.cat([x for x, _ in val]), torch.from_numpy(cpu.val_set.images))
        assert torch.equal(torch.cat([y for _, y in val]), torch.from_numpy(cpu.val_set.labels))
        test = list(gpu.test_dataloader())
        assert [len(y) for _, y in test] == [3, 3, 1]
        assert torch.equal(torch.cat([x for x, _ in test]), torch.from_numpy(source.load().test_images))
        train = torch.from_numpy(cpu.train_set.images), torch.from_numpy(cpu.train_set.labels)
        want = DeviceBatches(*train, 4, True, padding=padding, flip=flip, seed=2)
        got = list(gpu.train_dataloader())
        assert len(got) == 6
        for (x, y), (u, v) in zip(got, want, strict=True):
            assert torch.equal(x, u) and torch.equal(y, v)
    all_train = _gpu_data(source, val_size=0)
    all_train.setup()
    assert all_train.val_dataloader() == [] and len(all_train.train_dataloader()) == 30 // 4


def test_under_ddp_each_rank_gets_its_share_on_the_trainers_device():
    source = SyntheticSource(num_train=30, num_test=7)
    whole, share = _gpu_data(source), _gpu_data(source)
    share.trainer = SimpleNamespace(global_rank=1, world_size=2,
                                    strategy=SimpleNamespace(root_device=torch.device("cpu")))
    whole.setup()
    share.setup()
    for name in ("val_batches", "test_batches"):
        assert torch.equal(getattr(share, name).labels, getattr(whole, name).labels[1::2])
    assert (share.train_batches.rank, share.train_batches.world_size) == (1, 2)
    assert len(share.train_dataloader()) == 24 // 2 // 4
