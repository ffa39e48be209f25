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
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import adapter_demo  # noqa: E402
from scripts.adapter_demo import epochs_for, stratified_subset  # noqa: E402,F401  (the recipe's own pieces)

SCRIPT = "scripts/finetune_demo_lora_fashion.py"
BASE = "resnet-mnist"
DEMO = adapter_demo.Demo(
    script=SCRIPT, base=BASE,
    labels=adapter_demo.method_labels("LoRA r8 + new head", ("lora", "full", "scratch")),
    unit="images", results="lora-fashion-mnist.json", plot="lora-fashion-mnist.png",
    section="### LoRA vs full vs scratch (Fashion-MNIST)", title="resnet-mnist -> Fashion-MNIST",
    xlabel="training images (stratified subset of Fashion-MNIST train)", before="### tdnn-fsdd-digits",
)
METHODS = DEMO.methods
# One recipe for every run (only the method's options differ): the other Fashion-MNIST demo's.
RECIPE: dict[str, Any] = dict(batch_size=64, lr=3e-3, weight_decay=0.05, warmup=0.1, label_smoothing=0.1)
RESULTS, PLOT = DEMO.results, DEMO.plot


def one_run(method: str, train: Any, test: Any, *, epochs: int, seed: int) -> dict[str, Any]:
    options = dict(RECIPE, epochs=epochs, pretrained=method != "scratch")
    if method == "lora":
        options.update(lora=True, lora_rank=8)
    return adapter_demo.finetune_run(BASE, method, train, test, options, seed=seed, dataset_name="fashion-mnist",
                                     script=SCRIPT)


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
    settings = {
        "script": SCRIPT, "base": BASE, "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)",
        "recipe": {**RECIPE, "optimizer": "adamw", "schedule": "cosine", "epochs": args.epochs,
                   "min_steps": args.min_steps, "lora_rank": 8, "val_split": 0.0, "precision": "float32"},
        "sizes": args.sizes, "seed": args.seed, "num_test": len(y_test), **adapter_demo.machine(),
    }

    def one(size: int, method: str) -> dict[str, Any]:
        rows = stratified_subset(y_train, size, args.seed)
        train = data(x_train[rows], y_train[rows], f"Fashion-MNIST train subset ({size:,}, seed {args.seed})")
        return one_run(method, train, test, epochs=epochs_for(size, args.epochs, args.min_steps, RECIPE["batch_size"]),
                       seed=args.seed)

    return adapter_demo.run_grid(DEMO, args.out, settings, args.sizes, args.methods, one, resume=args.resume)


def table(results: dict[str, Any]) -> str:
    return adapter_demo.table(DEMO, results)


def section(results: dict[str, Any]) -> str:
    rec = results["recipe"]
    return f"""{DEMO.section}

{adapter_demo.generated_note(DEMO)}

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

{adapter_demo.gaps(DEMO, results, 'scratch')}

LoRA trains about a tenth of the parameters (the adapters on the default targets and the new
head; the BatchNorm statistics stay the base's). Its learning rate is the full fine-tune's here,
not tuned for it (adapters often want a higher one), so these numbers show LoRA at this shared
recipe, not at its best. Its wall time includes wrapping the model with peft. One seed, one run
each: differences of a point or so are within run-to-run noise.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit-test", type=int, default=None, help="smoke: the first N test images only")
    p.add_argument("--data", type=Path, default=None, help="Fashion-MNIST's idx files (default Debian's folder)")
    adapter_demo.add_run_args(p, DEMO)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return adapter_demo.main(parse_args(argv), DEMO, section, run_all, table)


if __name__ == "__main__":
    sys.exit(main())
