"""Tests for the CIFAR-10 readers: round trips, every validation error, safe unpickling, offline download."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_lightning.data import sources
from cifar_lightning.data.sources import (
    ARCHIVE_NAME,
    CifarArrays,
    FolderSource,
    PickleSource,
    SyntheticSource,
)
from cifar_lightning.errors import DatasetError

CLASSES = ["cat", "dog", "frog"]


# --------------------------------------------------------------------------- helpers


def _dump(obj: object, path: Path, legacy_numpy: bool = False) -> None:
    """Write a protocol-2 pickle; legacy_numpy spells the global as numpy 1.x did (as in the official files)."""
    data = pickle.dumps(obj, protocol=2)
    if legacy_numpy:
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def _rows(images: np.ndarray) -> np.ndarray:
    """NHWC -> the official [N, 3072] channel-major rows."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_pickle_set(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> CifarArrays:
    """Write all six official batch files plus batches.meta under root; return what was written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images = rng.integers(0, 256, size=(5 * per_batch, 32, 32, 3), dtype=np.uint8)
    train_labels = rng.integers(0, len(CLASSES), size=5 * per_batch).astype(np.int64)
    test_images = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, len(CLASSES), size=n_test).astype(np.int64)
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        batch = {b"batch_label": b"training batch", b"data": _rows(train_images[part]),
                 b"labels": train_labels[part].tolist()}
        _dump(batch, folder / f"data_batch_{i + 1}", legacy_numpy=i % 2 == 0)
    _dump({b"batch_label": b"testing batch", b"data": _rows(test_images), b"labels": test_labels.tolist()},
          folder / "test_batch")
    _dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, folder / "batches.meta")
    return CifarArrays(train_images, train_labels, test_images, test_labels, list(CLASSES))


def write_folder_set(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> CifarArrays:
    """Write lossless PNGs under root/{train,test}/<class>/; return the arrays in the reader's order."""
    rng = np.random.default_rng(seed)
    counts = counts or {c: 3 for c in CLASSES}
    out = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(sorted(counts)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(counts[name]):
                img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{j:04d}.png")
                images.append(img)
                labels.append(label)
        out[split] = (np.stack(images), np.array(labels, dtype=np.int64))
    return CifarArrays(*out["train"], *out["test"], sorted(counts))


def assert_same(a: CifarArrays, b: CifarArrays) -> None:
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and np.array_equal(x, y), field
    assert a.classes == b.classes


def error_of(source: object) -> str:
    """The DatasetError message of source.load(), checked to be one line."""
    with pytest.raises(DatasetError) as info:
        source.load()
    message = str(info.value)
    assert "\n" not in message
    return message


def build_tarball(path: Path, members: dict[str, Path | bytes]) -> str:
    """Write a tar.gz with the given arcname -> directory/bytes members; return its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for arcname, content in members.items():
            if isinstance(content, Path):
                tar.add(content, arcname=arcname)
            else:
                info = tarfile.TarInfo(arcname)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- pickle layout


def test_pickle_round_trip(tmp_path: Path) -> None:
    written = write_pickle_set(tmp_path)
    loaded = PickleSource(str(tmp_path)).load()
    assert_same(loaded, written)
    assert loaded.train_images.shape == (20, 32, 32, 3) and loaded.train_images.flags.c_contiguous
    # A byte at channel 1, row 2, column 3 of the first row lands at [0, 2, 3, 1] in NHWC.
    raw = _rows(written.train_images)[0, 1 * 1024 + 2 * 32 + 3]
    assert loaded.train_images[0, 2, 3, 1] == raw


def test_pickle_missing_root(tmp_path: Path) -> None:
    message = error_of(PickleSource(str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "data.download=true" in message and "<root>/{train,test}/<class>" in message


def test_pickle_missing_file(tmp_path: Path) -> None:
    write_pickle_set(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    message = error_of(PickleSource(str(tmp_path)))
    assert "test_batch" in message and str(tmp_path / "cifar-10-batches-py") in message


def test_pickle_truncated(tmp_path: Path) -> None:
    write_pickle_set(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:200])
    message = error_of(PickleSource(str(tmp_path)))
    assert str(path) in message and "delete it" in message


def test_pickle_not_a_pickle(tmp_path: Path) -> None:
    write_pickle_set(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "batches.meta"
    path.write_bytes(b"<html>404 not found</html>")
    assert str(path) in error_of(PickleSource(str(tmp_path)))


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}, "expected uint8 [N, 3072]"),
        ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "expected uint8 [N, 3072]"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "3 labels for 4 images"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, "label 3 is outside [0, 3)"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, -1, 0, 0]}, "label -1 is outside"),
        ({b"labels": [0] * 4}, "no b'data' entry"),
        ([1, 2, 3], "expected a CIFAR-10 batch dict"),
    ],
)
def test_pickle_bad_batch(tmp_path: Path, batch: object, expected: str) -> None:
    write_pickle_set(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    _dump(batch, path)
    message = error_of(PickleSource(str(tmp_path)))
    assert str(path) in message and expected in message


class _Exploit:
    """Pickles as a call to func(*args): what a malicious 'dataset' would contain."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.open"])
