"""The data sets the recipes train on, read in one place.

Each loader takes a folder (``None``: its default under the shared data folder, ``$RESZOO_DATA``
or ``../shared/data`` beside the repository) and says where it looked when the data is missing.

- MNIST: ``mnist/mnist.npz`` (``x_train``/``y_train``/``x_test``/``y_test``, uint8), or a torchvision download;
- Fashion-MNIST: Zalando's four idx ``.gz`` files (Debian's ``dataset-fashion-mnist`` puts them in
  ``/usr/share/datasets/fashion-mnist``);
- FSDD: ``fsdd/recordings/{digit}_{speaker}_{index}.wav``;
- BANKING77: ``banking77/{train,test}.tsv`` (``label<TAB>text``) and ``labels.txt``.
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "FASHION_CLASSES", "FASHION_FILES", "FASHION_MNIST", "FSDD_SPEAKERS", "banking77", "data_root", "fsdd_recordings",
    "load_fashion_mnist", "load_mnist", "read_idx", "read_label_names", "read_labelled_tsv", "read_split",
]


def data_root() -> Path:
    """``$RESZOO_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("RESZOO_DATA") or ROOT.parent / "shared" / "data")


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- MNIST


def load_mnist(data_dir: Path | None = None, download: bool = False) -> Arrays:
    """(x_train, y_train, x_test, y_test) as uint8 arrays, from ``data_dir/mnist.npz``."""
    data_dir = Path(data_dir) if data_dir is not None else data_root() / "mnist"
    npz = data_dir / "mnist.npz"
    if npz.is_file():
        with np.load(npz) as d:
            return d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    if not download:
        raise FileNotFoundError(
            f"MNIST not found: looked for {npz}. Pass --data DIR (a folder holding mnist.npz, see "
            f"shared/data/mnist/README.md) or --download to fetch MNIST with torchvision (needs internet)."
        )
    from torchvision.datasets import MNIST

    data_dir.mkdir(parents=True, exist_ok=True)
    train, test = (MNIST(str(data_dir), train=t, download=True) for t in (True, False))
    return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Zalando's label ids 0..9 (README of zalandoresearch/fashion-mnist), made safe as folder names.
FASHION_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's format: magic, dimensions, uint8 data), gzipped."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {array.size} bytes of data for shape {shape}")
    return array.reshape(shape).copy()  # writable, so torch.from_numpy can share it


def read_split(src: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) uint8) of Fashion-MNIST's ``train`` or ``test`` split, checked."""
    images_file, labels_file, expected = FASHION_FILES[split]
    paths = [src / images_file, src / labels_file]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST not found: looked for {', '.join(map(str, missing))}; "
                                "install it with `apt-get install -y dataset-fashion-mnist` or pass its folder")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.shape != (expected, 28, 28) or labels.shape != (expected,) or labels.max() > 9:
        raise ValueError(f"{src}: unexpected {split} shapes {images.shape} / {labels.shape}")
    return images, labels


def load_fashion_mnist(src: Path | None = None) -> Arrays:
    """(x_train, y_train, x_test, y_test) as uint8 arrays, like ``mnist.npz``."""
    src = Path(src) if src is not None else FASHION_MNIST
    x_train, y_train = read_split(src, "train")
    x_test, y_test = read_split(src, "test")
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- FSDD

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def fsdd_recordings(data: Path | None = None) -> list[dict[str, Any]]:
    """Every FSDD recording: ``{"path", "name", "digit", "speaker" (index into FSDD_SPEAKERS), "index"}``, by file name."""
    rec_dir = (Path(data) if data is not None else data_root() / "fsdd") / "recordings"
    if not rec_dir.is_dir():
        raise FileNotFoundError(f"FSDD not found: looked for {rec_dir} (pass --data DIR holding recordings/)")
    out = []
    for path in sorted(rec_dir.glob("*.wav")):
        digit, speaker, index = path.stem.split("_")
        out.append(dict(path=path, name=path.name, digit=int(digit), speaker=FSDD_SPEAKERS.index(speaker), index=int(index)))
    return out


# --------------------------------------------------------------------------- BANKING77


def banking77(data: Path | None = None) -> dict[str, Path]:
    """BANKING77's files: ``train``/``test`` (``label<TAB>text`` with a header line) and ``labels`` (one intent a line)."""
    root = Path(data) if data is not None else data_root() / "banking77"
    files = {"train": root / "train.tsv", "test": root / "test.tsv", "labels": root / "labels.txt"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"BANKING77 not found: looked for {', '.join(missing)} (`python -m scripts.get_data "
                                "banking77` fetches it on a connected machine, or pass --data DIR)")
    return files


def read_label_names(path: Path) -> list[str]:
    """One label name a line (line number - 1 = class id)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate label names")
    return names


def read_labelled_tsv(path: Path, label_names: Sequence[str]) -> tuple[list[str], list[int]]:
    """(texts, class ids) of a ``label<TAB>text`` file with a header line (BANKING77's layout)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    ids = {name: i for i, name in enumerate(label_names)}
    texts, labels = [], []
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header != ["label", "text"]:
            raise ValueError(f"{path}: expected the header 'label<TAB>text', got {header!r}")
        for line, row in enumerate(rows, start=2):
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 tab-separated fields, got {len(row)}")
            if row[0] not in ids:
                raise ValueError(f"{path}:{line}: unknown label {row[0]!r}")
            labels.append(ids[row[0]])
            texts.append(row[1])
    return texts, labels
