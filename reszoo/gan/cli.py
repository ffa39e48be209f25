"""``reszoo generate NAME [--n 64] [--out grid.png] [--labels L ...] [--seed S] [--truncation T]``.

Imported when the core CLI builds its parser, so it stays light: reszoo and torch are imported
inside :func:`run`. Images are generated and written into the grid a chunk at a time, so memory
stays bounded; ``--n`` is at most :data:`MAX_IMAGES` (a 64x64 grid: ~70 M pixels for 128x128
BigGAN images, under the size PIL, and so reszoo, opens again).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

__all__ = ["MAX_IMAGES", "add_parser", "run"]

MAX_IMAGES = 4096


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="sample images from a gan generator and write them as one grid PNG",
        description="Sample images from a generator (e.g. sngan-mnist, biggan-deep-128) and write a grid PNG.",
    )
    p.add_argument("name", help="registry name of a gan generator, e.g. sngan-mnist")
    p.add_argument("--n", type=int, default=64, help=f"number of images (default 64, at most {MAX_IMAGES})")
    p.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="class names or indices, one for all images or one per image "
                        "(default for conditional models: the classes in turn, one row each when --n allows)")
    p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same images (default 0)")
    p.add_argument("--truncation", type=float, default=None, help="truncation in (0, 1] (default: the model's)")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about square)")
    p.add_argument("--mirror", default=None, help="mirror folder to load the weights from")
    p.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    if not 1 <= args.n <= MAX_IMAGES:
        raise InputError(f"--n must be between 1 and {MAX_IMAGES} images for one grid, got {args.n}; "
                         "for more, run generate several times with different --seed values")
    if args.nrow is not None and args.nrow < 1:
        raise InputError(f"--nrow must be at least 1, got {args.nrow}")
    if Path(args.out).suffix.lower() != ".png":
        raise InputError(f"--out must end in .png, got {args.out}")


def run(args: argparse.Namespace) -> int:
    import itertools

    import reszoo

    from .grid import write_grid
    from .models import GeneratorMixin

    _check_options(args)
    model = reszoo.load(args.name, mirror=args.mirror)
    if model.entry.domain != "gan" or not isinstance(model, GeneratorMixin):
        raise InputError(f"{args.name!r} is not a generator (see `reszoo list --domain gan`)")
    labels, nrow = args.labels, args.nrow
    if labels is None and model.num_classes and model.num_classes <= 100:
        # a class-ordered grid: classes in turn, so each column shows one class
        labels = [i % model.num_classes for i in range(args.n)]
        nrow = nrow or (model.num_classes if args.n >= model.num_classes else None)
    images = model.iter_sample(args.n, labels=labels, truncation=args.truncation, seed=args.seed)
    first = next(images)  # for the summary line: the shape of one image
    write_grid(itertools.chain([first], images), args.n, args.out, nrow=nrow)
    _, c, h, w = first.shape
    print(f"{model.entry.name}: wrote {args.n} images ({c}x{h}x{w}, seed {args.seed}) to {args.out}")
    return 0
