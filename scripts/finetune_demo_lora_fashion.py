#!/usr/bin/env python
"""Recipe: ``resnet-mnist`` -> Fashion-MNIST three ways, at several training-set sizes, through
``reszoo.finetune`` on in-memory tensors: a LoRA adapter (``lora=True``, the image domain's
default targets, rank 8) with a new head, a full fine-tune (all layers, new head), and the same
architecture from scratch (``pretrained=False``).

For each size N (default 100, 1,000, 10,000) the training set is a seeded, stratified subset of
Fashion-MNIST's 60,000 training images (N/10 per class); the test set is the full 10,000 test
images. All three methods of one size get the same recipe, batches and seed; the budget is
``--epochs`` epochs, raised for small sets to at least ``--min-steps`` optimizer steps (100
images for 3 epochs would be 6 steps: too few to tell the methods apart). One run's record:
test accuracy, trainable and total parameters, wall time.

    nice -n 10 python scripts/finetune_demo_lora_fashion.py                 # the 9 runs -> results JSON + plot
    python scripts/finetune_demo_lora_fashion.py --write-docs              # table + plot link into docs/finetune.md
    python scripts/finetune_demo_lora_fashion.py --sizes 40 --epochs 1 --min-steps 1 --limit-test 200 --out /tmp/x  # smoke

Data: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), read by
``scripts/data.py``. ``--write-docs`` only reads the JSON: the table is never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRIPT = "scripts/finetune_demo_lora_fashion.py"
BASE = "resnet-mnist"
METHODS = ("lora", "full", "scratch")
LABELS = {"lora": "LoRA r8 + new head", "full": "full fine-tune", "scratch": "from scratch"}
# One recipe for every run (only the method's options differ): the other Fashion-MNIST demo's.
RECIPE: dict[str, Any] = dict(batch_size=64, lr=3e-3, weight_decay=0.05, warmup=0.1, label_smoothing=0.1)
DEFAULT_OUT = ROOT / "results" / "finetune-demo"
RESULTS = "lora-fashion-mnist.json"
PLOT = "lora-fashion-mnist.png"
DOCS = ROOT / "docs" / "finetune.md"
DOCS_PLOT = ROOT / "docs" / "img" / PLOT
SECTION = "### LoRA vs full vs scratch (Fashion-MNIST)"


def stratified_subset(labels: Any, size: int, seed: int) -> Any:
    """Indices of ``size`` images, ``size / classes`` seeded picks per class, sorted."""
    import numpy as np

    classes = np.unique(labels)
    if size % len(classes):
        raise SystemExit(f"--sizes: {size} is not a multiple of the {len(classes)} classes (the subsets are stratified)")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), size // len(classes), replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def epochs_for(size: int, epochs: int, min_steps: int, batch_size: int) -> int:
    """``epochs``, or more where that many epochs of ``size`` images are fewer than ``min_steps`` steps."""
    return max(epochs, math.ceil(min_steps / math.ceil(size / batch_size)))


def one_run(method: str, train: Any, test: Any, *, epochs: int, seed: int) -> dict[str, Any]:
    import reszoo

    options = dict(RECIPE, epochs=epochs)
    if method == "lora":
        options.update(lora=True, lora_rank=8)
    start = time.perf_counter()
    result = reszoo.finetune(BASE, train, test_data=test, pretrained=method != "scratch", val_split=0.0, seed=seed,
                             cpu=True, mixed_precision="no", progress=False, dataset_name="fashion-mnist",
                             script=SCRIPT, **options)
    wall = time.perf_counter() - start
    params = list(result.model.parameters())
    return {
        "method": method, "num_train": result.metrics["num_train"], "num_test": result.metrics["num_test"],
        "epochs": result.metrics["epochs_run"], "steps": result.metrics["global_steps"],
        "test_accuracy": result.metrics["test_accuracy"], "test_macro_f1": result.metrics["test_macro_f1"],
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "total_params": sum(p.numel() for p in params),
        "train_seconds": result.metrics["train_seconds"], "wall_seconds": round(wall, 1),
    }


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from reszoo.finetune.batches import TensorData
    from reszoo.registry import info
    from scripts.data import FASHION_CLASSES, load_fashion_mnist

    torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = load_fashion_mnist(args.data)
    if args.limit_test:
        x_test, y_test = x_test[:args.limit_test], y_test[:args.limit_test]
    entry = info(BASE)
    mean, std = float(entry.preprocess["mean"][0]), float(entry.preprocess["std"][0])

    def normalise(inputs: dict[str, Any]) -> dict[str, Any]:  # uint8 pixels -> the base's normalised floats
        return {k: (v.float().div_(255) - mean) / std for k, v in inputs.items()}

    def data(x: Any, y: Any, name: str) -> TensorData:
        return TensorData(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype("int64")),
                          classes=FASHION_CLASSES, transform=normalise, name=name)

    test = data(x_test, y_test, f"Fashion-MNIST test ({len(y_test):,})")
    runs = []
    for size in args.sizes:
        rows = stratified_subset(y_train, size, args.seed)
        train = data(x_train[rows], y_train[rows], f"Fashion-MNIST train subset ({size:,}, seed {args.seed})")
        epochs = epochs_for(size, args.epochs, args.min_steps, RECIPE["batch_size"])
        for method in args.methods:
            record = one_run(method, train, test, epochs=epochs, seed=args.seed)
            runs.append(record)
            print(f"{size:>6,} {method:<8} {epochs:>3} epochs: test acc {100 * record['test_accuracy']:.2f}%, "
                  f"{record['trainable_params']:,} trainable, {record['wall_seconds']:.1f} s", flush=True)
    return {
        "script": SCRIPT, "base": BASE, "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)",
        "recipe": {**RECIPE, "optimizer": "adamw", "schedule": "cosine", "epochs": args.epochs,
                   "min_steps": args.min_steps, "lora_rank": 8, "val_split": 0.0, "precision": "float32"},
        "sizes": args.sizes, "seed": args.seed, "num_test": len(y_test), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "runs": runs,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in METHODS:
        runs = sorted((r for r in results["runs"] if r["method"] == method), key=lambda r: r["num_train"])
        if runs:
            ax.plot([r["num_train"] for r in runs], [100 * r["test_accuracy"] for r in runs], marker="o", label=LABELS[method])
    ax.set_xscale("log")
    ax.set_xlabel("training images (stratified subset of Fashion-MNIST train)")
    ax.set_ylabel(f"test accuracy (%, {results['num_test']:,} images)")
    ax.set_title("resnet-mnist -> Fashion-MNIST")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def table(results: dict[str, Any]) -> str:
    lines = ["| train images | method | epochs (steps) | trainable params | test acc | wall time |",
             "|---|---|---|---|---|---|"]
    for r in sorted(results["runs"], key=lambda r: (r["num_train"], METHODS.index(r["method"]))):
        share = f" ({100 * r['trainable_params'] / r['total_params']:.1f}%)"
        lines.append(f"| {r['num_train']:,} | {LABELS[r['method']]} | {r['epochs']} ({r['steps']}) | "
                     f"{r['trainable_params']:,}{share} | **{100 * r['test_accuracy']:.2f}%** | {r['wall_seconds']:.0f} s |")
    return "\n".join(lines)


def section(results: dict[str, Any]) -> str:
    rec = results["recipe"]
    return f"""{SECTION}

