"""Batch regularizers: CutOut's hole, RICAP's patches and area-weighted targets, and the shared
(images, labels) -> (images, soft targets) contract of every ``conf/aug`` option."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from cifar_lightning import batch_aug
from cifar_lightning.batch_aug import RICAP, CutOut, NoBatchAug, box_masks, cutout_boxes
from conftest import compose_hydra, options

FILL = (2.0, 3.0, 4.0)  # outside [0, 1]: a pixel with this value can only be a CutOut hole


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def force_centres(monkeypatch, cy: list[int], cx: list[int]) -> None:
    """Make cutout_boxes draw the given hole centres: its first randint is the rows, the second the columns."""
    draws = iter([torch.tensor(cy), torch.tensor(cx)])
    monkeypatch.setattr(batch_aug.torch, "randint", lambda *args, **kwargs: next(draws))


def hand_mask(cy: int, cx: int, size: int = 16, side: int = 32) -> torch.Tensor:
    """The hole written out pixel by pixel: rows/cols within size // 2 before the centre, clipped."""
    mask = torch.zeros(side, side, dtype=torch.bool)
    for y in range(side):
        for x in range(side):
            mask[y, x] = cy - size // 2 <= y < cy - size // 2 + size and cx - size // 2 <= x < cx - size // 2 + size
    return mask


@pytest.mark.parametrize(("cy", "cx", "area"), [
    (16, 16, 256),  # interior: the full 16 x 16 hole
    (8, 23, 256),   # interior, touching the border from inside
    (0, 0, 64),     # corner: 8 x 8 left
    (31, 20, 144),  # bottom edge: rows 23..31 (9) x cols 12..27 (16)
])
def test_cutout_makes_one_hole_clipped_at_the_borders(monkeypatch, cy: int, cx: int, area: int) -> None:
    images = torch.rand(1, 3, 32, 32)
    force_centres(monkeypatch, [cy], [cx])
    out, targets = CutOut(size=16, fill=FILL)(images, torch.tensor([3]))
    holes = out == torch.tensor(FILL).view(1, 3, 1, 1)
    assert int(holes[0, 0].sum()) == area
    assert torch.equal(holes[0, 0], hand_mask(cy, cx))
    assert torch.equal(holes[0, 1], holes[0, 0]) and torch.equal(holes[0, 2], holes[0, 0])  # every channel
    assert torch.equal(out[~holes], images[~holes])  # nothing else touched
    assert torch.equal(targets, F.one_hot(torch.tensor([3]), 10).float())


def test_cutout_holes_are_single_rectangles_of_at_most_16_px() -> None:
    images = torch.rand(64, 3, 32, 32)
    out, _ = CutOut(size=16, fill=FILL)(images, torch.zeros(64, dtype=torch.long))
    holes = (out == torch.tensor(FILL).view(1, 3, 1, 1)).all(1)
    full = 0
    for hole in holes:
        ys, xs = torch.nonzero(hole, as_tuple=True)
        height, width = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert int(hole.sum()) == height * width  # one filled rectangle
        assert height <= 16 and width <= 16
        full += height == width == 16
    assert full > 0  # an interior centre (p ~ 0.28 per image) gives a whole 16 x 16 hole


def test_cutout_with_p_zero_changes_nothing() -> None:
    images = torch.rand(8, 3, 32, 32)
    labels = torch.arange(8)
    out, targets = CutOut(size=16, p=0.0, fill=FILL)(images, labels)
    assert torch.equal(out, images)
    assert torch.equal(targets, F.one_hot(labels, 10).float())


def test_box_masks_on_hand_made_boxes() -> None:
    boxes = torch.tensor([[0, 0, 2, 3], [1, 2, 4, 4]])  # (top, left, bottom, right), ends exclusive
    expected = torch.tensor([
        [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]],
    ], dtype=torch.bool).unsqueeze(1)
    assert torch.equal(box_masks(boxes, 4, 4), expected)


