"""A generator's raw input, its class labels, to model input; and the sampler's default truncation."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Entry

__all__ = ["build_preprocess", "prepare"]


def build_preprocess(entry: Entry) -> Callable[[Any], Tensor]:
    """A generator's raw input is its class labels: names or indices -> a LongTensor of indices,
    checked against the entry's classes."""
    names = tuple(entry.labels or ())
    num_classes = entry.num_classes or 0

    def preprocess(labels: Any) -> Tensor:
        if not num_classes:
            raise ValueError(f"{entry.name} is unconditional: it takes no class labels")
        if isinstance(labels, Tensor):
            labels = labels.tolist()
        if isinstance(labels, numbers.Number | str):  # one label (a bad one is refused below)
            labels = [labels]
        out = []
        for label in labels:
            if isinstance(label, str) and not label.isdigit():
                if label not in names:
                    raise ValueError(f"{entry.name}: unknown label {label!r}")
                out.append(names.index(label))
            else:
                if isinstance(label, bool) or not isinstance(label, numbers.Integral | str):  # int(3.7) would be a silent 3
                    raise ValueError(f"{entry.name}: labels must be class indices or names, got {label!r}")
                index = int(label)
                if not 0 <= index < num_classes:
                    raise ValueError(f"{entry.name}: label {index} out of range 0..{num_classes - 1}")
                out.append(index)
        return torch.tensor(out, dtype=torch.long)

    return preprocess


def prepare(model: nn.Module, entry: Entry, *, mirror: str | Path | None = None) -> None:
    """The entry's default truncation (``runtime.truncation``) becomes the sampler's default.
    (``mirror``: part of the domain contract; generators read no files besides their weights.)"""
    from .models import GeneratorMixin

    if isinstance(model, GeneratorMixin) and "truncation" in entry.runtime:
        model.default_truncation = entry.runtime["truncation"]
