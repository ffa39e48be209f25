#!/usr/bin/env python
"""Train ``resnet-mnist`` (or, with ``--plain``, its plain twin ``resnet-mnist-plain``) on MNIST,
or ``resnet-fashion-mnist`` on Fashion-MNIST (``--dataset fashion-mnist``).

CPU only, seeded and deterministic. Reads ``../shared/data/mnist/mnist.npz`` (relative to the
repository; ``--data`` to point elsewhere, ``--download`` to fetch MNIST with torchvision where
there is internet), trains the small ResNet of ``reszoo.image.models.resnet_mnist`` with light
random affine augmentation, SGD + one-cycle, evaluates once on the 10,000 test images, writes the
weights to ``weights/reszoo/<name>/model.safetensors`` and the measured metrics, sha256 and size
into ``registry.yaml`` (via ``scripts/registry_io.py``).

    nice -n 10 python scripts/train_resnet_mnist.py            # resnet-mnist
    nice -n 10 python scripts/train_resnet_mnist.py --plain    # resnet-mnist-plain, same budget
    nice -n 10 python scripts/train_resnet_mnist.py --dataset fashion-mnist   # resnet-fashion-mnist

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (``apt-get install -y
dataset-fashion-mnist``: idx files in ``/usr/share/datasets/fashion-mnist``; ``--data`` to point
elsewhere). Same network and recipe as for the digits; its feature extractor is what
``scripts/eval_gan.py --dataset fashion-mnist`` measures generated clothes with.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from export_fashion_mnist import DEFAULT_SRC as FASHION_DATA  # noqa: E402
from export_fashion_mnist import load_fashion_mnist  # noqa: E402
from registry_io import COMMIT_LIMIT, measured, update_entry, write_weights  # noqa: E402

from reszoo.image.models import resnet_mnist  # noqa: E402
from reszoo.registry import get_entry  # noqa: E402

SCRIPT = "scripts/train_resnet_mnist.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"


def load_mnist(data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8 arrays, from ``data_dir/mnist.npz``."""
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


