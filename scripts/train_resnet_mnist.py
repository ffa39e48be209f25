"""Train ``resnet-mnist`` (``--plain``: its plain twin ``resnet-mnist-plain``) on MNIST, or
``resnet-fashion-mnist`` on Fashion-MNIST (``--dataset fashion-mnist``), on reszoo's one training
loop (``reszoo.finetune`` from scratch, on in-memory tensors).

    python -m scripts.train_resnet_mnist --max-steps 20                    # smoke run: nothing published
    python -m scripts.train_resnet_mnist --device cuda --all --out runs/mnist-gpu   # the three recipes, one GPU
    python -m scripts.train_resnet_mnist --register-from runs/mnist-gpu    # publish them (weights/, registry, cards)
    python -m scripts.train_resnet_mnist --plain --register                # train here and publish at once

The recipe: 8 epochs, batch 128, SGD (Nesterov momentum 0.9, weight decay 5e-4 on weights, not
on biases/BatchNorm), one-cycle learning rate peaking at 0.1 after 20% of the steps, light random
affine augmentation (±10°, ±10% scale, ±2 px), seed 0. The normalisation is the registry
entry's, so training and ``reszoo.load`` agree by construction. The 10,000 test images are scored
once, at the end, in float32 (what ``reszoo.load`` users compute).

``--device auto|cpu|cuda``: on CUDA the data stay on the GPU, the model runs channels-last under
bf16 autocast, and the run is deterministic (``torch.use_deterministic_algorithms`` with
``CUBLAS_WORKSPACE_CONFIG=:4096:8``): a rerun on the same GPU and software gives the same bytes.
On a CPU with bf16 instructions (AVX512-BF16/AMX) bf16 autocast is used too; ``--precision fp32``
turns it off. The registry note records which (``train_hardware``).

Each run writes ``OUT/reszoo/<name>/model.safetensors`` and ``results.json`` (metrics, sha256,
hardware); nothing else. Only ``--register`` (after a full run here) or ``--register-from OUT``
(results made elsewhere, e.g. on a GPU machine without ruamel) copies the weights into
``weights/``, writes the entry's numbers into ``registry.yaml`` and regenerates its card. A smoke
run (``--max-steps N``, or ``--train-subset N``) is marked as such and refused by both.

Data: ``mnist.npz`` in ``--data`` (default ``$RESZOO_DATA/mnist`` or ``../shared/data/mnist``;
``--download`` fetches it with torchvision where there is internet); Fashion-MNIST's idx ``.gz``
files in ``--data`` (default ``/usr/share/datasets/fashion-mnist``, Debian's
``dataset-fashion-mnist``). With ``--all``, ``--data`` is MNIST's folder and ``--fashion-data``
Fashion-MNIST's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/train_resnet_mnist.py"
DEFAULT_OUT = ROOT / "runs" / "train_resnet_mnist"
RECIPES = {  # name -> (dataset, residual)
    "resnet-mnist": ("mnist", True),
    "resnet-mnist-plain": ("mnist", False),
    "resnet-fashion-mnist": ("fashion-mnist", True),
}
DATASETS = {"mnist": ("MNIST", "mnist"), "fashion-mnist": ("Fashion-MNIST", "fashion_mnist")}  # card name, HF type
RESULTS = "results.json"


# --------------------------------------------------------------------------- augmentation


class RandomAffine:
    """Per-image random rotation, scale and shift of a normalised batch ``{"pixels": (N, C, H, W)}``;
    the uncovered border gets the background (``fill``: what a black pixel normalises to).
    Draws from torch's RNG on the batch's device (seeded by the run)."""

    def __init__(self, fill: float, *, degrees: float = 10.0, scale: float = 0.1, shift_px: float = 2.0) -> None:
        self.fill, self.degrees, self.scale, self.shift_px = fill, degrees, scale, shift_px

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        x = inputs["pixels"]
        n = x.shape[0]

        def uniform(*shape: int) -> Any:
            return torch.rand(*shape, device=x.device) * 2 - 1

        angle = uniform(n) * math.radians(self.degrees)
        zoom = 1 + uniform(n) * self.scale
        shift = uniform(n, 2) * self.shift_px * 2 / x.shape[-1]  # pixels -> affine_grid's [-1, 1] units
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        # grid_sample pads with zeros; shifted by the fill, the padding is the background.
        moved = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return {**inputs, "pixels": moved + self.fill}


# --------------------------------------------------------------------------- device


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch here; use --device cpu (or auto)")
    return device


def make_deterministic(device: str) -> None:
    """Same bytes on a rerun: deterministic kernels (cuBLAS needs its workspace fixed before CUDA starts)."""
    import torch

    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor's memory (a kernel per allocation, thousands
    # a step); no op here reads memory it did not write, so that costs time and changes nothing.
    torch.utils.deterministic.fill_uninitialized_memory = False


def hardware(device: str, precision: str, threads: int) -> str:
    """The registry's note of where the numbers were made, e.g. '1x NVIDIA H200, bf16 autocast'."""
    import torch

    if device == "cuda":
        where = f"1x {torch.cuda.get_device_name()}"
    else:
        where = f"CPU ({threads} thread{'s' if threads != 1 else ''}, {platform.machine()})"
    return f"{where}, {'bf16 autocast' if precision == 'bf16' else 'float32'}, torch {torch.__version__}"


