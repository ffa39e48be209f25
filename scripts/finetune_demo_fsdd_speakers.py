#!/usr/bin/env python
"""Recipe: the spoken-digit model ``tdnn-fsdd-digits`` fine-tuned to *speaker* identification on
FSDD (6 speakers), against the same network from scratch with the same budget and a linear probe
of the frozen digit features, through ``reszoo.finetune`` (the generic path of ``reszoo finetune``).

The recordings ``../shared/data/fsdd/recordings/{digit}_{speaker}_{index}.wav`` are laid out as
audio folders by speaker (symlinks under ``runs/data/fsdd-speakers/``), with FSDD's official
split: takes 0-4 are the test set (300 recordings, 50 per speaker), 5-49 the training set
(2,700; a seeded 10% of it held out for validation). Regime ``full`` trains on all of it;
``small`` on ``--per-speaker`` seeded recordings per speaker (default 20), where what the digit
model learnt should matter most. Each invocation runs one regime and variant and records it in
``OUT/results.json``; ``--report`` prints the table docs/finetune.md quotes.

    nice -n 10 python scripts/finetune_demo_fsdd_speakers.py --regime full --variant pretrained
    nice -n 10 python scripts/finetune_demo_fsdd_speakers.py --regime full --variant scratch
    nice -n 10 python scripts/finetune_demo_fsdd_speakers.py --regime full --variant probe
    nice -n 10 python scripts/finetune_demo_fsdd_speakers.py --regime small --variant pretrained
    nice -n 10 python scripts/finetune_demo_fsdd_speakers.py --regime small --variant scratch
    python scripts/finetune_demo_fsdd_speakers.py --report
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from demo_results import add_result, finetune_record, read_results, small_subset  # noqa: E402

SCRIPT = "scripts/finetune_demo_fsdd_speakers.py"
BASE = "tdnn-fsdd-digits"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fsdd"
COMMON: dict[str, Any] = dict(lr=3e-3, weight_decay=0.05, warmup=0.1, label_smoothing=0.1)
REGIMES: dict[str, dict[str, Any]] = {
    "full": dict(epochs=6, batch_size=32, **COMMON),
    "small": dict(epochs=20, batch_size=16, **COMMON),
}
VARIANTS: dict[str, dict[str, Any]] = {
    "pretrained": dict(pretrained=True),
    "scratch": dict(pretrained=False),
    "probe": dict(pretrained=True, freeze_backbone=True),
}
_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$")


def speaker_folders(recordings: Path, dest: Path) -> Path:
    """``dest/{train,test}/<speaker>/<file>.wav`` symlinks, by FSDD's official split."""
    if not recordings.is_dir():
        raise FileNotFoundError(f"FSDD not found: looked for {recordings} (see ../shared/data/fsdd/README.md), or pass --data")
    marker = dest / ".complete"
    files = sorted(recordings.glob("*.wav"))
    if marker.is_file() and marker.read_text().strip() == str(len(files)):
        return dest
    for f in files:
        m = _NAME.match(f.name)
        if m is None:
            raise ValueError(f"{f}: not an FSDD name ({{digit}}_{{speaker}}_{{take}}.wav)")
        split = "test" if int(m["take"]) <= 4 else "train"
        link = dest / split / m["speaker"] / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(f.resolve())
    marker.write_text(f"{len(files)}\n")
    return dest


def report(results_file: Path) -> str:
    results = read_results(results_file)
    lines = ["| regime | variant | trained | train recordings | epochs | val acc | test acc (300 recordings) "
             "| test macro-F1 | train time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in [f"{g}-{v}" for g in REGIMES for v in ("pretrained", "probe", "scratch")]:
        if key in results:
            r = results[key]
            lines.append(f"| {r['regime']} | {r['variant']} | {r['trained']} | {r['num_train']:,} | {r['epochs']} | "
                         f"{100 * r['val_accuracy']:.2f}% | "
                         f"**{100 * r['test_accuracy']:.2f}%** | {100 * r['test_macro_f1']:.2f}% | {r['train_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="full")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="pretrained")
    parser.add_argument("--per-speaker", type=int, default=20, help="training recordings per speaker in the small regime")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FSDD folder holding recordings/")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/finetune-demos/fsdd-speakers")
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
    folders = speaker_folders(args.data / "recordings", ROOT / "runs/data/fsdd-speakers")
    variant = VARIANTS[args.variant]
    train = folders / "train"
    if args.regime == "small":
        train = small_subset(train, folders / f"train-{args.per_speaker}-per-speaker-seed{args.seed}", args.per_speaker, args.seed, pattern="*.wav")
    start = time.perf_counter()
    result = reszoo.finetune(
        BASE, train, test_data=folders / "test", out=args.out / f"{args.regime}-{args.variant}", overwrite=True,
        seed=args.seed, dataset_name="free-spoken-digit-dataset (speakers)", script=SCRIPT,
        model_name=f"tdnn-fsdd-speakers-{args.regime}-{args.variant}", **REGIMES[args.regime], **variant,
    )
    record = {
        "regime": args.regime, "variant": args.variant,
        "trained": "head only (frozen digit features)" if variant.get("freeze_backbone") else
                   ("all layers, from the digit model" if variant["pretrained"] else "all layers, random init"),
        **finetune_record(result.metrics, started=start, options={**REGIMES[args.regime], **variant}, seed=args.seed),
    }
    add_result(results_file, f"{args.regime}-{args.variant}", record)
    print(report(results_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
