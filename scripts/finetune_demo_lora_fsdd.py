#!/usr/bin/env python
"""Recipe: the speaker-embedding model ``ecapa-fsdd-speakers`` -> spoken-digit classification on FSDD
(a task it was not trained on: it learnt who speaks, not what is said), several ways, at several
training-set sizes, through ``reszoo.finetune`` on in-memory features: a LoRA adapter (``lora=True``,
the speech domain's default targets: the 1x1 TDNN convolutions of every SE-Res2Net block and the
aggregation, rank 8) with a new 10-class head, a full fine-tune (every weight, new head), a linear
probe (``freeze_backbone=True``: the new head on the frozen speaker embedding) and the same
architecture from random init (``pretrained=False``).

FSDD's official split: takes 0-4 are the test set (300 recordings, all of them, for every run),
takes 5-49 the training pool (2,700). For each size N (default 100, 500, 2,700: 10, 50, 270 per
digit) the training set is a seeded, stratified subset of the pool. One recipe for all methods
(the other FSDD demo's), ``--epochs`` epochs raised for small sets to at least ``--min-steps``
optimizer steps. One run's record: test accuracy, trainable and total parameters, wall time. The
base saw the training recordings (takes 10-49) with speaker labels only, never a digit label.

    nice -n 10 python -m scripts.finetune_demo_lora_fsdd                  # the 12 runs -> results JSON + plot
    python -m scripts.finetune_demo_lora_fsdd --write-docs                 # table + plot into docs/finetune.md
    python -m scripts.finetune_demo_lora_fsdd --sizes 20 --epochs 1 --min-steps 1 --limit-test 30 --out /tmp/x  # smoke

Data: ``../shared/data/fsdd/recordings`` (or ``--data``), featurised once by the models' fbank front
end and cached as ``scripts/train_fsdd.py`` caches it (``runs/fsdd/``). ``--write-docs`` only reads
the JSON: the table is never typed by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import adapter_demo  # noqa: E402

SCRIPT = "scripts/finetune_demo_lora_fsdd.py"
BASE = "ecapa-fsdd-speakers"
DEMO = adapter_demo.Demo(
    script=SCRIPT, base=BASE,
    labels=adapter_demo.method_labels("LoRA r8 + new head", ("lora", "full", "probe", "scratch")),
    unit="recordings", results="lora-fsdd-digits.json", plot="lora-fsdd-digits.png",
    section="### LoRA vs full vs scratch (speaker model -> spoken digits, FSDD)",
    title="ecapa-fsdd-speakers -> spoken digits (FSDD)",
    xlabel="training recordings (stratified subset of FSDD takes 5-49)", before="### MiniLM on BANKING77",
)
# One recipe for every run (only the method's options differ): the FSDD speakers demo's.
RECIPE: dict[str, Any] = dict(batch_size=32, lr=3e-3, weight_decay=0.05, warmup=0.1, label_smoothing=0.1,
                              group_by_length=8)
METHODS: dict[str, dict[str, Any]] = {
    "lora": dict(lora=True, lora_rank=8),
    "full": dict(),
    "probe": dict(freeze_backbone=True),
    "scratch": dict(pretrained=False),
}
RESULTS, PLOT = DEMO.results, DEMO.plot


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from scripts.train_fsdd import load_features, tensor_data

    torch.set_num_threads(args.threads)
    items = load_features(args.data, args.cache)
    pool = [it for it in items if it["index"] >= 5]
    test_items = [it for it in items if it["index"] < 5][: args.limit_test]
    present = sorted({it["digit"] for it in pool})  # 0-9 in FSDD
    classes = [str(d) for d in present]
    test = tensor_data(test_items, [present.index(it["digit"]) for it in test_items], classes,
                       f"FSDD test, takes 0-4 ({len(test_items)})")
    digits = [present.index(it["digit"]) for it in pool]
    settings = {
        "script": SCRIPT, "base": BASE, "dataset": "Free Spoken Digit Dataset (../shared/data/fsdd), digits",
        "recipe": {**RECIPE, "optimizer": "adamw", "schedule": "cosine", "epochs": args.epochs, "min_steps": args.min_steps,
                   "lora_rank": METHODS["lora"]["lora_rank"], "val_split": 0.0, "precision": "float32"},
        "sizes": args.sizes, "seed": args.seed, "num_test": len(test_items), **adapter_demo.machine(),
    }

    def one(size: int, method: str) -> dict[str, Any]:
        rows = adapter_demo.stratified_subset(digits, size, args.seed)
        chosen = [pool[i] for i in rows]
        train = tensor_data(chosen, [present.index(it["digit"]) for it in chosen], classes,
                            f"FSDD takes 5-49, subset ({size:,}, seed {args.seed})")
        options = {**RECIPE, **METHODS[method], "epochs": adapter_demo.epochs_for(size, args.epochs, args.min_steps,
                                                                                 RECIPE["batch_size"])}
        return adapter_demo.finetune_run(BASE, method, train, test, options, seed=args.seed,
                                         dataset_name="free-spoken-digit-dataset", script=SCRIPT)

    return adapter_demo.run_grid(DEMO, args.out, settings, args.sizes, args.methods, one, resume=args.resume)


def table(results: dict[str, Any]) -> str:
    return adapter_demo.table(DEMO, results)


def section(results: dict[str, Any]) -> str:
    rec = results["recipe"]
    return f"""{DEMO.section}

