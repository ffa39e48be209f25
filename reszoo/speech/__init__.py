"""Speech: ECAPA-TDNN speaker embeddings and small residual conv-TDNN classifiers.

The domain contract (see reszoo/domains.py). Light on import: torch only; torchaudio and
soundfile are imported by the functions that read, resample or featurise audio.
See docs/speech.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .convert import ConversionError, convert_speechbrain_ecapa
from .frontend import FbankConfig, SpeechPreprocess
from .models import ECAPATDNN, ecapa_tdnn, ecapa_tdnn_c512, ecapa_tdnn_c1024, ecapa_tdnn_small, tdnn_small

__all__ = [
    "ARCHS",
    "CONVERTERS",
    "ConversionError",
    "DEFAULT_VERIFY_THRESHOLD",
    "ECAPATDNN",
    "FbankConfig",
    "SpeechPreprocess",
    "build_preprocess",
    "predict",
    "prepare",
]

# SpeechBrain's SpeakerRecognition.verify_batch default; entries may give their own
# (runtime.verify_threshold), e.g. the equal-error-rate point measured on a dev set.
DEFAULT_VERIFY_THRESHOLD = 0.25

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "ecapa_tdnn": ecapa_tdnn,
    "ecapa_tdnn_c512": ecapa_tdnn_c512,
    "ecapa_tdnn_c1024": ecapa_tdnn_c1024,
    "ecapa_tdnn_small": ecapa_tdnn_small,
    "tdnn_small": tdnn_small,
}

CONVERTERS: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {
    "speechbrain-ecapa": convert_speechbrain_ecapa,
}

# LoRA (reszoo.lora, `reszoo finetune --lora`): the layers adapted by default, a regex over module
# names (full match): the 1x1 TDNN convolutions of every SE-Res2Net block and of the multi-layer
# aggregation. The stem and the Res2Net convolutions are dilated and reflect-padded, which peft's
# LoRA convolution does not reproduce (reszoo.lora refuses such layers).
LORA_TARGETS = r"blocks\.\d+\.(tdnn1|tdnn2)\.conv|mfa\.conv"
# Layers LoRA must not wrap: attentive pooling reads this convolution's weight directly (to save
# a concatenation), so a LoRA wrapper there would be bypassed.
LORA_EXCLUDE = r"pool\.tdnn\.conv"


def build_preprocess(entry: Any) -> SpeechPreprocess:
    """``entry.preprocess`` (an fbank description, see FbankConfig) -> raw audio to features."""
    return SpeechPreprocess(FbankConfig.from_preprocess(dict(entry.preprocess or {})))


def prepare(model: nn.Module, entry: Any, *, mirror: str | os.PathLike[str] | None = None) -> None:
    """Attach the verification threshold the entry documents (or SpeechBrain's default).
    (``mirror``: part of the domain contract; speech models read no files besides their weights.)"""
    model.verify_threshold = float(entry.runtime.get("verify_threshold", DEFAULT_VERIFY_THRESHOLD))


def predict(model: nn.Module, inputs: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """What ``reszoo predict NAME INPUT...`` prints.

    Classifiers: rows ``{input, rank, label, prob}``, the top ``top_k`` per file (as for images).
    Embedding models: one file -> its embedding's size and norm; several -> each later file
    verified against the first (cosine score and decision at the model's threshold).
    """
    if not inputs:
        raise ValueError("give at least one audio file")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no audio file at {', '.join(missing)}")
    inputs = [str(p) for p in inputs]
    if getattr(model, "head", None) is not None:
        rows = []
        for path, top in zip(inputs, model.classify(inputs, top_k=top_k), strict=True):
            rows += [{"input": path, "rank": rank, "label": label, "prob": round(prob, 4)}
                     for rank, (label, prob) in enumerate(top, start=1)]
        return rows
    embeddings = model.embed(list(inputs))
    if len(inputs) == 1:
        emb = embeddings[0]
        return [{"input": inputs[0], "embedding_dim": int(emb.numel()), "norm": round(float(emb.norm()), 4)}]
    threshold = float(getattr(model, "verify_threshold", DEFAULT_VERIFY_THRESHOLD))
    ref = embeddings[0]
    rows = []
    for path, emb in zip(inputs[1:], embeddings[1:], strict=True):
        score = float(nn.functional.cosine_similarity(ref, emb, dim=0))
        rows.append({"a": inputs[0], "b": path, "score": round(score, 4), "same_speaker": score >= threshold,
                     "threshold": threshold})
    return rows