<!-- generated by `python {SCRIPT} --write-docs` from results/finetune-demo/{RESULTS}; do not edit by hand -->

`{SCRIPT}` trains `{results['base']}` on seeded, stratified subsets of Fashion-MNIST's training
set ({', '.join(f'{s:,}' for s in results['sizes'])} images, a tenth of each per class; seed {results['seed']}) three ways, through
`reszoo.finetune` on in-memory tensors (`TensorData`): a LoRA adapter (`lora=True`, the image
domain's default targets, rank {rec['lora_rank']}) with a new head, a full fine-tune (all layers, new head), and
the same architecture from scratch (`pretrained=False`). Same recipe for all: AdamW lr {rec['lr']:g},
weight decay {rec['weight_decay']:g}, {100 * rec['warmup']:.0f}% warm-up then cosine, label smoothing {rec['label_smoothing']:g}, batch {rec['batch_size']},
{rec['epochs']} epochs (at least {rec['min_steps']} steps for the small sets), no validation split, float32, {results['threads']} torch
thread{'s' if results['threads'] != 1 else ''}. Test: the {results['num_test']:,} test images.

![test accuracy against training-set size](img/{PLOT})

{table(results)}

{gaps(results)}

LoRA trains about a tenth of the parameters (the adapters on the default targets and the new
head; the BatchNorm statistics stay the base's). Its learning rate is the full fine-tune's here,
not tuned for it (adapters often want a higher one), so these numbers show LoRA at this shared
recipe, not at its best. Its wall time includes wrapping the model with peft. One seed, one run
each: differences of a point or so are within run-to-run noise.
"""


def gaps(results: dict[str, Any]) -> str:
    """One line per size: LoRA and full fine-tune against from scratch, in points of test accuracy."""
    acc = {(r["num_train"], r["method"]): 100 * r["test_accuracy"] for r in results["runs"]}
    lines = []
    for size in sorted({n for n, _ in acc}):
        if all((size, m) in acc for m in METHODS):
            lines.append(f"- {size:,} images: full fine-tune {acc[size, 'full'] - acc[size, 'scratch']:+.2f} points over "
                         f"from scratch, LoRA {acc[size, 'lora'] - acc[size, 'scratch']:+.2f} "
                         f"({acc[size, 'lora'] - acc[size, 'full']:+.2f} against the full fine-tune).")
    return "\n".join(lines)


def write_docs(results: dict[str, Any], docs: Path) -> None:
    """Put the generated section in ``docs`` (replacing a previous one), before ``### tdnn-fsdd``."""
    text = docs.read_text(encoding="utf-8")
    new = section(results)
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=\n### |\n## )", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: new.rstrip("\n") + "\n", text, count=1)
    else:
        anchor = "### tdnn-fsdd-digits"
        if anchor not in text:
            raise SystemExit(f"{docs}: no {anchor!r} heading to put the section before")
        text = text.replace(anchor, new + "\n" + anchor, 1)
    docs.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--min-steps", type=int, default=100, help="raise epochs for small sets to at least this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit-test", type=int, default=None, help="smoke: the first N test images only")
    p.add_argument("--data", type=Path, default=None, help="Fashion-MNIST's idx files (default Debian's folder)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where {RESULTS} and {PLOT} go")
    p.add_argument("--write-docs", action="store_true",
                   help=f"no training: the table from OUT/{RESULTS} into {DOCS.relative_to(ROOT)}, the plot into docs/img/")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_file = args.out / RESULTS
    if args.write_docs:
        results = json.loads(results_file.read_text(encoding="utf-8"))
        plot(results, DOCS_PLOT)
        write_docs(results, DOCS)
        print(f"wrote {DOCS_PLOT.relative_to(ROOT)} and the section {SECTION[4:]!r} of {DOCS.relative_to(ROOT)}")
        return 0
    results = run_all(args)
    args.out.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(results, args.out / PLOT)
    print(table(results))
    print(f"wrote {results_file} and {args.out / PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
