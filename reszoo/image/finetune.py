"""Fine-tuning batches of images: ``model.preprocess(path)`` (the entry's resize/crop/normalise)
per item, then stacked (named by ``DOMAIN.finetune``; see reszoo/finetune/adapters.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..finetune.adapters import Adapter
from ..finetune.data import READ_ERRORS

__all__ = ["ImageAdapter"]


class ImageAdapter(Adapter):
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