# --------------------------------------------------------------------------- one run


def load_arrays(dataset: str, data: Path | None, download: bool) -> tuple[Any, Any, Any, Any]:
    from scripts.data import load_fashion_mnist, load_mnist

    return load_mnist(data, download) if dataset == "mnist" else load_fashion_mnist(data)


def evaluate_fp32(state: dict[str, Any], entry: Any, x: Any, y: Any, device: str, batch_size: int = 1000) -> tuple[float, float, int]:
    """(accuracy in %, mean cross-entropy, errors) of the weights ``state`` in float32, as reszoo.load builds them."""
    import torch
    import torch.nn.functional as F

    from reszoo.image.models import resnet_mnist

    model = resnet_mnist(**entry.arch_args).to(device)
    model.load_state_dict(state)
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size]).float()
            loss_sum += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
            correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / len(x), loss_sum / len(x), len(x) - correct


def train_one(name: str, arrays: tuple[Any, Any, Any, Any], args: argparse.Namespace, device: str,
              precision: str) -> dict[str, Any]:
    """Train ``name`` on the loop; write its weights and results.json under ``args.out``; return the results."""
    import torch

    import reszoo
    from reszoo.finetune.batches import TensorData
    from reszoo.registry import info
    from scripts.registry_io import write_weights

    dataset, residual = RECIPES[name]
    dataset_name, dataset_type = DATASETS[dataset]
    entry = info(name)
    x_train, y_train, x_test, y_test = arrays
    subset = args.train_subset or (args.max_steps * args.batch_size if args.max_steps else None)
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
    mean, std = float(entry.preprocess["mean"][0]), float(entry.preprocess["std"][0])

    def normalise(inputs: dict[str, Any]) -> dict[str, Any]:  # uint8 pixels -> the entry's normalised floats
        return {k: (v.float().div_(255) - mean) / std for k, v in inputs.items()}

    def tensors(x: Any, y: Any) -> tuple[Any, Any]:
        return torch.from_numpy(x).unsqueeze(1).to(device), torch.from_numpy(y.astype("int64")).to(device)

    xtr, ytr = tensors(x_train, y_train)
    epochs = 1 if args.max_steps else args.epochs
    print(f"{name}: {len(xtr):,} training images, {epochs} epochs of {math.ceil(len(xtr) / args.batch_size)} steps, "
          f"batch {args.batch_size}, {device} ({precision}), seed {args.seed}", flush=True)
    start = time.perf_counter()
    result = reszoo.finetune(
        name, TensorData(xtr, ytr, classes=entry.labels, transform=normalise, name=dataset_name),
        pretrained=False, epochs=epochs, batch_size=args.batch_size, optimizer="sgd", momentum=0.9, lr=args.lr,
        weight_decay=args.weight_decay, schedule="onecycle", warmup=0.2, val_split=0.0,
        augment=RandomAffine(fill=-mean / std), mixed_precision="bf16" if precision == "bf16" else "no",
        channels_last=True, cpu=device == "cpu", seed=args.seed, progress=False, script=SCRIPT,
    )
    train_seconds = time.perf_counter() - start
    state = {k: v.detach() for k, v in result.model.state_dict().items()}
    xte, yte = tensors(x_test, y_test)
    accuracy, loss, errors = evaluate_fp32(state, entry, normalise({"x": xte})["x"], yte, device)
    print(f"{name}: {dataset_name} test accuracy {accuracy:.2f}% ({errors} errors / {len(xte)}), loss {loss:.4f}, "
          f"trained in {train_seconds:.1f} s", flush=True)
    folder = args.out / "reszoo" / name
    written = write_weights(state, folder / entry.weights.file)
    results = {
        "name": name, "smoke": bool(subset) or epochs != args.epochs, "dataset": dataset_name,
        "dataset_type": dataset_type, "weights_file": entry.weights.file, **written,
        "test_accuracy": accuracy, "test_loss": loss, "test_errors": errors, "test_images": len(xte),
        "train_images": len(xtr), "params": sum(p.numel() for p in result.model.parameters()), "residual": residual,
        "training": (f"{epochs} epochs, batch {args.batch_size}, SGD (Nesterov momentum 0.9, weight decay "
                     f"{args.weight_decay}), one-cycle lr peak {args.lr}, random affine (±10°, ±10% scale, ±2 px), "
                     f"seed {args.seed}; reszoo.finetune's loop"),
        "train_seconds": round(train_seconds, 1),
        "train_hardware": hardware(device, precision, torch.get_num_threads()),
    }
    (folder / RESULTS).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {folder / entry.weights.file} ({written['size']:,} bytes, sha256 {written['sha256']}) and {RESULTS}",
          flush=True)
    return results