{adapter_demo.generated_note(DEMO)}

`{SCRIPT}` trains `{results['base']}` — a speaker-embedding model (trained on FSDD's six speakers
with speaker labels only) — to recognise the spoken digit, on seeded, stratified subsets of FSDD's
training takes 5-49 ({', '.join(f'{s:,}' for s in results['sizes'])} recordings: {', '.join(f'{s // 10:,}' for s in results['sizes'])} per digit; seed {results['seed']}), through
`reszoo.finetune` on in-memory features (`TensorData`), each with a new 10-class head: a LoRA
adapter (`lora=True`, the speech domain's default targets, rank {rec['lora_rank']}), a full fine-tune (every
weight), a linear probe (`freeze_backbone=True`: the head on the frozen speaker embedding) and the
same architecture from scratch (`pretrained=False`). Same recipe for all: AdamW lr {rec['lr']:g}, weight
decay {rec['weight_decay']:g}, {100 * rec['warmup']:.0f}% warm-up then cosine, label smoothing {rec['label_smoothing']:g}, batch {rec['batch_size']} (grouped by length),
{rec['epochs']} epochs (at least {rec['min_steps']} steps for the small sets), no validation split, float32, {results['threads']} torch
thread{'s' if results['threads'] != 1 else ''}. Test: the official test split (takes 0-4), {results['num_test']:,} recordings.

![test accuracy against training-set size](img/{PLOT})

{table(results)}{adapter_demo.missing_line(DEMO, results)}

{adapter_demo.gaps(DEMO, results, 'scratch')}

{observations(results)}

LoRA adapts the block and aggregation convolutions only (the stem, the dilated Res2Net
convolutions and the BatchNorm statistics stay the base's). One seed, one run each, on a shared
CPU (wall times depend on the other jobs running at the time: indicative only): on {results['num_test']:,} test recordings one recording is {100 / results['num_test']:.2f} points.
"""


def observations(results: dict[str, Any]) -> str:
    """What the table says, in words chosen by the measured signs (so a rerun cannot leave them wrong)."""
    acc = adapter_demo.accuracies(results)
    sizes = sorted({n for n, _ in acc})
    lines = []
    if all((n, m) in acc for n in sizes for m in ("full", "scratch")):
        behind = [n for n in sizes if acc[n, "full"] < acc[n, "scratch"]]
        if behind:
            lines.append(f"Starting from the speaker model is behind random init at {', '.join(f'{n:,}' for n in behind)} "
                         f"recordings (full fine-tune against from scratch), ahead or level at "
                         f"{', '.join(f'{n:,}' for n in sizes if n not in behind) or 'none'}: for digits, its speaker "
                         "features were a worse start than random weights where data was scarce, at this budget.")
        else:
            lines.append("Starting from the speaker model is ahead of (or level with) random init at every size.")
    probes = {n: acc[n, "probe"] for n in sizes if (n, "probe") in acc}
    if probes:
        below = all(acc[n, m] > probes[n] for n in probes for m in ("lora", "full", "scratch") if (n, m) in acc)
        lines.append(f"The linear probe reaches {min(probes.values()):.1f}-{max(probes.values()):.1f}% (chance: 10%)"
                     + (", far below every method that trains the network, at every size: the frozen speaker "
                        "embedding holds only part of which digit was said." if below else "."))
    lines.append(adapter_demo.gap_line(DEMO, results, "lora", "full"))
    return " ".join(line for line in lines if line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from scripts.train_fsdd import DEFAULT_CACHE

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2700], help="training recordings (multiples of 10)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--limit-test", type=int, default=None, help="smoke: the first N test recordings only")
    p.add_argument("--data", type=Path, default=None, help="FSDD folder holding recordings/ (default ../shared/data/fsdd)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="feature cache folder (shared with scripts/train_fsdd.py)")
    adapter_demo.add_run_args(p, DEMO)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return adapter_demo.main(parse_args(argv), DEMO, section, run_all, table)


if __name__ == "__main__":
    sys.exit(main())
