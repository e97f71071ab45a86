"""Tests for the CIFAR-10 readers: round trips, every validation error, safe unpickling, offline download."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from cifar_lightning.data import sources
from cifar_lightning.data.sources import (
    ARCHIVE_NAME,
    PICKLE_FILES,
    TEST_BATCH,
    TRAIN_BATCHES,
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


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes, as the official batches (pickled by Python 2) hold keys and pixels."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


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
    for name in ("test_batch", "data_batch_2"):
        (tmp_path / "cifar-10-batches-py" / name).unlink()
    message = error_of(PickleSource(str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py") in message and "missing data_batch_2, test_batch;" in message
    assert "data.download=true" in message


def test_pickle_truncated(tmp_path: Path) -> None:
    write_pickle_set(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:200])
    message = error_of(PickleSource(str(tmp_path)))
    assert str(path) in message and "EOFError" in message and "delete it" in message


def test_pickle_not_a_pickle(tmp_path: Path) -> None:
    write_pickle_set(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "batches.meta"
    path.write_bytes(b"<html>404 not found</html>")
    assert str(path) in error_of(PickleSource(str(tmp_path)))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("data_batch_2", {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}, "data is uint8 [4, 3000], expected uint8 [N,"),
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "data is float32 [4, 3072], expected uint8"),
        ("data_batch_2", {b"data": [[0] * 3072] * 4, b"labels": [0] * 4}, "data is list, expected uint8 [N, 3072]"),
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.uint8)}, "no b'labels' entry"),
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.uint8), b"labels": ["cat"] * 4}, "labels are not a list of integers"),
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "3 labels for 4 images"),
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, "label 3 is outside [0, 3)"),
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, -1, 0, 0]}, "label -1 is outside"),
        ("data_batch_2", {b"labels": [0] * 4}, "no b'data' entry"),
        ("data_batch_2", [1, 2, 3], "holds a list, expected a CIFAR-10 batch dict"),
        ("batches.meta", {b"num_vis": 3072}, "no b'label_names' entry"),
        ("batches.meta", {b"label_names": []}, "label_names must be a non-empty list of strings"),
        ("batches.meta", {b"label_names": [1, 2, 3]}, "label_names must be a non-empty list of strings"),
        ("batches.meta", {b"label_names": "cat dog frog"}, "label_names must be a non-empty list of strings"),  # iterable, no list
    ],
)
def test_pickle_bad_file(tmp_path: Path, name: str, content: object, expected: str) -> None:
    """A malformed batch or metadata file: the error names the file and what is wrong with it."""
    write_pickle_set(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / name
    _dump(content, path)
    message = error_of(PickleSource(str(tmp_path)))
    assert str(path) in message and expected in message


def _as_python2(folder: Path) -> None:
    for name in PICKLE_FILES:
        content = pickle.loads((folder / name).read_bytes())
        with open(folder / name, "wb") as f:
            _Py2Pickler(f, protocol=2).dump(content)


def _label_names_as_str(folder: Path) -> None:
    _dump({b"label_names": list(CLASSES)}, folder / "batches.meta")


def _labels_as_uint8_arrays(folder: Path) -> None:
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = pickle.loads((folder / name).read_bytes())
        _dump({**batch, b"labels": np.asarray(batch[b"labels"], np.uint8)}, folder / name)


@pytest.mark.parametrize("respell", [_as_python2, _label_names_as_str, _labels_as_uint8_arrays])
def test_pickle_spellings_of_the_same_content(tmp_path: Path, respell: Callable[[Path], None]) -> None:
    """Python 2's str (the official files), str class names, labels as an array: all load as written, int64 labels."""
    written = write_pickle_set(tmp_path)
    respell(tmp_path / "cifar-10-batches-py")
    assert_same(PickleSource(str(tmp_path)).load(), written)


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


def serve_official_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CifarArrays:
    """A generated set packed as the official tarball, with URL and MD5 pointing at it; returns the set."""
    written = write_pickle_set(tmp_path / "src")
    tarball = tmp_path / "cifar.tar.gz"
    md5 = build_tarball(tarball, {"cifar-10-batches-py": tmp_path / "src" / "cifar-10-batches-py"})
    monkeypatch.setattr(sources, "URL", tarball.as_uri())
    monkeypatch.setattr(sources, "MD5", md5)
    return written


def test_download_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = serve_official_archive(tmp_path, monkeypatch)
    root = tmp_path / "data" / "cifar10"  # its parent is created too
    source = PickleSource(str(root), download=True)
    source.prepare()
    assert sorted(p.name for p in root.iterdir()) == sorted([ARCHIVE_NAME, "cifar-10-batches-py"])
    assert_same(source.load(), written)


