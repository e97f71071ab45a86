"""The device-resident data path (data=cifar10_gpu), checked on the CPU."""
import pytest
import torch

from cifar_lightning.data.gpu_loader import DeviceBatches, crop_flip, reflect_pad
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
