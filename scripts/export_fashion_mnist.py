#!/usr/bin/env python
"""Export Fashion-MNIST (Debian's ``dataset-fashion-mnist``) to image folders for ``reszoo finetune``.

Reads the four idx files of ``/usr/share/datasets/fashion-mnist/`` (``apt-get install -y
dataset-fashion-mnist``; ``--src`` to point elsewhere) and writes one 28x28 grayscale PNG per
image, one subfolder per class, in the layout ``reszoo finetune`` reads::

    OUT/train/<class>/<index>.png     60,000 images (index = position in the idx file)
    OUT/test/<class>/<index>.png      10,000 images

Class folder names are Zalando's label names made file-system safe (``T-shirt/top`` ->
``t-shirt_top``). Fashion-MNIST is (c) 2017 Zalando SE, MIT license
(https://github.com/zalandoresearch/fashion-mnist). Writing is idempotent: an existing
complete export is left as it is.

    python scripts/export_fashion_mnist.py --out runs/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path

import numpy as np

DEFAULT_SRC = Path("/usr/share/datasets/fashion-mnist")
# Zalando's label ids 0..9 (README of zalandoresearch/fashion-mnist), made safe as folder names.
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
FILES = {
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
    """(images (N, 28, 28) uint8, labels (N,) uint8) of the ``train`` or ``test`` split, checked."""
    images_file, labels_file, expected = FILES[split]
    paths = [src / images_file, src / labels_file]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST not found: looked for {', '.join(map(str, missing))}; "
                                "install it with `apt-get install -y dataset-fashion-mnist` or pass its folder")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.shape != (expected, 28, 28) or labels.shape != (expected,) or labels.max() > 9:
        raise ValueError(f"{src}: unexpected {split} shapes {images.shape} / {labels.shape}")
    return images, labels


def load_fashion_mnist(src: Path = DEFAULT_SRC) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8 arrays, like ``mnist.npz``."""
    x_train, y_train = read_split(src, "train")
    x_test, y_test = read_split(src, "test")
    return x_train, y_train, x_test, y_test


def export(src: Path, out: Path) -> dict[str, int]:
    from PIL import Image

    counts = {}
    for split, (_, _, expected) in FILES.items():
        images, labels = read_split(src, split)
        done = out / split / ".complete"
        if done.is_file() and done.read_text().strip() == str(expected):
            counts[split] = expected
            continue
        for name in CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image, mode="L").save(out / split / CLASSES[label] / f"{i:05d}.png")
        done.write_text(f"{expected}\n")
        counts[split] = expected
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help=f"folder of the idx .gz files (default {DEFAULT_SRC})")
    parser.add_argument("--out", type=Path, required=True, help="where train/ and test/ are written")
    args = parser.parse_args(argv)
    try:
        counts = export(args.src, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"export_fashion_mnist: error: {err}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST in {args.out}: " + ", ".join(f"{k} {v} images" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
