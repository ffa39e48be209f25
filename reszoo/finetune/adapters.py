"""Batching for fine-tuning: data items in, the model's own input out, with the model's own preprocessing.

An adapter encodes one item (a path or a text) with what ``reszoo.load`` attached to the model,
collates encodings into a batch, and calls the model on it. Each fine-tunable domain has its own
subclass of :class:`Adapter` in its ``finetune.py``, named by its :class:`reszoo.domains.FinetuneSpec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .data import READ_ERRORS, LabeledData, finetune_spec
from .options import DataError, FinetuneError, FinetuneOptions

if TYPE_CHECKING:
    from ..registry import Weights

__all__ = ["Adapter", "Collate", "EncodedDataset", "make_adapter", "pad_targets"]


class Adapter:
    """How one domain turns items into a batch and a batch into logits. ``opts``: the run's
    options (a subclass reads the ones about its preprocessing, e.g. ``max_length``)."""

    domain = ""  # the domain's name, set by make_adapter (for messages)

    def __init__(self, model: nn.Module, opts: FinetuneOptions | None = None) -> None:
        preprocess = getattr(model, "preprocess", None)
        if preprocess is None:
            raise DataError(f"{type(model).__name__} has no .preprocess; load the model with reszoo.load")
        self.preprocess = preprocess
        self.opts = opts if opts is not None else FinetuneOptions()

    @property
    def read_errors(self) -> tuple[type[BaseException], ...]:
        """What :meth:`encode` raises for an unreadable item (skipped or an error by --on-bad-file)."""
        return READ_ERRORS

    def encode(self, item: Any) -> Any:
        raise NotImplementedError

    def collate(self, encoded: Sequence[Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def length(self, encoded: Any) -> int:
        """One encoding's length, by which ``group_by_length`` groups items (frames, tokens)."""
        from .batches import item_length

        return item_length(encoded)

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> Any:
        """The model's outputs on a batch: logits, or what the criterion scores (a tuple)."""
        return model(**inputs)

    def saved_preprocess(self, preprocess: dict[str, Any], weights: Weights | None) -> dict[str, Any]:
        """The ``preprocess`` the fine-tuned model is saved with, from the base's and the loaded
        base's ``weights`` (where its files came from): the base's, unless the run changed it."""
        return dict(preprocess)


def make_adapter(model: nn.Module, domain: str, opts: FinetuneOptions | None = None, task: str | None = None) -> Adapter:
    """The adapter the ``domain`` declares for ``task`` (its ``FinetuneSpec.adapter``), for ``model``."""
    from .. import domains

    finetune_spec(domain, task)  # a domain without fine-tuning: the DataError that says so
    cls = domains.get(domain).adapter(task)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise FinetuneError(f"the {domain} domain's fine-tuning adapter {cls!r} is not a reszoo.finetune.adapters.Adapter")
    adapter = cls(model, opts)
    adapter.domain = domain
    return adapter


class EncodedDataset(Dataset):
    """``(index, encoding, target)`` per item; encodings from the up-front pass when held, else on the fly."""

    def __init__(self, data: LabeledData, adapter: Adapter, encoded: list[Any] | None = None) -> None:
        if encoded is not None and len(encoded) != len(data):
            raise ValueError(f"{len(encoded)} encodings for {len(data)} items")
        self.data, self.adapter, self.encoded = data, adapter, encoded

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[int, Any, Any]:
        value = self.encoded[i] if self.encoded is not None else self.adapter.encode(self.data.items[i])
        return i, value, self.data.targets[i]


def pad_targets(targets: Sequence[Any]) -> Tensor:
    """Class ids -> a ``(batch,)`` tensor; sequences of ids -> ``(batch, longest)`` padded with -1
    (a sequence's length is its count of ids >= 0)."""
    if not targets or not isinstance(targets[0], list | tuple):
        return torch.tensor(targets, dtype=torch.long)
    out = torch.full((len(targets), max(1, max(len(t) for t in targets))), -1, dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return out


class Collate:
    """Batch of ``(index, encoding, target)`` -> ``{"index", "target", "inputs": model kwargs}``
    (sequence targets padded by :func:`pad_targets`)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def __call__(self, batch: Sequence[tuple[int, Any, int]]) -> dict[str, Any]:
        index, values, targets = zip(*batch, strict=True)
        return {
            "index": torch.tensor(index, dtype=torch.long),
            "target": pad_targets(targets),
            "inputs": self.adapter.collate(list(values)),
        }