# --------------------------------------------------------------------------- publishing


def register_from(out: Path, names: list[str] | None = None) -> list[str]:
    """Publish the results folder ``out`` (``reszoo/<name>/{model.safetensors,results.json}``):
    weights into weights/, numbers into registry.yaml, the regenerated model cards. Refuses smoke
    runs and weights whose sha256 is not the one the run recorded."""
    from reszoo.cards import write_cards
    from reszoo.hub import sha256_of
    from scripts.registry_io import COMMIT_LIMIT, measured, update_entry

    found = sorted((out / "reszoo").glob(f"*/{RESULTS}"))
    results = [json.loads(p.read_text(encoding="utf-8")) for p in found]
    if names is not None:
        results = [r for r in results if r["name"] in names]
    if not results:
        raise SystemExit(f"--register-from {out}: no {RESULTS} under {out}/reszoo/<name>/ (the --out of a training run)")
    for r in results:
        if r["name"] not in RECIPES:
            raise SystemExit(f"{out}: results for {r['name']!r}, which this recipe does not train")
        if r.get("smoke"):
            raise SystemExit(f"{out}/reszoo/{r['name']}: a smoke run (--max-steps/--train-subset); it cannot be registered")
        source = out / "reszoo" / r["name"] / r["weights_file"]
        if sha256_of(source) != r["sha256"] or r["size"] > COMMIT_LIMIT:
            raise SystemExit(f"{source}: sha256 or size differs from its {RESULTS} (or is over the commit limit)")
    for r in results:
        name = r["name"]
        dest = ROOT / "weights" / "reszoo" / name / r["weights_file"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "reszoo" / name / r["weights_file"], dest)
        metrics = [
            measured(SCRIPT, r["dataset"], "test", "accuracy", r["test_accuracy"], name="top-1 accuracy", dataset_type=r["dataset_type"]),
            measured(SCRIPT, r["dataset"], "test", "loss", r["test_loss"], name="cross-entropy loss", dataset_type=r["dataset_type"]),
        ]
        extra = {"params": r["params"], "residual": r["residual"], "test_errors": f"{r['test_errors']} / {r['test_images']}",
                 "training": r["training"], "train_seconds": r["train_seconds"], "train_hardware": r["train_hardware"]}
        update_entry(name, metrics=metrics, weights={"sha256": r["sha256"], "size": r["size"]}, extra=extra)
        print(f"registered {name}: {r['test_accuracy']:.2f}% ({r['train_hardware']}); weights {dest.relative_to(ROOT)}", flush=True)
    write_cards(ROOT / "model_cards")  # as scripts/make_cards.py writes them
    return [r["name"] for r in results]


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.train_resnet_mnist", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    p.add_argument("--plain", action="store_true", help="train the plain twin (residual=False) as resnet-mnist-plain")
    p.add_argument("--all", action="store_true", help="train the three recipes (one after the other in this process)")
    p.add_argument("--parallel", action="store_true",
                   help="with --all: one process per recipe, at once (a GPU is mostly idle between one run's small kernels)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder with mnist.npz, or Fashion-MNIST's idx files with --dataset fashion-mnist")
    p.add_argument("--fashion-data", type=Path, default=None, help="with --all: Fashion-MNIST's folder")
    p.add_argument("--download", action="store_true", help="if mnist.npz is absent, download MNIST into --data with torchvision")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast where the hardware has it (CUDA, CPUs with AVX512-BF16/AMX), else float32")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a shared machine)")
    p.add_argument("--max-steps", type=int, default=None, help="smoke run: one epoch of N batches")
    p.add_argument("--train-subset", "--limit", type=int, default=None, help="smoke run: the first N training images")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--register", action="store_true", help="after a full run, publish it (weights/, registry.yaml, card)")
    p.add_argument("--register-from", type=Path, default=None, metavar="DIR",
                   help="publish the results another run wrote into DIR (no training)")
    p.add_argument("--no-registry", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old commands
    args = p.parse_args(argv)
    smoke = args.max_steps or args.train_subset
    if args.register and (smoke or args.register_from):
        p.error("--register publishes a full run made now: not with --max-steps/--train-subset or --register-from")
    if args.parallel and not args.all:
        p.error("--parallel runs the recipes of --all side by side; give --all")
    if args.plain and args.dataset != "mnist":
        p.error("only MNIST has a plain-twin entry (resnet-mnist-plain)")
    return args


def names_of(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    if args.all:
        return [("resnet-mnist", args.data), ("resnet-mnist-plain", args.data), ("resnet-fashion-mnist", args.fashion_data)]
    name = {"mnist": "resnet-mnist-plain" if args.plain else "resnet-mnist", "fashion-mnist": "resnet-fashion-mnist"}[args.dataset]
    return [(name, args.data)]


def run_parallel(args: argparse.Namespace) -> list[str]:
    """The recipes of --all, each in its own process, all at once; each one's output in OUT/<name>.log."""
    import subprocess

    common = ["--device", args.device, "--precision", args.precision, "--epochs", str(args.epochs), "--batch-size",
              str(args.batch_size), "--lr", str(args.lr), "--weight-decay", str(args.weight_decay), "--seed",
              str(args.seed), "--threads", str(args.threads), "--out", str(args.out)]
    common += ["--max-steps", str(args.max_steps)] if args.max_steps else []
    common += ["--train-subset", str(args.train_subset)] if args.train_subset else []
    flags = {"resnet-mnist": [], "resnet-mnist-plain": ["--plain"], "resnet-fashion-mnist": ["--dataset", "fashion-mnist"]}
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, data in names_of(args):
        cmd = [sys.executable, "-m", "scripts.train_resnet_mnist", *common, *flags[name]]
        cmd += ["--data", str(data)] if data is not None else []
        log = (args.out / f"{name}.log").open("w", encoding="utf-8")
        jobs.append((name, log, subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)))
    failed = []
    for name, log, proc in jobs:
        if proc.wait() != 0:
            failed.append(name)
        log.close()
        print(f"---- {name} ({args.out / f'{name}.log'})\n" + (args.out / f"{name}.log").read_text(encoding="utf-8"), flush=True)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (see their logs in {args.out})")
    return [name for name, _, _ in jobs]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.register_from is not None:
        register_from(args.register_from)
        return 0
    if args.parallel:
        start = time.perf_counter()
        done = run_parallel(args)
        print(f"{len(done)} run(s) side by side in {time.perf_counter() - start:.1f} s; results in {args.out}", flush=True)
        if args.register:
            register_from(args.out, done)
        return 0
    # Every run's data first: a missing data set stops the command before anything is changed.
    runs = [(name, load_arrays(RECIPES[name][0], data, args.download)) for name, data in names_of(args)]
    device = resolve_device(args.device)
    make_deterministic(device)

    import torch

    from reszoo.finetune.loop import bf16_supported

    torch.set_num_threads(args.threads)
    precision = args.precision if args.precision != "auto" else ("bf16" if bf16_supported(device) else "fp32")
    start = time.perf_counter()
    done = [train_one(name, arrays, args, device, precision)["name"] for name, arrays in runs]
    print(f"{len(done)} run(s) in {time.perf_counter() - start:.1f} s; results in {args.out}", flush=True)
    if args.register:
        register_from(args.out, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
