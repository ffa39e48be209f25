"""Train ``sngan-mnist`` (class-conditional SNGAN, residual G and D, hinge loss) on MNIST, on the CPU.

    nice -n 10 python scripts/train_sngan_mnist.py                # residual twin -> sngan-mnist
    nice -n 10 python scripts/train_sngan_mnist.py --plain        # plain twin    -> sngan-mnist-plain
    nice -n 10 python scripts/train_sngan_mnist.py --dataset fashion-mnist [--plain]   # -> sngan-fashion-mnist[-plain]

Both twins get the same budget (iterations, batch, optimiser, seed). The recipe: hinge loss,
one D step per G step, Adam(2e-4, betas 0.0/0.9) for both with a linear decay to 0, batch 32,
10,000 iterations (~13 minutes on one of 2 shared cores when they are not crowded), small
networks (ch=16; G also concatenates a 32-d class embedding to z, which makes the class
conditioning take hold within a few hundred steps where conditional BN alone had barely started
after 1500), the mode-seeking term of MSGAN (Mao et al. 2019, weight 0.1) and an exponential
moving average of G's weights (decay 0.999 with warm-up), which is what is saved.
Why mode seeking: without it the class embedding let G draw nearly one digit per class whatever
its noise (within-class pixel std 0.04 at the end, MNIST's own 0.156; falling from the first
hundreds of steps). The term (``reszoo.gan.losses.mode_seeking_loss``: the inverse of how far
the image moves per unit of noise, on pairs of noises of one class; the fake batch's second half
repeats the first half's classes) keeps the samples of a class apart (docs/gan.md has the
measurements). ``--probe-every N`` logs G_ema's class accuracy (by resnet-mnist) and within-class
pixel std during training.
Only the generator goes to the weight mirror (``weights/reszoo/<name>/model.safetensors``); the
discriminator is kept under ``runs/`` for anyone who wants to resume. The run writes the weight
file's sha256 and size into registry.yaml; ``scripts/eval_gan.py`` measures the samples.

Data: ``../shared/data/mnist/mnist.npz`` (or ``--data``); see that folder's README. Fashion-MNIST:
Debian's ``dataset-fashion-mnist`` (idx files in ``/usr/share/datasets/fashion-mnist``), the same
recipe and budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from export_fashion_mnist import DEFAULT_SRC as FASHION_DATA  # noqa: E402
from export_fashion_mnist import load_fashion_mnist  # noqa: E402

from reszoo.gan.losses import mode_seeking_loss  # noqa: E402
from reszoo.gan.metrics import within_class_pixel_std  # noqa: E402
from reszoo.gan.models import sngan_d28, sngan_g28  # noqa: E402

SCRIPT = "scripts/train_sngan_mnist.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist" / "mnist.npz"
ARCH_ARGS = {"ch": 16, "z_dim": 128, "num_classes": 10, "class_embed_dim": 32, "out_channels": 1}


@dataclass(frozen=True)
class GanDataset:
    """What the recipe and ``scripts/eval_gan.py`` need to know of a dataset."""

    title: str  # as the metrics name it
    dataset_type: str  # Hub dataset id
    generator: str  # the residual generator; its plain twin is f"{generator}-plain"
    classifier: str  # measures the samples (probe, eval_gan)
    default_data: Path

    @property
    def twins(self) -> tuple[str, str]:
        return self.generator, f"{self.generator}-plain"


DATASETS = {
    "mnist": GanDataset("MNIST", "mnist", "sngan-mnist", "resnet-mnist", DEFAULT_DATA),
    "fashion-mnist": GanDataset("Fashion-MNIST", "fashion_mnist", "sngan-fashion-mnist", "resnet-fashion-mnist", FASHION_DATA),
}


def load_uint8(dataset: str, path: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8 arrays: ``mnist.npz``, or Fashion-MNIST's idx folder."""
    path = path or DATASETS[dataset].default_data
    if dataset == "fashion-mnist":
        return load_fashion_mnist(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST not found: looked for {path} (see /work/shared/data/mnist/README.md, or pass --data)")
    with np.load(path) as d:
        return d["x_train"], d["y_train"], d["x_test"], d["y_test"]


def load_train_images(dataset: str, path: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images in [-1, 1], shape (60000, 1, 28, 28), and labels."""
    x, y, _, _ = load_uint8(dataset, path)
    images = torch.from_numpy(np.ascontiguousarray(x)).float().div(127.5).sub(1).unsqueeze(1)
    return images, torch.from_numpy(y.astype(np.int64))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float = 0.999) -> None:
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def discriminator_step(G: torch.nn.Module, D: torch.nn.Module, opt_d: torch.optim.Optimizer, real: torch.Tensor,
                       y: torch.Tensor, z: torch.Tensor, mode_seeking: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One hinge-loss update of D on ``real`` and ``G(z)``; returns ``(loss_d, fake, y_fake)`` for the G step.
    Mode seeking compares two noises of one class: the fakes' second half repeats the first half's classes."""
    y_fake = y[: len(y) // 2].repeat(2) if mode_seeking else y
    fake = G(z, y_fake)
    loss_d = F.relu(1 - D(real, y)).mean() + F.relu(1 + D(fake.detach(), y_fake)).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_d, fake, y_fake


def generator_step(D: torch.nn.Module, opt_g: torch.optim.Optimizer, fake: torch.Tensor, y_fake: torch.Tensor,
                   z: torch.Tensor, mode_seeking: float) -> torch.Tensor:
    """One update of G: the hinge loss ``-D(fake)`` plus, weighted by ``mode_seeking``, MSGAN's term."""
    loss_g = -D(fake, y_fake).mean()
    if mode_seeking:
        loss_g = loss_g + mode_seeking * mode_seeking_loss(fake, z)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return loss_g


class Probe:
    """Class accuracy (by the dataset's classifier) and within-class pixel std of 640 EMA samples."""

    def __init__(self, classifier: str) -> None:
        import reszoo

        self.classifier = reszoo.load(classifier)
        self.labels = torch.arange(10).repeat_interleave(64)

    def __call__(self, G: torch.nn.Module) -> str:
        from reszoo.gan.metrics import class_accuracy, classifier_outputs

        images = G.sample(len(self.labels), labels=self.labels, seed=1)
        _, probs = classifier_outputs(self.classifier, images)
        return (f"class accuracy {class_accuracy(probs, self.labels):.3f}  within-class pixel std "
                f"{within_class_pixel_std(images, self.labels):.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", action="store_true", help="train the plain twin (no residual additions)")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                    help="mnist -> sngan-mnist; fashion-mnist (apt-get install dataset-fashion-mnist) -> sngan-fashion-mnist")
    ap.add_argument("--data", type=Path, default=None, help="mnist.npz, or the folder of Fashion-MNIST's idx files")
    ap.add_argument("--iters", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1: on shared cores, more threads mostly wait for each other")
    ap.add_argument("--n-dis", type=int, default=1, help="D steps per G step")
    ap.add_argument("--ch", type=int, default=ARCH_ARGS["ch"])
    ap.add_argument("--class-embed-dim", type=int, default=ARCH_ARGS["class_embed_dim"])
    ap.add_argument("--mode-seeking", type=float, default=0.1, help="weight of the mode-seeking term (0: off)")
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--probe-every", type=int, default=0, help="log G_ema's within-class pixel std and class accuracy every N steps")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the discriminator and train.json go")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the generator's weights go (default: weights/reszoo with --register, else runs/sngan-trial)")
    ap.add_argument("--register", action="store_true",
                    help="publish: the generator into weights/ and its pins into registry.yaml (without it nothing published changes)")
    ap.add_argument("--registry", type=Path, default=ROOT / "registry.yaml", help="registry --register writes")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "weights" / "reszoo" if args.register else ROOT / "runs" / "sngan-trial"

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    residual = not args.plain
    ds = DATASETS[args.dataset]
    name = ds.twins[0] if residual else ds.twins[1]
    images, labels = load_train_images(args.dataset, args.data)

    arch_args = {**ARCH_ARGS, "ch": args.ch, "class_embed_dim": args.class_embed_dim}
    G = sngan_g28(residual=residual, **arch_args)
    D = sngan_d28(ch=args.ch, num_classes=10, in_channels=1, residual=residual)
    G_ema = copy.deepcopy(G).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.0, 0.9))
    decay = lambda step: 1.0 - step / args.iters  # noqa: E731
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, decay)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, decay)
    data_gen = torch.Generator().manual_seed(args.seed)
    perm, cursor = torch.randperm(len(images), generator=data_gen), 0

    print(f"{name}: G {sum(p.numel() for p in G.parameters()):,} params, D {sum(p.numel() for p in D.parameters()):,}; "
          f"{args.iters} iters x batch {args.batch}", flush=True)
    start = time.time()
    probe = Probe(ds.classifier) if args.probe_every else None
    for step in range(args.iters):
        for _ in range(args.n_dis):
            if cursor + args.batch > len(perm):
                perm, cursor = torch.randperm(len(images), generator=data_gen), 0
            idx = perm[cursor:cursor + args.batch]
            cursor += args.batch
            real, y = images[idx], labels[idx]
            z = torch.randn(args.batch, ARCH_ARGS["z_dim"])
            loss_d, fake, y_fake = discriminator_step(G, D, opt_d, real, y, z, args.mode_seeking)

        loss_g = generator_step(D, opt_g, fake, y_fake, z, args.mode_seeking)
        sched_g.step()
        sched_d.step()
        ema_update(G_ema, G, step, args.ema_decay)
        if probe is not None and (step % args.probe_every == 0 or step == args.iters - 1):
            print(f"step {step:5d}  G_ema {probe(G_ema)}", flush=True)

        if step % 100 == 0 or step == args.iters - 1:
            rate = (step + 1) / (time.time() - start)
            print(f"step {step:5d}  loss_d {loss_d.item():.4f}  loss_g {loss_g.item():.4f}  {rate:.2f} it/s", flush=True)

    minutes = (time.time() - start) / 60
    from registry_io import COMMIT_LIMIT, write_weights

    written = write_weights(G_ema.state_dict(), args.out / name / "model.safetensors", max_bytes=COMMIT_LIMIT)
    sha, size = written["sha256"], written["size"]
    runs = args.runs / name
    write_weights(D.state_dict(), runs / "discriminator.safetensors")  # kept out of the mirror: G is the model
    summary = {"name": name, "iters": args.iters, "n_dis": args.n_dis, "batch": args.batch, "seed": args.seed,
               "mode_seeking": args.mode_seeking, "arch_args": {**arch_args, **({} if residual else {"residual": False})},
               "minutes": round(minutes, 2),
               "final_loss_d": loss_d.item(), "final_loss_g": loss_g.item(), "sha256": sha, "size": size}
    (runs / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    if args.register:
        from registry_io import update_entry

        update_entry(name, args.registry, arch_args=summary["arch_args"], weights={"sha256": sha, "size": size})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
