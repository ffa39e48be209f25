"""A generator's raw input, its class labels, to model input; and the sampler's default truncation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Entry
from .models import GeneratorMixin, label_indices

__all__ = ["build_preprocess", "prepare"]


def build_preprocess(entry: Entry) -> Callable[[Any], Tensor]:
    """A generator's raw input is its class labels: names or indices -> a LongTensor of indices,
    checked against the entry's classes."""
    names = tuple(entry.labels or ())
    num_classes = entry.num_classes or 0

    def preprocess(labels: Any) -> Tensor:
        if not num_classes:
            raise ValueError(f"{entry.name} is unconditional: it takes no class labels")
        try:
            return torch.tensor(label_indices(labels, names, num_classes), dtype=torch.long)
        except ValueError as err:
            raise ValueError(f"{entry.name}: {err}") from None

    return preprocess


def prepare(model: nn.Module, entry: Entry, *, mirror: str | Path | None = None) -> None:
    """The entry's default truncation (``runtime.truncation``) becomes the sampler's default.
    (``mirror``: part of the domain contract; generators read no files besides their weights.)"""
    if isinstance(model, GeneratorMixin) and "truncation" in entry.runtime:
        model.default_truncation = entry.runtime["truncation"]