def test_download_completes_a_partial_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file missing from an existing copy is a reason to download into the existing root."""
    written = serve_official_archive(tmp_path, monkeypatch)
    write_pickle_set(tmp_path / "root")
    (tmp_path / "root" / "cifar-10-batches-py" / "test_batch").unlink()
    source = PickleSource(str(tmp_path / "root"), download=True)
    source.prepare()
    assert_same(source.load(), written)


class _FakeResponse:
    """A download that records how it is read, and fails when read again after it returned its end."""

    def __init__(self, content: bytes, root: Path) -> None:
        self.content, self.root, self.ended = content, root, False
        self.sizes: list[object] = []
        self.listings: list[list[str]] = []

    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, size: int | None = None) -> bytes:
        assert not self.ended, "read again after the end of the download"
        self.sizes.append(size)
        self.listings.append(sorted(p.name for p in self.root.iterdir()))
        end = len(self.content) if size is None else size
        chunk, self.content = self.content[:end], self.content[end:]
        self.ended = not chunk
        return chunk


def test_download_streams_into_a_hidden_part_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download stops at its end, reads chunks of at most 1 MiB (memory stays small) with a timeout of at
    most a minute (a stalled server fails), into root/.cifar-10-python.tar.gz.*.part: an interrupted download
    is never taken for the archive, and is hidden and named as partial where the user looks."""
    content = b"archive bytes" * 1000
    root = tmp_path / "root"
    response = _FakeResponse(content, root)
    opened: dict[str, object] = {}

    def urlopen(url: str, timeout: float | None = None) -> _FakeResponse:
        opened.update(url=url, timeout=timeout)
        return response

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(sources, "MD5", hashlib.md5(content).hexdigest())
    assert sources.download_archive(root) == root / ARCHIVE_NAME
    assert (root / ARCHIVE_NAME).read_bytes() == content and os.listdir(root) == [ARCHIVE_NAME]
    assert opened["url"] == sources.URL and opened["timeout"] is not None and 0 < opened["timeout"] <= 60
    assert all(isinstance(size, int) and 0 < size <= 1 << 20 for size in response.sizes)
    [part] = {name for listing in response.listings for name in listing}
    assert all(listing == [part] for listing in response.listings)
    assert re.fullmatch(r"\.cifar-10-python\.tar\.gz\.\w+\.part", part)


