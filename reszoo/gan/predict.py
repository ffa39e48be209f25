"""What ``reszoo predict NAME LABEL...`` does for a generator: one sample per label, as a PNG.

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def predict(model: Any, inputs: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """``reszoo predict NAME LABEL...``: one sample per class label (name or index; ``random``
    for a random class or an unconditional model), seeded by its position, written to
    ``<name>-<i>.png`` in the current folder. ``top_k`` does not apply to generators."""
    from .grid import save_grid
    from .models import GeneratorMixin

    if not isinstance(model, GeneratorMixin):
        raise TypeError(f"{type(model).__name__} is not a generator")
    name = getattr(getattr(model, "entry", None), "name", "sample")
    names = getattr(model, "labels", None) or ()
    rows = []
    for i, text in enumerate(inputs):
        label = None if text == "random" else text
        image = model.sample(1, labels=label, seed=i)
        path = save_grid(image, Path(f"{name}-{i}.png"), padding=0)
        row: dict[str, Any] = {"input": text, "seed": i, "file": str(path)}
        if label is not None and model.num_classes:
            index = int(model.class_indices(label, 1)[0])
            row["class"] = names[index] if index < len(names) else index
        rows.append(row)
    return rows
