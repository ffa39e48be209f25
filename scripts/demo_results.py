"""Pieces the fine-tuning demonstrations share: a seeded per-class subset of a class-folder
dataset, the record of a ``reszoo.finetune`` run, and a results file that each run adds it to."""

from __future__ import annotations

import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any


def small_subset(train: Path, dest: Path, per_class: int, seed: int, pattern: str = "*") -> Path:
    """``per_class`` seeded picks of each class folder of ``train``, as symlinks under ``dest``
    (the fine-tuner reads any class folder); made once per (per_class, seed)."""
    marker = dest / ".complete"
    if marker.is_file() and marker.read_text().strip() == f"{per_class} {seed}":
        return dest
    rng = random.Random(seed)
    for cls in sorted(p for p in train.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True, exist_ok=True)
        for old in (dest / cls.name).iterdir():
            old.unlink()
        for f in rng.sample(sorted(cls.glob(pattern)), per_class):
            (dest / cls.name / f.name).symlink_to(f.resolve())
    marker.write_text(f"{per_class} {seed}\n")
    return dest


def read_results(results_file: Path) -> dict[str, Any]:
    return json.loads(results_file.read_text()) if results_file.is_file() else {}


def add_result(results_file: Path, key: str, record: dict[str, Any]) -> None:
    results = read_results(results_file)
    results[key] = record
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=2) + "\n")


def finetune_record(metrics: dict[str, Any], *, started: float, options: dict[str, Any], seed: int) -> dict[str, Any]:
    """What every demonstration records of a finished ``reszoo.finetune`` run: its sizes and
    scores, the wall time since ``started`` (``time.perf_counter()``), the recipe and the machine."""
    import torch

    return {
        "num_train": metrics["num_train"], "num_val": metrics["num_val"], "num_test": metrics["num_test"],
        "epochs": metrics["epochs_run"], "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
        "test_macro_f1": metrics["test_macro_f1"], "train_seconds": metrics["train_seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1), "options": options, "seed": seed,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
    }
