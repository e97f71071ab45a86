"""Where the CIFAR-10 pixels come from: official pickles, an image-folder copy, or generated data.

Every source returns the whole dataset as uint8 NHWC arrays (:class:`CifarArrays`), so the
data module downstream does not care which layout was on disk. Anything wrong with the files
is reported as a one-line :class:`DatasetError` of the form ``<path>: <problem>; <fix>``,
because a traceback from deep inside pickle or PIL does not tell a user what to do.
"""

from __future__ import annotations

import _codecs
import hashlib
import http.client
import os
import pickle
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cifar_lightning.errors import DatasetError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
PICKLE_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
PICKLE_FILES = (*TRAIN_BATCHES, TEST_BATCH, META_FILE)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SIDE = 32
ROW_BYTES = 3 * SIDE * SIDE

HOW_TO_GET = (
    f"expected the pickle layout <root>/{PICKLE_DIR}/{{data_batch_1..5,test_batch,batches.meta}} (data=cifar10) "
    "or the folder layout <root>/{train,test}/<class>/*.jpg|png (data=folder); "
    "set data.download=true to fetch the official set, or point data.root at a copy"
)
REDOWNLOAD = "delete it and re-download (data.download=true) or re-create the copy"


@dataclass
class CifarArrays:
    """The whole dataset in memory as uint8 NHWC arrays."""

    train_images: np.ndarray  # uint8 [N, 32, 32, 3]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


# --------------------------------------------------------------------------- pickle layout


try:  # numpy 2 moved numpy.core to numpy._core; importing the old name warns, so use the live one
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # how Python 3 writes bytes at protocol 2
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else, so a data file cannot run code."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self.path}: refused to load global {module}.{name} (CIFAR-10 batches hold only "
                f"numpy arrays, lists and strings; the file is not a CIFAR-10 batch or was tampered with); "
                f"{REDOWNLOAD}"
            ) from None


