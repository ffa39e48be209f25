"""Fine-tuning batches of audio: fbank features ``model.preprocess(path)`` ``(frames, n_mels)`` per
item, zero-padded per batch, with the relative ``lengths`` the model masks padding with (named by
``DOMAIN.finetune``; see reszoo/finetune/adapters.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..finetune.adapters import Adapter
from .preprocess import pad_features

__all__ = ["SpeechAdapter"]


class SpeechAdapter(Adapter):
    def encode(self, item: Any) -> Tensor:
        feats = self.preprocess(item)
        return feats[0] if feats.dim() == 3 else feats  # (frames, n_mels)

    def collate(self, encoded: Sequence[Tensor]) -> dict[str, Tensor]:
        feats, lengths = pad_features(encoded, dtype=torch.float32)
        return {"feats": feats, "lengths": lengths}

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        return model(inputs["feats"], inputs["lengths"])