def random_affine(x: Tensor, gen: torch.Generator, *, degrees: float = 10.0, scale: float = 0.1,
                  shift_px: float = 2.0) -> Tensor:
    """Per-image random rotation, scale and shift of a batch in [0, 1] (zeros fill = background)."""
    n = x.shape[0]
    uniform = lambda *shape: torch.rand(*shape, generator=gen) * 2 - 1  # noqa: E731
    angle = uniform(n) * math.radians(degrees)
    zoom = 1 + uniform(n) * scale
    shift = uniform(n, 2) * shift_px * 2 / x.shape[-1]  # pixels -> affine_grid's [-1, 1] units
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, normalize: Any, batch_size: int = 1000) -> tuple[float, float, int]:
    """(accuracy in %, mean cross-entropy, errors) over the whole set."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(x), batch_size):
        logits = model(normalize(x[i:i + batch_size]).contiguous(memory_format=torch.channels_last))
        loss_sum += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / len(x), loss_sum / len(x), len(x) - correct



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    parser.add_argument("--plain", action="store_true", help="train the plain twin (residual=False) as resnet-mnist-plain")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"folder with mnist.npz (default {DEFAULT_DATA}) or Fashion-MNIST's idx files (default {FASHION_DATA})")
    parser.add_argument("--download", action="store_true", help="if mnist.npz is absent, download MNIST into --data with torchvision")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared machine: more threads spin-wait against other jobs")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "weights", help="mirror folder: writes OUT/reszoo/<name>/model.safetensors")
    parser.add_argument("--no-registry", action="store_true", help="do not write results into registry.yaml")
    args = parser.parse_args(argv)

    if args.limit and (args.out.resolve() == (ROOT / "weights").resolve() or not args.no_registry):
        parser.error("a --limit (smoke) run must not replace the real weights or numbers: pass --out DIR and --no-registry")
    if args.plain and args.dataset != "mnist":
        parser.error("only MNIST has a plain-twin entry (resnet-mnist-plain)")
    name = {"mnist": "resnet-mnist-plain" if args.plain else "resnet-mnist", "fashion-mnist": "resnet-fashion-mnist"}[args.dataset]
    dataset_name, dataset_type = {"mnist": ("MNIST", "mnist"), "fashion-mnist": ("Fashion-MNIST", "fashion_mnist")}[args.dataset]
    entry = get_entry(name)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)

    if args.dataset == "mnist":
        x_train, y_train, x_test, y_test = load_mnist(args.data or DEFAULT_DATA, args.download)
    else:
        x_train, y_train, x_test, y_test = load_fashion_mnist(args.data or FASHION_DATA)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float().div_(255).unsqueeze(1)  # noqa: E731
    xtr, ytr = to_tensor(x_train), torch.from_numpy(y_train.astype(np.int64))
    xte, yte = to_tensor(x_test), torch.from_numpy(y_test.astype(np.int64))
    # The normalisation of the registry entry, so training and reszoo.load agree by construction.
    mean, std = entry.preprocess["mean"][0], entry.preprocess["std"][0]
    normalize = lambda x: (x - mean) / std  # noqa: E731

    model = resnet_mnist(**entry.arch_args).to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]  # no weight decay on BN and biases
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.2)
    print(f"{name}: {params:,} parameters, residual={not args.plain}, {len(xtr):,} training images, "
          f"{args.epochs} epochs of {steps_per_epoch} steps, batch {args.batch_size}, {args.threads} threads, seed {args.seed}", flush=True)

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0, loss_sum, correct = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), args.batch_size):
            idx = order[i:i + args.batch_size]
            x = normalize(random_affine(xtr[idx], gen)).contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = F.cross_entropy(logits, ytr[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == ytr[idx]).sum())
        print(f"epoch {epoch:2d}/{args.epochs}: train loss {loss_sum / len(xtr):.4f}, train acc (augmented) "
              f"{100 * correct / len(xtr):.2f}%, {time.perf_counter() - t0:.0f} s", flush=True)
    train_seconds = time.perf_counter() - start

    accuracy, test_loss, errors = evaluate(model, xte, yte, normalize)
    print(f"{name}: {dataset_name} test accuracy {accuracy:.2f}% ({errors} errors / {len(xte)}), loss {test_loss:.4f}, "
          f"trained in {train_seconds / 60:.1f} min", flush=True)

    out_file = args.out / "reszoo" / name / entry.weights.file
    written = write_weights(model.state_dict(), out_file, max_bytes=COMMIT_LIMIT)
    digest, size = written["sha256"], written["size"]
    print(f"wrote {out_file} ({size:,} bytes, sha256 {digest})", flush=True)

    if args.no_registry:
        return 0
    metrics = [
        measured(SCRIPT, dataset_name, "test", "accuracy", accuracy, name="top-1 accuracy", dataset_type=dataset_type),
        measured(SCRIPT, dataset_name, "test", "loss", test_loss, name="cross-entropy loss", dataset_type=dataset_type),
    ]
    extra = {
        "params": params,
        "residual": not args.plain,
        "test_errors": f"{errors} / {len(xte)}",
        "training": (f"{args.epochs} epochs, batch {args.batch_size}, SGD (Nesterov momentum 0.9, weight decay "
                     f"{args.weight_decay}), one-cycle lr peak {args.lr}, random affine (±10°, ±10% scale, ±2 px), seed {args.seed}"),
        "train_minutes": round(train_seconds / 60, 1),
        "train_hardware": f"CPU ({args.threads} threads, {platform.machine()}), torch {torch.__version__}",
    }
    update_entry(name, metrics=metrics, weights={"sha256": digest, "size": size}, extra=extra)
    print(f"updated registry.yaml entry {name!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
