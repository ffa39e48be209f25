#!/usr/bin/env python
"""Write examples/digits/digit_<label>.png: the first image of each digit in the MNIST test set.

Real MNIST test digits (28x28 grayscale, white ink on black) for the README's main job and the
image tests. Reads ../shared/data/mnist/mnist.npz (relative to the repository) or --data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "digits")
    args = parser.parse_args(argv)
    npz = args.data / "mnist.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"MNIST not found: looked for {npz} (pass --data DIR)")
    with np.load(npz) as d:
        x_test, y_test = d["x_test"], d["y_test"]
    args.out.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        index = int(np.flatnonzero(y_test == digit)[0])
        path = args.out / f"digit_{digit}.png"
        Image.fromarray(x_test[index], mode="L").save(path, optimize=True)
        print(f"{path.relative_to(ROOT)}: MNIST test image #{index} (label {digit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