def test_download_works_where_fips_forbids_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The md5 is a checksum, not security; FIPS-mode OpenSSL refuses md5 unless told so."""
    content = b"archive bytes"
    (tmp_path / "archive").write_bytes(content)

    def fips_md5(*args: bytes, usedforsecurity: bool = True) -> object:
        if usedforsecurity:
            raise ValueError("[digital envelope routines] unsupported")
        return hashlib.md5(*args, usedforsecurity=False)

    monkeypatch.setattr(sources, "URL", (tmp_path / "archive").as_uri())
    monkeypatch.setattr(sources, "MD5", hashlib.md5(content).hexdigest())
    monkeypatch.setattr(sources, "hashlib", SimpleNamespace(md5=fips_md5))
    assert sources.download_archive(tmp_path / "root").read_bytes() == content


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
    with pytest.raises(DatasetError, match="cannot extract") as info:
        PickleSource(str(tmp_path / "root"), download=True).prepare()
    assert "(ReadError: not a gzip file)" in str(info.value) and "\n" not in str(info.value)


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
    again = FolderSource(str(tmp_path)).load()  # the same order every time: a folder run's validation split holds still
    assert loaded.train_labels.tolist() == again.train_labels.tolist()
    np.testing.assert_array_equal(loaded.train_images, again.train_images)


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
    assert str(path) in message and "cannot read image (UnidentifiedImageError" in message


def test_folder_wrong_size(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    path = tmp_path / "test" / "dog" / "0000.png"
    Image.new("RGB", (64, 48)).save(path)
    message = error_of(FolderSource(str(tmp_path)))
    assert str(path) in message and "64x48, expected 32x32" in message and message.endswith("; resize or remove it")


def test_folder_class_mismatch(tmp_path: Path) -> None:
    write_folder_set(tmp_path)
    (tmp_path / "test" / "frog").rename(tmp_path / "test" / "toad")
    message = error_of(FolderSource(str(tmp_path)))
    assert str(tmp_path / "test") in message and "'frog'" in message and "'toad'" in message


def test_folder_unbalanced(tmp_path: Path) -> None:
    write_folder_set(tmp_path, counts={"cat": 6, "dog": 6, "frog": 2})
    message = error_of(FolderSource(str(tmp_path)))
    assert str(tmp_path / "train" / "frog") in message and "'frog' has 2 images" in message
    assert message.endswith("; complete the folder or remove the class")


def test_folder_half_the_mean_is_enough(tmp_path: Path) -> None:
    """Only a class under half the mean is refused: 2 images against a mean of 4 load."""
    write_folder_set(tmp_path, counts={"cat": 5, "dog": 5, "frog": 2})
    assert np.bincount(FolderSource(str(tmp_path)).load().train_labels).tolist() == [5, 5, 2]


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


def test_synthetic_defaults() -> None:
    """SyntheticSource() is what code that leaves the arguments gets: 1000/200 images of 10 classes, seed 0."""
    source = SyntheticSource()
    assert (source.num_train, source.num_test, source.num_classes, source.seed) == (1000, 200, 10, 0)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"num_train": -1}, {"num_test": -1}])
def test_synthetic_rejects_bad_sizes(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="needs num_classes >= 1 and non-negative sizes, got num_classes="):
        SyntheticSource(**kwargs)


def test_synthetic_smallest_sizes_load() -> None:
    """One class and empty splits are valid: the edges of the documented ranges."""
    one_class = SyntheticSource(num_train=4, num_test=0, num_classes=1).load()
    assert one_class.train_labels.tolist() == [0] * 4 and one_class.test_images.shape == (0, 32, 32, 3)
    assert SyntheticSource(num_train=0, num_test=2).load().train_images.shape == (0, 32, 32, 3)


def _stripe(image: np.ndarray) -> tuple[bool, int, int]:
    """(horizontal, start, width) of a noise-free class image's stripe, checking it has the documented look:
    a background colour in [30, 225] and one full-length band of rows or columns in exactly the inverted colour."""
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) == 2, "a background and a stripe colour"
    background, stripe = colours[counts.argmax()], colours[counts.argmin()]
    assert ((30 <= background) & (background <= 225)).all() and (stripe == 255 - background).all()
    mask = (image == stripe).all(-1)
    rows, cols = np.flatnonzero(mask.all(1)), np.flatnonzero(mask.all(0))
    horizontal = len(rows) > 0
    band = rows if horizontal else cols
    assert len(band) > 0 and np.array_equal(band, np.arange(band[0], band[-1] + 1)), "one contiguous band"
    full = np.zeros((32, 32), bool)
    full[band if horizontal else slice(None), slice(None) if horizontal else band] = True
    assert np.array_equal(mask, full), "the band spans the whole image and nothing else has the stripe colour"
    return horizontal, int(band[0]), len(band)


@pytest.mark.parametrize("num_classes", [3, 4, 7, 10, 37])
def test_synthetic_class_images_follow_the_design(monkeypatch: pytest.MonkeyPatch, num_classes: int) -> None:
    """Without noise, class 2j has a horizontal and class 2j+1 a vertical stripe at the same offset; the stripes
    are equally wide, at distinct offsets that run from the top edge to the bottom edge."""
    monkeypatch.setattr(SyntheticSource, "NOISE_STD", 0.0)
    data = SyntheticSource(num_train=num_classes, num_test=0, num_classes=num_classes).load()
    stripes = {int(label): _stripe(image) for image, label in zip(data.train_images, data.train_labels)}
    assert sorted(stripes) == list(range(num_classes))
    assert [stripes[k][0] for k in range(num_classes)] == [k % 2 == 0 for k in range(num_classes)]
    assert len({width for _, _, width in stripes.values()}) == 1
    offsets = [stripes[k][1] for k in range(0, num_classes, 2)]
    assert [stripes[k][1] for k in range(1, num_classes, 2)] == offsets[: num_classes // 2]
    assert offsets[0] == 0 and offsets[-1] + stripes[0][2] == 32 and offsets == sorted(set(offsets))


def test_synthetic_noise_is_per_pixel_and_clipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pixel gets its own N(0, 24) noise around its class image, clipped to [0, 255], never wrapped around."""
    noisy, std = SyntheticSource(num_train=200, num_test=0, seed=5).load(), SyntheticSource.NOISE_STD
    monkeypatch.setattr(SyntheticSource, "NOISE_STD", 0.0)
    clean = SyntheticSource(num_train=200, num_test=0, seed=5).load()
    assert np.array_equal(noisy.train_labels, clean.train_labels)
    diff = noisy.train_images.astype(np.float64) - clean.train_images
    assert np.abs(diff).max() <= 6 * std
    unclipped = (clean.train_images >= 100) & (clean.train_images <= 155)
    assert abs(diff[unclipped].std() - std) < 1 and abs(diff[unclipped].mean()) < 1
    assert noisy.train_images.min() == 0 and noisy.train_images.max() == 255


def test_synthetic_images_are_the_same_for_the_same_arguments() -> None:
    """Smoke runs and their thresholds rest on these pixels: two loads give the same set."""
    first, second = (SyntheticSource(num_train=30, num_test=10).load() for _ in range(2))
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
