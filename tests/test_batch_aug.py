"""Batch regularizers: CutOut's hole, RICAP's patches and area-weighted targets, and the shared
(images, labels) -> (images, soft targets) contract of every ``conf/aug`` option."""
from __future__ import annotations

from collections.abc import Callable

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


def test_cutout_draws_p_per_image() -> None:
    """With p = 0.5 about half of the images get a hole: each image is decided on its own."""
    images = torch.rand(400, 3, 4, 4)
    out, _ = CutOut(size=2, p=0.5, fill=FILL)(images, torch.zeros(400, dtype=torch.long))
    holed = (out == torch.tensor(FILL).view(1, 3, 1, 1)).flatten(1).any(1)
    assert 0.4 < holed.float().mean() < 0.6


def zero_draws(monkeypatch) -> None:
    """torch.rand returns 0.0, the edge of its [0, 1) range: the draw that p = 0 must still refuse."""
    monkeypatch.setattr(batch_aug.torch, "rand", lambda *size, **kwargs: torch.zeros(*size, **kwargs))


def test_p_zero_never_fires_even_on_a_zero_draw(monkeypatch) -> None:
    """p is the chance to apply, so p = 0 is "never", whatever the draw."""
    images = torch.rand(4, 3, 8, 8)
    labels = torch.arange(4)
    zero_draws(monkeypatch)
    for regularizer in (CutOut(size=4, p=0.0, fill=FILL), RICAP(p=0.0)):
        out, targets = regularizer(images, labels)
        assert torch.equal(out, images), type(regularizer).__name__
        assert torch.equal(targets, F.one_hot(labels, 10).float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_cutout_keeps_the_dtype_and_writes_the_fill_exactly(dtype: torch.dtype) -> None:
    """The hole holds ``fill`` rounded once to the images' dtype (0.1 differs in float32 and float64)."""
    fill = (0.1, 0.2, 0.3)
    images = torch.rand(6, 3, 8, 8, dtype=dtype) + 1  # in [1, 2]: no pixel equals the fill
    out, targets = CutOut(size=4, fill=fill)(images, torch.arange(6))
    assert out.dtype == dtype and targets.dtype == dtype
    holes = (out == torch.tensor(fill, dtype=dtype).view(1, 3, 1, 1)).all(1)
    assert (holes.flatten(1).sum(1) >= 4).all()  # every image has its hole (>= 2 x 2 after clipping)
    assert torch.equal(out.isclose(images), ~holes.unsqueeze(1).expand_as(out))


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


def test_cutout_box_centres_are_uniform_over_every_pixel() -> None:
    """Centre rows 0..H-1 and columns 0..W-1 all occur about equally often (row/column 0 included)."""
    boxes = cutout_boxes(5000, 5, 7, 2)  # size 2: bottom = cy + 1 and right = cx + 1, never clipped here
    for centres, extent in ((boxes[:, 2] - 1, 5), (boxes[:, 3] - 1, 7)):
        counts = torch.bincount(centres, minlength=extent)
        assert len(counts) == extent
        assert ((counts - 5000 / extent).abs() < 0.2 * 5000 / extent).all(), counts


def test_cutout_boxes_are_whole_pixels_of_odd_sizes_too() -> None:
    """Box ends are int64 pixel indices; an unclipped box of odd size 5 spans exactly 5 x 5 pixels."""
    boxes = cutout_boxes(500, 32, 32, 5)
    assert boxes.dtype == torch.long
    top, left, bottom, right = boxes.unbind(1)
    interior = (top > 0) & (left > 0) & (bottom < 32) & (right < 32)
    assert interior.sum() > 250  # about (26 / 32) ** 2 of them
    assert ((bottom - top)[interior] == 5).all() and ((right - left)[interior] == 5).all()


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


def test_ricap_float64_targets_are_the_exact_area_fractions() -> None:
    """Targets keep the images' dtype and are computed in it: on a 30 x 30 image (900 pixels) a
    float32 area fraction would be off by ~1e-8."""
    batch, side = 8, 30
    images = coded_images(batch, side).double()
    out, targets = RICAP()(images, torch.arange(batch))
    assert targets.dtype == torch.float64
    source = out[:, 0].long() // 10000
    for b in range(batch):
        share = torch.bincount(source[b].flatten(), minlength=10).double() / (side * side)
        assert torch.allclose(targets[b], share, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("layout", "channels_last"), [
    (lambda x: x, False),
    (lambda x: x.contiguous(memory_format=torch.channels_last), True),
    (lambda x: torch.cat([x, x], dim=3)[..., ::2], False),  # a strided view: neither layout, so the default
])
def test_ricap_keeps_the_memory_format(layout: Callable[[torch.Tensor], torch.Tensor], channels_last: bool) -> None:
    """channels_last in, channels_last out (the model's layout on the GPU); anything else comes out contiguous."""
    images = layout(torch.rand(4, 3, 32, 32))
    out, _ = RICAP()(images, torch.arange(4))
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_no_batch_aug_gives_one_hot() -> None:
    images = torch.rand(5, 3, 32, 32)
    labels = torch.tensor([0, 9, 3, 3, 1])
    out, targets = NoBatchAug(10)(images, labels)
    assert out is images
    assert torch.equal(targets, F.one_hot(labels, 10).float())


def test_everything_stays_on_the_images_device() -> None:
    """Built on the images' device (the GPU in training; "meta" here, which refuses to mix with CPU)."""
    meta = torch.device("meta")
    boxes = cutout_boxes(4, 8, 8, 4, device=meta)
    assert boxes.device == meta and box_masks(boxes, 8, 8).device == meta
    images = torch.rand(4, 3, 8, 8, device=meta)
    labels = torch.zeros(4, dtype=torch.long, device=meta)
    for regularizer in (CutOut(size=4, p=0.5), RICAP()):
        out, targets = regularizer(images, labels)
        assert out.device == meta and targets.device == meta, type(regularizer).__name__


@pytest.mark.parametrize(("default", "explicit"), [
    (NoBatchAug(), NoBatchAug(num_classes=10)),
    (CutOut(), CutOut(size=16, p=1.0, fill=(0.0, 0.0, 0.0), num_classes=10)),
    (RICAP(), RICAP(beta=0.3, p=1.0, num_classes=10)),
], ids=["NoBatchAug", "CutOut", "RICAP"])
def test_defaults_are_the_papers_cifar10_settings(default: NoBatchAug, explicit: NoBatchAug) -> None:
    """A bare constructor gives CIFAR-10's 10 classes, CutOut's 16 x 16 hole and RICAP's beta = 0.3."""
    images = torch.rand(8, 3, 32, 32)
    labels = torch.arange(8)
    for seed in range(3):
        torch.manual_seed(seed)
        got = default(images, labels)
        torch.manual_seed(seed)
        want = explicit(images, labels)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


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