def _unpickle(path: Path) -> dict[bytes, Any]:
    """Read one batch file safely; any decoding failure becomes a DatasetError naming the file."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except DatasetError:
        raise
    except Exception as e:  # corrupt bytes can raise almost any type from inside the unpickler
        raise DatasetError(
            f"{path}: cannot unpickle ({type(e).__name__}: {e}), the file is truncated or corrupt; {REDOWNLOAD}"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: holds a {type(obj).__name__}, expected a CIFAR-10 batch dict; {REDOWNLOAD}")
    return obj


def _entry(batch: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in batch:
        raise DatasetError(f"{path}: has no {key!r} entry, so it is not a CIFAR-10 python batch; {REDOWNLOAD}")
    return batch[key]


def _read_classes(path: Path) -> list[str]:
    names = _entry(_unpickle(path), b"label_names", path)
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DatasetError(f"{path}: label_names must be a non-empty list of strings; {REDOWNLOAD}")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the batch's raw [N, 3072] rows and its int64 labels, checked against each other."""
    batch = _unpickle(path)
    data = _entry(batch, b"data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        shape = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: data is {shape}, expected uint8 [N, {ROW_BYTES}]; {REDOWNLOAD}")
    try:
        labels = np.asarray(_entry(batch, b"labels", path), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise DatasetError(f"{path}: labels are not a list of integers ({e}); {REDOWNLOAD}") from e
    if labels.shape != (len(data),):
        raise DatasetError(
            f"{path}: {labels.size} labels for {len(data)} images, expected one label per image; {REDOWNLOAD}"
        )
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DatasetError(
            f"{path}: label {labels[bad][0]} is outside [0, {num_classes}) (batches.meta lists "
            f"{num_classes} classes); {REDOWNLOAD}"
        )
    return data, labels


def _read_split(paths: list[Path], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate batches and turn channel-major rows into NHWC with one vectorised copy."""
    batches = [_read_batch(p, num_classes) for p in paths]
    rows = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    images = np.ascontiguousarray(rows.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))
    return images, labels


def download_archive(root: Path) -> Path:
    """Stream URL to a temp file in root and move it into place only once its md5 matches.

    A partial or wrong download therefore never sits under the final name.
    """
    root.mkdir(parents=True, exist_ok=True)
    target = root / ARCHIVE_NAME
    with tempfile.NamedTemporaryFile(dir=root, prefix=f".{ARCHIVE_NAME}.", suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        h = hashlib.md5(usedforsecurity=False)
        try:
            with urllib.request.urlopen(URL, timeout=60) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    h.update(chunk)
                    tmp.write(chunk)
        except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
            tmp.close()
            tmp_path.unlink(missing_ok=True)
            raise DatasetError(
                f"{root}: could not download {URL} (no network? {e}); place a copy under {root} "
                f"(pickle layout {PICKLE_DIR}/, or folder layout train/,test/ with data=folder) or point data.root at one"
            ) from e
    if h.hexdigest() != MD5:
        tmp_path.unlink()
        raise DatasetError(
            f"{target}: downloaded file has md5 {h.hexdigest()}, expected {MD5} (corrupted or changed download); "
            f"retry, or place a verified copy under {root}"
        )
    os.replace(tmp_path, target)
    return target


def extract_archive(archive: Path, root: Path) -> None:
    """Unpack with tarfile's "data" filter, which refuses members that would land outside root."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(
            f"{archive}: cannot extract ({type(e).__name__}: {e}); delete it and re-download (data.download=true)"
        ) from e


class PickleSource:
    """The official CIFAR-10 python version: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""

    def __init__(self, root: str, download: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.download = download
        self.folder = self.root / PICKLE_DIR

    def _missing(self) -> list[str]:
        return [name for name in PICKLE_FILES if not (self.folder / name).is_file()]

    def _check_not_folder_layout(self) -> None:
        """A folder-layout copy at data.root is read by another source: say which, rather than 'not found'."""
        if not self.folder.is_dir() and all((self.root / split).is_dir() for split in ("train", "test")):
            raise DatasetError(f"{self.root}: holds the folder layout train/,test/, not {PICKLE_DIR}/; "
                               "add data=folder to read it")

    def prepare(self) -> None:
        """Download and extract the official archive, only if files are missing and download was asked for."""
        self._check_not_folder_layout()
        if self.download and self._missing():
            extract_archive(download_archive(self.root), self.root)

    def load(self) -> CifarArrays:
        self._check_not_folder_layout()
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: CIFAR-10 not found (no such directory); {HOW_TO_GET}")
        missing = self._missing()
        if missing:
            raise DatasetError(f"{self.folder}: missing {', '.join(missing)}; {HOW_TO_GET}")
        classes = _read_classes(self.folder / META_FILE)
        train_images, train_labels = _read_split([self.folder / n for n in TRAIN_BATCHES], len(classes))
        test_images, test_labels = _read_split([self.folder / TEST_BATCH], len(classes))
        return CifarArrays(train_images, train_labels, test_images, test_labels, classes)


# --------------------------------------------------------------------------- folder layout


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.size != (SIDE, SIDE):
                raise DatasetError(
                    f"{path}: image is {im.size[0]}x{im.size[1]}, expected {SIDE}x{SIDE} "
                    "(images are not resized on load); resize or remove it"
                )
            return np.asarray(im.convert("RGB"))
    except DatasetError:
        raise
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, ... for broken files
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e}); delete or replace it") from e


def _read_folder_split(split_dir: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Decode <split>/<class>/* in sorted order, after checking every class has a fair share of files."""
    files: list[list[Path]] = []
    for name in classes:
        class_dir = split_dir / name
        paths = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DatasetError(f"{class_dir}: no .jpg/.jpeg/.png images in this class folder; add images or remove it")
        files.append(paths)
    counts = np.array([len(p) for p in files])
    mean = counts.mean()
    for name, count in zip(classes, counts):
        if count < 0.5 * mean:
            raise DatasetError(
                f"{split_dir / name}: class {name!r} has {count} images, under half the mean of {mean:.0f} per class "
                "(incomplete copy?); complete the folder or remove the class"
            )
    all_paths = [p for paths in files for p in paths]
    images = np.empty((len(all_paths), SIDE, SIDE, 3), dtype=np.uint8)
    for i, path in enumerate(all_paths):
        images[i] = _read_image(path)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    return images, labels


def _mixed(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images in one fixed mixed order, as the official pickles hold them: read class by class, the
    first validation and test batches (a short run's only ones) would hold a single class."""
    order = np.random.default_rng(0).permutation(len(labels))
    return images[order], labels[order]


class FolderSource:
    """An image-folder copy: <root>/{train,test}/<class>/*.jpg|*.jpeg|*.png, classes = sorted folder names."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).expanduser()

    def prepare(self) -> None:
        """Nothing to fetch: the folder copy is made by the user."""

    def load(self) -> CifarArrays:
        train_dir, test_dir = self.root / "train", self.root / "test"
        for split_dir in (train_dir, test_dir):
            if not split_dir.is_dir():
                raise DatasetError(f"{split_dir}: CIFAR-10 not found (no such directory); {HOW_TO_GET}")
        classes = _subdirs(train_dir)
        if not classes:
            raise DatasetError(f"{train_dir}: no class folders; expected {train_dir}/<class>/*.jpg|png")
        test_classes = _subdirs(test_dir)
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DatasetError(
                f"{test_dir}: class folders differ from {train_dir} (only in train: {only_train}, "
                f"only in test: {only_test}); make both splits hold the same class folders"
            )
        train_images, train_labels = _mixed(*_read_folder_split(train_dir, classes))
        test_images, test_labels = _mixed(*_read_folder_split(test_dir, classes))
        return CifarArrays(train_images, train_labels, test_images, test_labels, classes)


# --------------------------------------------------------------------------- synthetic


class SyntheticSource:
    """Generated images for tests and smoke runs: no files, deterministic from seed, learnable.

    Each class has its own background colour and a stripe (horizontal or vertical, at a
    class-specific position) in the inverted colour; per-image Gaussian noise keeps it from
    being a lookup table while a tiny CNN still separates the classes within a few epochs.
    """

    NOISE_STD = 24.0

    def __init__(self, num_train: int = 1000, num_test: int = 200, num_classes: int = 10, seed: int = 0) -> None:
        if num_classes < 1 or num_train < 0 or num_test < 0:
            raise ValueError(f"SyntheticSource needs num_classes >= 1 and non-negative sizes, got "
                             f"{num_classes=}, {num_train=}, {num_test=}")
        self.num_train, self.num_test, self.num_classes, self.seed = num_train, num_test, num_classes, seed

    def prepare(self) -> None:
        """Nothing to fetch: images are generated in load()."""

    def _templates(self, rng: np.random.Generator) -> np.ndarray:
        """One clean [32, 32, 3] image per class."""
        c = self.num_classes
        colours = rng.integers(30, 226, size=(c, 3))
        positions = c // 2 + c % 2  # stripe slots per orientation
        width = max(2, SIDE // (2 * positions))
        starts = (np.arange(c) // 2) * (SIDE - width) // max(1, positions - 1)
        coord = np.arange(SIDE)
        in_band = (coord[None, :] >= starts[:, None]) & (coord[None, :] < starts[:, None] + width)  # [C, 32]
        horizontal = (np.arange(c) % 2 == 0)[:, None, None]
        stripe = np.where(horizontal, in_band[:, :, None], in_band[:, None, :])  # [C, 32, 32]
        return np.where(stripe[..., None], 255 - colours[:, None, None, :], colours[:, None, None, :])

    def _split(self, rng: np.random.Generator, templates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n, dtype=np.int64) % self.num_classes)
        noise = rng.normal(0.0, self.NOISE_STD, size=(n, SIDE, SIDE, 3))
        images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        return images, labels

    def load(self) -> CifarArrays:
        rng = np.random.default_rng(self.seed)
        templates = self._templates(rng)
        train_images, train_labels = self._split(rng, templates, self.num_train)
        test_images, test_labels = self._split(rng, templates, self.num_test)
        classes = [f"class_{i}" for i in range(self.num_classes)]
        return CifarArrays(train_images, train_labels, test_images, test_labels, classes)
