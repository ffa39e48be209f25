"""``reszoo generate NAME [--n 64] [--out grid.png] [--labels L ...] [--seed S] [--truncation T]``.

Imported when the core CLI builds its parser, so it stays light: reszoo and torch are imported
inside :func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="sample images from a gan generator and write them as one grid PNG",
        description="Sample images from a generator (e.g. sngan-mnist, biggan-deep-128) and write a grid PNG.",
    )
    p.add_argument("name", help="registry name of a gan generator, e.g. sngan-mnist")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="class names or indices, one for all images or one per image "
                        "(default for conditional models: the classes in turn, one row each when --n allows)")
    p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same images (default 0)")
    p.add_argument("--truncation", type=float, default=None, help="truncation in (0, 1] (default: the model's)")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about square)")
    p.add_argument("--mirror", default=None, help="mirror folder to load the weights from")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import reszoo

    from . import GeneratorMixin, save_grid

    if args.n <= 0:
        raise ValueError(f"--n must be a positive integer, got {args.n}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {out}")
    model = reszoo.load(args.name, mirror=args.mirror)
    if model.entry.domain != "gan" or not isinstance(model, GeneratorMixin):
        raise ValueError(f"{args.name!r} is not a generator (see `reszoo list --domain gan`)")
    labels, nrow = args.labels, args.nrow
    if labels is None and model.num_classes and model.num_classes <= 100:
        # a class-ordered grid: classes in turn, so each column shows one class
        labels = [i % model.num_classes for i in range(args.n)]
        nrow = nrow or (model.num_classes if args.n >= model.num_classes else None)
    images = model.sample(args.n, labels=labels, truncation=args.truncation, seed=args.seed)
    save_grid(images, out, nrow=nrow)
    _, c, h, w = images.shape
    print(f"{model.entry.name}: wrote {args.n} images ({c}x{h}x{w}, seed {args.seed}) to {out}")
    return 0
