"""Pieces the fine-tuning demonstrations share: a seeded per-class subset of a class-folder
dataset, and a results file that each run adds its record to."""

from __future__ import annotations

import json
import random
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
