"""Fetch the data sets reszoo's recipes and data tests read, from their public sources, on a
connected machine, into the layout of ``../shared/data`` (the default ``--to``).

    python scripts/get_data.py mnist banking77 fsdd [--to DIR]
    python scripts/get_data.py fsdd --source CHECKOUT     # build from a checkout you already have

Each source is a public GitHub repository, downloaded as the archive of one pinned commit (the
commits the offline copies were made from), then converted exactly as those copies were:
``mnist/mnist.npz`` (rasbt/mnist-pngs, CC BY-SA 3.0), ``banking77/{train,test}.tsv`` +
``labels.txt`` (PolyAI-LDN/task-specific-datasets, CC BY 4.0; sha256 checked) and
``fsdd/recordings/*.wav`` (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0). Fashion-MNIST is
a Debian package: ``apt-get install dataset-fashion-mnist``. Standard library, numpy and pillow.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TO = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass(frozen=True)
class Source:
    repo: str
    commit: str
    build: Callable[[Path, Path], str]

    @property
    def url(self) -> str:
        return f"https://codeload.github.com/{self.repo}/tar.gz/{self.commit}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_mnist(src: Path, out: Path) -> str:
    import numpy as np
    from PIL import Image

    arrays = {}
    for split, first in (("train", 0), ("test", 60000)):
        items = sorted((int(p.stem), int(p.parent.name), p) for p in (src / split).glob("[0-9]/*.png"))
        if [i for i, _, _ in items] != list(range(first, first + len(items))) or len(items) not in (60000, 10000):
            raise SystemExit(f"{src / split}: not the numbering of rasbt/mnist-pngs ({len(items)} PNGs)")
        x = np.stack([np.asarray(Image.open(p)) for _, _, p in items]).astype(np.uint8)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, np.array([label for _, label, _ in items], dtype=np.uint8)
    if arrays["y_train"][:10].tolist() != [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]:
        raise SystemExit("MNIST train labels are not in the original order")
    (out / "mnist").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "mnist" / "mnist.npz", **arrays, class_names=np.array([str(d) for d in range(10)]))
    return f"mnist/mnist.npz: {arrays['x_train'].shape[0]} train, {arrays['x_test'].shape[0]} test"


_BANKING77_SHA256 = {
    "train.tsv": "5fb54bad30ee652e19beb7f8a33ca0e8e0d69fabace6376d72b6747d8275235f",
    "test.tsv": "2e03f57b0e37e61a08bd0d9eed1fec21a58c8348644001664d64c614efbfcda0",
}


_TSV_BREAKS = re.compile(r"[\t\r\n]+")


def build_banking77(src: Path, out: Path) -> str:
    data = src / "banking_data"
    labels = json.loads((data / "categories.json").read_text(encoding="utf-8"))
    dest = out / "banking77"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    for split in ("train", "test"):
        with open(data / f"{split}.csv", newline="", encoding="utf-8") as f, \
                open(dest / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as g:
            g.write("label\ttext\n")
            for row in csv.DictReader(f):
                text = _TSV_BREAKS.sub(" ", row["text"]).strip()  # only what a TSV line cannot hold changes
                g.write(f"{row['category'].strip()}\t{text}\n")
    for name, expected in _BANKING77_SHA256.items():
        if (actual := _sha256(dest / name)) != expected:
            raise SystemExit(f"banking77/{name}: sha256 {actual}, expected {expected}")
    return "banking77: train.tsv, test.tsv, labels.txt (sha256 verified)"


def build_fsdd(src: Path, out: Path) -> str:
    names = sorted(p.name for p in (src / "recordings").glob("*.wav"))
    if len(names) != 3000:
        raise SystemExit(f"{src / 'recordings'}: expected 3000 wav files, found {len(names)}")
    dest = out / "fsdd" / "recordings"
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src / "recordings" / name, dest / name)
    return f"fsdd/recordings: {len(names)} wav files"


SOURCES = {
    "mnist": Source("rasbt/mnist-pngs", "d26bd33bf1e454dd15bd4fe8b8ba64c76308f91c", build_mnist),
    "banking77": Source("PolyAI-LDN/task-specific-datasets", "57ec275d8078af65b7731c2a98be812d844a6d6b", build_banking77),
    "fsdd": Source("Jakobovski/free-spoken-digit-dataset", "26eb9aaf76e81b692f806f9140c2d2777410d7a1", build_fsdd),
}


def download(source: Source, into: Path) -> Path:
    """The checkout of ``source`` at its commit, unpacked from GitHub's archive into ``into``."""
    archive = into / "source.tar.gz"
    print(f"downloading {source.url}", file=sys.stderr)
    with urllib.request.urlopen(source.url, timeout=60) as response, open(archive, "wb") as f:
        shutil.copyfileobj(response, f)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")  # "data": no absolute paths, links out or devices
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", choices=sorted(SOURCES))
    ap.add_argument("--to", type=Path, default=DEFAULT_TO, help=f"data folder (default {DEFAULT_TO})")
    ap.add_argument("--source", type=Path, help="an existing checkout of the source repository (one name only)")
    args = ap.parse_args(argv)
    if args.source and len(args.names) != 1:
        ap.error("--source goes with exactly one data set")
    for name in args.names:
        source = SOURCES[name]
        with tempfile.TemporaryDirectory(prefix=f"reszoo-{name}-") as tmp:
            checkout = args.source or download(source, Path(tmp))
            print(source.build(checkout, args.to))
    return 0


if __name__ == "__main__":
    sys.exit(main())
