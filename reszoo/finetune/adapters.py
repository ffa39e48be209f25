"""Per-domain batching: data items in, the model's own input out, with the model's own preprocessing.

An adapter encodes one item (a path or a text) with what ``reszoo.load`` attached to the model,
collates encodings into a batch, and calls the model on it:

- image: ``model.preprocess(path)`` (the entry's resize/crop/normalise) per item, then stack;
- text: the model's tokenizer (``model.preprocess.tokenize``, truncated to ``max_length``) per
  item, padded per batch to its longest text by ``model.preprocess.collate``;
- speech: fbank features ``model.preprocess(path)`` ``(frames, n_mels)`` per item, zero-padded
  per batch, with the relative ``lengths`` the model masks padding with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .data import READ_ERRORS, LabeledData
from .options import DataError

__all__ = ["Adapter", "Collate", "EncodedDataset", "ImageAdapter", "SpeechAdapter", "TextAdapter", "make_adapter"]


class Adapter:
    """How one domain turns items into a batch and a batch into logits."""

    domain = ""

    def __init__(self, model: nn.Module) -> None:
        preprocess = getattr(model, "preprocess", None)
        if preprocess is None:
            raise DataError(f"{type(model).__name__} has no .preprocess; load the model with reszoo.load")
        self.preprocess = preprocess

    @property
    def read_errors(self) -> tuple[type[BaseException], ...]:
        """What :meth:`encode` raises for an unreadable item (skipped or an error by --on-bad-file)."""
        return READ_ERRORS

    def encode(self, item: Any) -> Any:
        raise NotImplementedError

    def collate(self, encoded: Sequence[Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        return model(**inputs)


class ImageAdapter(Adapter):
    domain = "image"

    @property
    def read_errors(self) -> tuple[type[BaseException], ...]:
        # A header claiming more pixels than PIL will decode (a decompression bomb): PIL raises
        # DecompressionBombError (an Exception, not an OSError), or the warning where warnings are errors.
        from PIL import Image

        return (*READ_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning)

    def encode(self, item: Any) -> Tensor:
        x = self.preprocess(item)
        return x[0] if x.dim() == 4 else x  # preprocess returns a batch of one

    def collate(self, encoded: Sequence[Tensor]) -> dict[str, Tensor]:
        return {"pixels": torch.stack(list(encoded))}

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        return model(inputs["pixels"])


class TextAdapter(Adapter):
    domain = "text"

    def __init__(self, model: nn.Module, max_length: int | None = None) -> None:
        super().__init__(model)
        pre = self.preprocess
        if not hasattr(pre, "tokenize") or not hasattr(pre, "collate"):
            raise DataError(f"{type(model).__name__}.preprocess has no tokenize/collate; load the model with reszoo.load")
        if getattr(pre, "tokenizer", None) is None:
            pre.load()
        if max_length is not None and max_length != pre.max_length:
            # The option overrides the entry's truncation length; the saved entry records it.
            pre.max_length = max_length
            pre.tokenizer.enable_truncation(max_length=max_length)

    def encode(self, item: Any) -> Any:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"expected a non-empty text, got {item!r:.60}")
        return self.preprocess.tokenize([item])[0]

    def collate(self, encoded: Sequence[Any]) -> dict[str, Tensor]:
        return self.preprocess.collate(list(encoded))


class SpeechAdapter(Adapter):
    domain = "speech"

    def encode(self, item: Any) -> Tensor:
        feats = self.preprocess(item)
        return feats[0] if feats.dim() == 3 else feats  # (frames, n_mels)

    def collate(self, encoded: Sequence[Tensor]) -> dict[str, Tensor]:
        frames = max(f.shape[0] for f in encoded)
        feats = encoded[0].new_zeros(len(encoded), frames, encoded[0].shape[1])
        for i, f in enumerate(encoded):
            feats[i, : f.shape[0]] = f
        # Relative lengths (1.0 = the padded length), as reszoo.speech models (and SpeechBrain) take them.
        lengths = torch.tensor([f.shape[0] / frames for f in encoded], dtype=torch.float32)
        return {"feats": feats, "lengths": lengths}

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        return model(inputs["feats"], inputs["lengths"])


def make_adapter(model: nn.Module, domain: str, *, max_length: int | None = None) -> Adapter:
    if domain == "image":
        return ImageAdapter(model)
    if domain == "text":
        return TextAdapter(model, max_length=max_length)
    if domain == "speech":
        return SpeechAdapter(model)
    raise DataError(f"fine-tuning covers classification models of the image, text and speech domains, not {domain!r}")


class EncodedDataset(Dataset):
    """``(index, encoding, target)`` per item; encodings from the up-front pass when held, else on the fly."""

    def __init__(self, data: LabeledData, adapter: Adapter, encoded: list[Any] | None = None) -> None:
        if encoded is not None and len(encoded) != len(data):
            raise ValueError(f"{len(encoded)} encodings for {len(data)} items")
        self.data, self.adapter, self.encoded = data, adapter, encoded

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[int, Any, int]:
        value = self.encoded[i] if self.encoded is not None else self.adapter.encode(self.data.items[i])
        return i, value, self.data.targets[i]


class Collate:
    """Batch of ``(index, encoding, target)`` -> ``{"index", "target", "inputs": model kwargs}``."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def __call__(self, batch: Sequence[tuple[int, Any, int]]) -> dict[str, Any]:
        index, values, targets = zip(*batch, strict=True)
        return {
            "index": torch.tensor(index, dtype=torch.long),
            "target": torch.tensor(targets, dtype=torch.long),
            "inputs": self.adapter.collate(list(values)),
        }