def test_cutout_boxes_stay_inside_the_image() -> None:
    boxes = cutout_boxes(500, 32, 24, 16)
    top, left, bottom, right = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 32).all() and (right <= 24).all()
    assert ((bottom - top) <= 16).all() and ((right - left) <= 16).all()
    assert ((bottom - top) == 16).any() and ((bottom - top) < 16).any()


def coded_images(batch: int, side: int = 32) -> torch.Tensor:
    """Every pixel encodes where it comes from: value = 10000 * image + 100 * row + column."""
    index = torch.arange(batch).view(batch, 1, 1, 1) * 10000.0
    rows = torch.arange(side).view(1, 1, side, 1) * 100.0
    cols = torch.arange(side).view(1, 1, 1, side) * 1.0
    return (index + rows + cols).expand(batch, 3, side, side).contiguous()


@pytest.mark.parametrize("seed", range(4))
def test_ricap_patches_tile_the_image_and_weight_the_labels(seed: int) -> None:
    torch.manual_seed(seed)
    batch, side = 8, 32
    images = coded_images(batch, side)
    labels = torch.arange(batch)  # label == source image, so targets read back which images were used
    out, targets = RICAP(beta=0.3)(images, labels)
    assert out.shape == images.shape
    assert torch.allclose(targets.sum(1), torch.ones(batch))

    value = out[:, 0].long()
    source, row, col = value // 10000, value // 100 % 100, value % 100
    assert torch.equal(out, out[:, :1].expand_as(out))  # channels stay together
    ys = torch.arange(side).view(side, 1)
    xs = torch.arange(side).view(1, side)
    for b in range(batch):
        # A patch is a crop: the pixels of one source image at one offset form one rectangle.
        offsets = torch.stack([source[b], row[b] - ys, col[b] - xs]).flatten(1).T
        patches, area = offsets.unique(dim=0, return_counts=True)
        assert len(patches) <= 4
        assert int(area.sum()) == side * side  # the patches cover the image exactly once
        for patch, a in zip(patches, area):
            where = (offsets == patch).all(1).view(side, side)
            pys, pxs = torch.nonzero(where, as_tuple=True)
            assert int(a) == int(pys.max() - pys.min() + 1) * int(pxs.max() - pxs.min() + 1)
        # The soft target is each source label's share of the pixels.
        share = torch.bincount(source[b].flatten(), minlength=10).float() / (side * side)
        assert torch.allclose(targets[b], share, atol=1e-6)


def test_ricap_with_p_zero_is_the_identity() -> None:
    images = torch.rand(4, 3, 32, 32)
    labels = torch.tensor([1, 2, 3, 4])
    out, targets = RICAP(p=0.0)(images, labels)
    assert torch.equal(out, images)
    assert torch.equal(targets, F.one_hot(labels, 10).float())


def test_ricap_keeps_channels_last() -> None:
    images = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out, _ = RICAP()(images, torch.arange(4))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_no_batch_aug_gives_one_hot() -> None:
    images = torch.rand(5, 3, 32, 32)
    labels = torch.tensor([0, 9, 3, 3, 1])
    out, targets = NoBatchAug(10)(images, labels)
    assert out is images
    assert torch.equal(targets, F.one_hot(labels, 10).float())


@pytest.mark.parametrize("aug", options("aug"))
def test_every_aug_option_keeps_the_contract(aug: str) -> None:
    """(float [B, 3, H, W], int labels) -> (same-shape images, soft targets [B, 10], rows summing to 1)."""
    regularizer = instantiate(compose_hydra([f"aug={aug}", "data=synthetic"]).aug)
    images = torch.rand(16, 3, 32, 32)
    labels = torch.arange(16) % 10
    out, targets = regularizer(images, labels)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert targets.shape == (16, 10) and (targets >= 0).all()
    assert torch.allclose(targets.sum(1), torch.ones(16), atol=1e-6)