def test_malicious_pickle_does_not_run(tmp_path: Path, kind: str) -> None:
    write_pickle_set(tmp_path / "root")
    pwned = tmp_path / "pwned"
    payload = (_Exploit(os.system, (f"touch {pwned}",)) if kind == "os.system"
               else _Exploit(builtins.open, (str(pwned), "w")))
    path = tmp_path / "root" / "cifar-10-batches-py" / "data_batch_1"
    _dump({b"data": payload, b"labels": [0]}, path)
    message = error_of(PickleSource(str(tmp_path / "root")))
    assert str(path) in message and "refused to load global" in message
    assert not pwned.exists()


def test_prepare_without_download_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "URL", (tmp_path / "absent.tar.gz").as_uri())
    PickleSource(str(tmp_path / "root")).prepare()
    assert not (tmp_path / "root").exists()
    write_pickle_set(tmp_path / "present")
    PickleSource(str(tmp_path / "present"), download=True).prepare()  # files there: no download attempted


# --------------------------------------------------------------------------- download


def test_download_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_pickle_set(tmp_path / "src")
    tarball = tmp_path / "cifar.tar.gz"
    md5 = build_tarball(tarball, {"cifar-10-batches-py": tmp_path / "src" / "cifar-10-batches-py"})
    monkeypatch.setattr(sources, "URL", tarball.as_uri())
    monkeypatch.setattr(sources, "MD5", md5)
    root = tmp_path / "root"
    source = PickleSource(str(root), download=True)
    source.prepare()
    assert sorted(p.name for p in root.iterdir()) == sorted([ARCHIVE_NAME, "cifar-10-batches-py"])
    assert_same(source.load(), written)


def test_download_bad_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "cifar.tar.gz"
    build_tarball(tarball, {"hello.txt": b"hi"})
    monkeypatch.setattr(sources, "URL", tarball.as_uri())
    monkeypatch.setattr(sources, "MD5", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="expected 0{32}") as info:
        PickleSource(str(root), download=True).prepare()
    assert str(root / ARCHIVE_NAME) in str(info.value)
    assert list(root.iterdir()) == []  # no temp file, nothing under the final name


def test_download_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "URL", (tmp_path / "absent.tar.gz").as_uri())
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="could not download") as info:
        PickleSource(str(root), download=True).prepare()
    assert str(root) in str(info.value) and "\n" not in str(info.value)
    assert list(root.iterdir()) == []


def test_extract_refuses_path_traversal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "evil.tar.gz"
    md5 = build_tarball(tarball, {"../evil": b"owned"})
    monkeypatch.setattr(sources, "URL", tarball.as_uri())
    monkeypatch.setattr(sources, "MD5", md5)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="cannot extract") as info:
        PickleSource(str(root), download=True).prepare()
    assert str(root / ARCHIVE_NAME) in str(info.value)
    assert not (tmp_path / "evil").exists()


def test_extract_corrupt_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = tmp_path / "not-a-tar.gz"
    blob.write_bytes(b"definitely not gzip")
    monkeypatch.setattr(sources, "URL", blob.as_uri())
    monkeypatch.setattr(sources, "MD5", hashlib.md5(blob.read_bytes()).hexdigest())
    with pytest.raises(DatasetError, match="cannot extract"):
        PickleSource(str(tmp_path / "root"), download=True).prepare()


# --------------------------------------------------------------------------- folder layout


def by_content(a: CifarArrays) -> CifarArrays:
    """The arrays in an order that depends on their content only."""
    def order(images: np.ndarray, labels: np.ndarray) -> list[int]:
        return sorted(range(len(labels)), key=lambda i: (labels[i], images[i].tobytes()))
    train, test = order(a.train_images, a.train_labels), order(a.test_images, a.test_labels)
    return CifarArrays(a.train_images[train], a.train_labels[train], a.test_images[test], a.test_labels[test],
                       a.classes)


def test_folder_round_trip(tmp_path: Path) -> None:
    written = write_folder_set(tmp_path)
    loaded = FolderSource(str(tmp_path)).load()
    assert_same(by_content(loaded), by_content(written))
    pixel = np.asarray(Image.open(tmp_path / "train" / "dog" / "0001.png"))
    [index] = [i for i, image in enumerate(loaded.train_images) if np.array_equal(image, pixel)]
    assert loaded.train_labels[index] == 1


