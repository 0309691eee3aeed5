"""Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist` package.

numpy only (no torch here). Pixels are float32 in [0, 1], shape [N, 1, 28, 28]; labels int64.
The validation split is a fixed, seeded part of the training set; the test set is for final
reports only.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get update && apt-get install -y dataset-fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
VAL_SIZE = 5000
SPLIT_SEED = 20240501


class DatasetMissingError(FileNotFoundError):
    """A Fashion-MNIST file is not where it should be."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory holding the IDX files: `root`, else $PYRUNTIME_DATA, else the Debian path."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("PYRUNTIME_DATA") or DEFAULT_DIR)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = directory / name
        if p.is_file():
            return p
    raise DatasetMissingError(
        f"Fashion-MNIST file {stem}.gz not found in {directory}. Install the dataset with "
        f"`{INSTALL_HINT}`, or point PYRUNTIME_DATA at a directory holding "
        f"{', '.join(s + '.gz' for s in FILES.values())}.")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
             0x0E: ">f8"}.get(raw[2])
    if dtype is None:
        raise ValueError(f"{path}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated ({data.size} elements for shape {shape})")
    return data.reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray):
    """Writes a uint8 array as an IDX file (gzip-compressed if the name ends in .gz)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape) + a.tobytes()
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(blob)


def write_fake_dataset(directory: str | os.PathLike, n_train: int = 1200, n_test: int = 300, seed: int = 0):
    """Writes a small learnable stand-in for Fashion-MNIST in IDX format (for tests)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    syn = synthetic(n_train, 1, n_test, seed=seed)
    for split, stem in (("train", "train"), ("test", "t10k")):
        sp = getattr(syn, split)
        write_idx(d / f"{stem}-images-idx3-ubyte.gz", np.round(sp.x[:, 0] * 255))
        write_idx(d / f"{stem}-labels-idx1-ubyte.gz", sp.y)
    return d


@dataclasses.dataclass
class Split:
    x: np.ndarray  # float32 [N,1,28,28] in [0,1]
    y: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None, seed: int = 0) -> "Split":
        if n is None or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return Split(self.x[idx], self.y[idx])


@dataclasses.dataclass
class Data:
    train: Split
    val: Split
    test: Split
    num_classes: int = 10
    name: str = "fashion-mnist"


def load_raw(root=None) -> dict[str, np.ndarray]:
    d = data_dir(root)
    return {k: read_idx(_find(d, stem)) for k, stem in FILES.items()}


def _to_float(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def load_fashion_mnist(root=None, *, val_size: int = VAL_SIZE, train_subset: int | None = None,
                       test_subset: int | None = None, seed: int = SPLIT_SEED) -> Data:
    """Train/val/test splits. The validation set is `val_size` images of the training set
    chosen by a permutation seeded with `seed` (the same every run); train is the rest."""
    raw = load_raw(root)
    x, y = _to_float(raw["train_images"]), raw["train_labels"].astype(np.int64)
    val_size = min(val_size, len(y) // 5)  # small stand-in sets (tests) keep 80% for training
    perm = np.random.default_rng(seed).permutation(len(y))
    val_idx, tr_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    train = Split(x[tr_idx], y[tr_idx]).subset(train_subset, seed=1)
    val = Split(x[val_idx], y[val_idx])
    test = Split(_to_float(raw["test_images"]), raw["test_labels"].astype(np.int64))
    if train_subset is not None:
        val = val.subset(max(500, train_subset // 4), seed=2)
    test = test.subset(test_subset, seed=3)
    return Data(train, val, test)


def synthetic(n_train: int = 512, n_val: int = 256, n_test: int = 256, num_classes: int = 10,
              seed: int = 0) -> Data:
    """A learnable toy set with Fashion-MNIST's shapes: each class is a noisy fixed pattern."""
    rng = np.random.default_rng(seed)
    protos = rng.random((num_classes, 1, 28, 28)).astype(np.float32)

    def make(n):
        y = rng.integers(0, num_classes, n).astype(np.int64)
        x = 0.6 * protos[y] + 0.4 * rng.random((n, 1, 28, 28)).astype(np.float32)
        return Split(np.clip(x, 0, 1).astype(np.float32), y)

    return Data(make(n_train), make(n_val), make(n_test), num_classes, "synthetic")
