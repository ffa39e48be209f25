"""Fine-tuning batches of audio (named by ``DOMAIN.finetune``; see reszoo/finetune/adapters.py):

- :class:`SpeechAdapter` (classifiers, speaker models): fbank features ``model.preprocess(path)``
  ``(frames, n_mels)`` per item, zero-padded per batch, with the relative ``lengths`` the model
  masks padding with;
- :class:`RecognitionAdapter` (CTC recognisers): log-mel features ``(n_mels, frames)`` per item,
  zero-padded per batch, with the frame counts; the model gives ``(log_probs, out_lengths)``,
  which the CTC criterion (``training.CTCLoss``) scores against the padded transcripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..finetune.adapters import Adapter
from .preprocess import pad_features

__all__ = ["RecognitionAdapter", "SpeechAdapter"]


class SpeechAdapter(Adapter):
    def encode(self, item: Any) -> Tensor:
        feats = self.preprocess(item)
        return feats[0] if feats.dim() == 3 else feats  # (frames, n_mels)

    def collate(self, encoded: Sequence[Tensor]) -> dict[str, Tensor]:
        feats, lengths = pad_features(encoded, dtype=torch.float32)
        return {"feats": feats, "lengths": lengths}

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        return model(inputs["feats"], inputs["lengths"])


class RecognitionAdapter(Adapter):
    def length(self, encoded: Tensor) -> int:
        return int(encoded.shape[-1])  # frames (features are (n_mels, frames))

    def encode(self, item: Any) -> Tensor:
        feats, lengths = self.preprocess(item)
        return feats[0, :, : int(lengths[0])]  # (n_mels, frames)

    def collate(self, encoded: Sequence[Tensor]) -> dict[str, Tensor]:
        lengths = torch.tensor([f.shape[-1] for f in encoded], dtype=torch.long)
        feats = torch.zeros(len(encoded), encoded[0].shape[0], int(lengths.max()))
        for i, f in enumerate(encoded):
            feats[i, :, : f.shape[-1]] = f
        return {"feats": feats, "lengths": lengths}

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return model(inputs["feats"], inputs["lengths"])