def test_folder_images_come_in_a_fixed_mixed_order(tmp_path: Path) -> None:
    """Not class by class: a short run's single validation or test batch would hold one class (0.000 val acc)."""
    write_folder_set(tmp_path, counts={c: 8 for c in CLASSES})
    loaded = FolderSource(str(tmp_path)).load()
    for labels in (loaded.train_labels, loaded.test_labels):
        assert len(set(labels[:8].tolist())) == len(CLASSES)  # the first batch of 8 holds every class
    assert_same(FolderSource(str(tmp_path)).load(), loaded)  # the same order every time: repeatable runs


def test_a_folder_copy_read_as_pickles_names_data_folder(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    expected = r"holds the folder layout train/,test/.*; add data=folder"
    with pytest.raises(DatasetError, match=expected):
        PickleSource(str(tmp_path), download=True).prepare()  # before any download
    with pytest.raises(DatasetError, match=expected):
        PickleSource(str(tmp_path)).load()


def test_folder_accepts_jpeg(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for name in CLASSES:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / split / name / "a.jpeg")
            Image.new("L", (32, 32), 128).save(tmp_path / split / name / "b.JPG")  # greyscale -> RGB
    loaded = FolderSource(str(tmp_path)).load()
    assert loaded.train_images.shape == (6, 32, 32, 3)
    grey = [image for image in loaded.train_images if abs(int(image[0, 0, 0]) - int(image[0, 0, 2])) <= 4]
    assert len(grey) == len(CLASSES) and all(abs(int(image[0, 0, 2]) - 128) <= 2 for image in grey)


def test_folder_missing_split(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    (tmp_path / "test").rename(tmp_path / "val")
    message = error_of(FolderSource(str(tmp_path)))
    assert str(tmp_path / "test") in message and "data.download=true" in message


def test_folder_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    assert str(tmp_path / "train") in error_of(FolderSource(str(tmp_path)))


def test_folder_empty_class(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    for p in (tmp_path / "test" / "frog").iterdir():
        p.unlink()
    (tmp_path / "test" / "frog" / "notes.txt").write_text("not an image")
    message = error_of(FolderSource(str(tmp_path)))
    assert str(tmp_path / "test" / "frog") in message and "no .jpg/.jpeg/.png images" in message


def test_folder_corrupt_image(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    path = tmp_path / "train" / "cat" / "0002.png"
    path.write_bytes(path.read_bytes()[:40])
    message = error_of(FolderSource(str(tmp_path)))
    assert str(path) in message and "cannot read image" in message


def test_folder_wrong_size(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    path = tmp_path / "test" / "dog" / "0000.png"
    Image.new("RGB", (64, 48)).save(path)
    message = error_of(FolderSource(str(tmp_path)))
    assert str(path) in message and "64x48, expected 32x32" in message


def test_folder_class_mismatch(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    (tmp_path / "test" / "frog").rename(tmp_path / "test" / "toad")
    message = error_of(FolderSource(str(tmp_path)))
    assert str(tmp_path / "test") in message and "'frog'" in message and "'toad'" in message


def test_folder_unbalanced(tmp_path: Path) -> None:
    write_folder_set(tmp_path, counts={"cat": 6, "dog": 6, "frog": 2})
    message = error_of(FolderSource(str(tmp_path)))
    assert str(tmp_path / "train" / "frog") in message and "'frog' has 2 images" in message


# --------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_balanced() -> None:
    a = SyntheticSource(num_train=100, num_test=30, num_classes=10, seed=3).load()
    assert_same(a, SyntheticSource(num_train=100, num_test=30, num_classes=10, seed=3).load())
    assert not np.array_equal(a.train_images, SyntheticSource(100, 30, 10, seed=4).load().train_images)
    assert a.train_images.shape == (100, 32, 32, 3) and a.train_images.dtype == np.uint8
    assert a.train_labels.dtype == np.int64 and a.test_images.shape == (30, 32, 32, 3)
    assert np.bincount(a.train_labels).tolist() == [10] * 10
    assert np.bincount(a.test_labels).tolist() == [3] * 10
    assert a.classes == [f"class_{i}" for i in range(10)]


@pytest.mark.parametrize("num_classes", [2, 10, 37])
def test_synthetic_is_learnable(num_classes: int) -> None:
    """A nearest-class-mean classifier separates the classes, so a tiny CNN can too."""
    data = SyntheticSource(num_train=20 * num_classes, num_test=5 * num_classes, num_classes=num_classes).load()
    x_train = data.train_images.reshape(len(data.train_images), -1).astype(np.float32)
    x_test = data.test_images.reshape(len(data.test_images), -1).astype(np.float32)
    means = np.stack([x_train[data.train_labels == c].mean(0) for c in range(num_classes)])
    predicted = ((x_test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == data.test_labels).mean() > 0.95
