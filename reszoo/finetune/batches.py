"""Batches beyond the default shuffled ones: in-memory tensors, and batches grouped by length.

- :class:`TensorData`: a data set held as tensors (e.g. MNIST as a uint8 tensor), passed to
  :func:`reszoo.finetune` in place of a folder. Its rows are the model's inputs (after an optional
  per-batch ``transform``), so nothing is decoded per item. The loop moves the tensors to the
  training device once; a batch is then an index into them on that device, and an epoch's
  permutation is made once per epoch (seeded by ``seed + epoch``, like the file loaders'), so no
  step waits for a host-to-device copy.
  Rows of varying length (utterances' features) are padded to one shape; with their ``lengths``
  given, ``group_by_length`` batches them like file data, and the ``transform`` can cut a batch's
  padding to its longest row.
- :class:`LengthGroupedBatchSampler`: shuffled batches of similar lengths (texts, utterances), so
  a batch pads to little more than its own items; the order is a function of ``seed + epoch``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._batching import by_length
from .._text import listing
from .data import LabeledData
from .options import DataError

__all__ = ["LengthGroupedBatchSampler", "TensorData", "TensorRows", "item_length"]


@dataclass
class TensorData:
    """Labelled data held as tensors: ``inputs`` (a tensor, or the model's batch keys to tensors,
    first dimension = examples), ``targets`` (class ids), and the class names the ids index.

    ``transform`` maps a batch's inputs to the model's (e.g. uint8 pixels to normalised floats),
    at training and evaluation alike; it runs on the training device, a batch at a time.
    ``lengths``: each row's length before padding (frames, tokens), for ``group_by_length``.
    """

    inputs: Tensor | Mapping[str, Tensor]
    targets: Tensor | Sequence[int]
    classes: Sequence[str] | None = None  # default: "0", "1", ... up to the largest target
    transform: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    name: str = "<in-memory tensors>"
    lengths: Sequence[int] | None = None
    _targets: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._targets = torch.as_tensor(self.targets, dtype=torch.long)
        n = len(self._targets)
        if self._targets.dim() != 1 or n == 0:
            raise DataError(f"{self.name}: targets must be a non-empty 1-d sequence of class ids, got shape "
                            f"{tuple(self._targets.shape)}")
        sizes = {k: v.shape[0] for k, v in self._tensors().items()}
        if any(size != n for size in sizes.values()):
            raise DataError(f"{self.name}: {n} targets but inputs of {sizes} examples; give one row per target")
        if self.classes is None:
            self.classes = tuple(str(i) for i in range(int(self._targets.max()) + 1))
        self.classes = tuple(self.classes)
        low, high = int(self._targets.min()), int(self._targets.max())
        if low < 0 or high >= len(self.classes):
            raise DataError(f"{self.name}: class ids from {low} to {high}, but {len(self.classes)} classes are named")
        if self.lengths is not None:
            self.lengths = [int(x) for x in self.lengths]
            if len(self.lengths) != n or min(self.lengths, default=0) < 1:
                raise DataError(f"{self.name}: lengths must give each of the {n} rows a length >= 1, got "
                                f"{len(self.lengths)} lengths (shortest {min(self.lengths, default=None)})")

    def __len__(self) -> int:
        return len(self._targets)

    def _tensors(self) -> dict[str, Tensor]:
        return dict(self.inputs) if isinstance(self.inputs, Mapping) else {"": self.inputs}

    def labeled(self, role: str, classes: Sequence[str] | None = None) -> LabeledData:
        """The rows as :class:`LabeledData` (items are row numbers), for the split, fingerprint and checks."""
        if classes is not None and tuple(classes) != self.classes:
            raise DataError(f"{role} data: {self.name} names classes {listing(self.classes, 5)}, the training "
                            f"data {listing(classes, 5)}; give the same classes in the same order")
        targets = self._targets.tolist()
        return LabeledData(items=list(range(len(targets))), targets=targets, classes=self.classes, source=self.name,
                           ids=[f"row {i}" for i in range(len(targets))])


class TensorRows(Dataset):
    """Rows of a :class:`TensorData` on one device; ``__getitems__`` gives whole batches.

    ``key``: the adapter's input name for a bare tensor (found from ``adapter.collate``).
    ``shuffle_seed``: for training, the epoch's order is a seeded permutation (``set_epoch``);
    evaluation keeps the row order, and so does training with a batch sampler (``group_by_length``),
    which then picks the rows. ``lengths``: the data's row lengths, of these rows.
    """

    def __init__(self, data: TensorData, rows: Sequence[int], device: Any, key: str,
                 shuffle_seed: int | None = None) -> None:
        self.inputs = {(k or key): v.to(device) for k, v in data._tensors().items()}
        self.targets = data._targets.to(device)
        self.rows = torch.as_tensor(list(rows), dtype=torch.long)
        self.lengths = [data.lengths[r] for r in self.rows.tolist()] if data.lengths is not None else None
        self.transform = data.transform
        self.shuffle_seed = shuffle_seed
        self.epoch: int | None = None
        self.order = self.rows.to(device)

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle_seed is None or epoch == self.epoch:
            return
        generator = torch.Generator().manual_seed(self.shuffle_seed + epoch)
        self.order = self.rows[torch.randperm(len(self.rows), generator=generator)].to(self.targets.device)
        self.epoch = epoch

    def _batch(self, positions: Sequence[int]) -> dict[str, Any]:
        first = positions[0]
        if list(positions) == list(range(first, first + len(positions))):
            rows = self.order[first:first + len(positions)]  # a slice on the device: no host copy, no wait
        else:  # the padding batch of several processes (accelerate's even_batches) repeats rows
            rows = self.order[torch.as_tensor(list(positions), device=self.order.device)]
        inputs = {k: v[rows] for k, v in self.inputs.items()}
        if self.transform is not None:
            inputs = self.transform(inputs)
        return {"index": rows, "target": self.targets[rows], "inputs": inputs}

    def __getitems__(self, positions: Sequence[int]) -> dict[str, Any]:
        return self._batch(positions)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return self._batch([position])

    @staticmethod
    def collate(batch: Any) -> dict[str, Any]:
        """``__getitems__`` already made the batch; a list of single rows is concatenated."""
        if isinstance(batch, dict):
            return batch
        return {"index": torch.cat([b["index"] for b in batch]), "target": torch.cat([b["target"] for b in batch]),
                "inputs": {k: torch.cat([b["inputs"][k] for b in batch]) for k in batch[0]["inputs"]}}


def item_length(encoded: Any) -> int:
    """Length of one encoded item: frames of a feature matrix, tokens of a tokenizer encoding."""
    if isinstance(encoded, Tensor):
        return int(encoded.shape[0]) if encoded.dim() else 1
    ids = getattr(encoded, "ids", None)
    if ids is not None:
        return len(ids)
    if isinstance(encoded, Mapping) and encoded:
        return item_length(next(iter(encoded.values())))
    if isinstance(encoded, Sequence):
        return len(encoded)
    return 1


class LengthGroupedBatchSampler:
    """Shuffled batches of similar lengths: shuffle, sort within pools of ``pool`` batches, cut
    into batches, shuffle the batches. Randomness stays (pools differ each epoch); padding nearly
    vanishes. The order is a function of ``seed + epoch`` alone (``set_epoch``), as an exact resume needs."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, pool: int, seed: int) -> None:
        self.lengths, self.batch_size, self.pool, self.seed = list(lengths), batch_size, pool, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        chunk = self.batch_size * self.pool
        out: list[list[int]] = []
        for start in range(0, len(order), chunk):
            out += by_length(order[start:start + chunk], self.lengths, self.batch_size)
        rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)
