#!/usr/bin/env python
"""Recipe: ``resnet-mnist`` fine-tuned to Fashion-MNIST, against the same network trained from
scratch with the same budget, through ``reszoo.finetune`` (the generic path of ``reszoo finetune``).

Two regimes: ``full`` (the 60,000 training images, a seeded 10% hold-out for validation) and
``small`` (``--per-class`` images of each class, default 100: where transfer should matter most).
Each invocation runs one regime and one variant (``pretrained``: MNIST weights, new 10-class
head; ``scratch``: the same architecture from random init), tests on the 10,000 test images,
and records the result in ``OUT/results.json``; ``--report`` prints the comparison table that
docs/finetune.md quotes. The data come from ``scripts/export_fashion_mnist.py`` (run here when
missing), which needs ``apt-get install -y dataset-fashion-mnist``.

    nice -n 10 python scripts/finetune_demo_fashion_mnist.py --regime full --variant pretrained
    nice -n 10 python scripts/finetune_demo_fashion_mnist.py --regime full --variant scratch
    nice -n 10 python scripts/finetune_demo_fashion_mnist.py --regime small --variant pretrained
    nice -n 10 python scripts/finetune_demo_fashion_mnist.py --regime small --variant scratch
    python scripts/finetune_demo_fashion_mnist.py --report
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from demo_results import add_result, finetune_record, read_results, small_subset  # noqa: E402

SCRIPT = "scripts/finetune_demo_fashion_mnist.py"
BASE = "resnet-mnist"
# One recipe for both variants: only the initial weights differ.
REGIMES: dict[str, dict[str, Any]] = {
    "full": dict(epochs=2, batch_size=128, lr=3e-3, weight_decay=0.05, warmup=0.1, label_smoothing=0.1),
    "small": dict(epochs=15, batch_size=64, lr=3e-3, weight_decay=0.05, warmup=0.1, label_smoothing=0.1),
}


def report(results_file: Path) -> str:
    results = read_results(results_file)
    lines = ["| regime | variant | train images | epochs | val acc | test acc | test macro-F1 | train time |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(results):
        r = results[key]
        lines.append(f"| {r['regime']} | {r['variant']} | {r['num_train']:,} | {r['epochs']} | {100 * r['val_accuracy']:.2f}% | "
                     f"**{100 * r['test_accuracy']:.2f}%** | {100 * r['test_macro_f1']:.2f}% | {r['train_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="full")
    parser.add_argument("--variant", choices=("pretrained", "scratch"), default="pretrained")
    parser.add_argument("--data", type=Path, default=ROOT / "runs/data/fashion-mnist", help="export of scripts/export_fashion_mnist.py")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/finetune-demos/fashion-mnist")
    parser.add_argument("--per-class", type=int, default=100, help="images per class in the small regime")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--report", action="store_true", help="print the table of the results so far and exit")
    args = parser.parse_args()
    results_file = args.out / "results.json"
    if args.report:
        print(report(results_file))
        return 0

    import torch

    import reszoo

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "train" / ".complete").is_file():
        from export_fashion_mnist import export

        export(Path("/usr/share/datasets/fashion-mnist"), args.data)
    train = args.data / "train"
    if args.regime == "small":
        train = small_subset(train, args.data / f"train-{args.per_class}-per-class-seed{args.seed}", args.per_class, args.seed, pattern="*.png")
    run_dir = args.out / f"{args.regime}-{args.variant}"
    start = time.perf_counter()
    result = reszoo.finetune(
        BASE, train, test_data=args.data / "test", out=run_dir, overwrite=True, seed=args.seed,
        pretrained=args.variant == "pretrained", dataset_name="fashion-mnist", script=SCRIPT,
        model_name=f"resnet-mnist-fashion-{args.regime}-{args.variant}",
        # From MNIST weights the result is a derivative of CC BY-SA 3.0 data (the base's license);
        # from scratch it derives from Fashion-MNIST alone (MIT).
        license=None if args.variant == "pretrained" else "mit", **REGIMES[args.regime],
    )
    record = {
        "regime": args.regime, "variant": args.variant, "base": BASE if args.variant == "pretrained" else None,
        **finetune_record(result.metrics, started=start, options=REGIMES[args.regime], seed=args.seed),
        "run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
    }
    add_result(results_file, f"{args.regime}-{args.variant}", record)
    print(report(results_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
