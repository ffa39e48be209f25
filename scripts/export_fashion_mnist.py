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

    python -m scripts.export_fashion_mnist --out runs/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.data import FASHION_CLASSES as CLASSES
from scripts.data import FASHION_FILES as FILES
from scripts.data import FASHION_MNIST as DEFAULT_SRC
from scripts.data import load_fashion_mnist, read_idx, read_split

__all__ = ["CLASSES", "DEFAULT_SRC", "FILES", "export", "load_fashion_mnist", "read_idx", "read_split"]


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
