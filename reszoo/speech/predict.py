"""What ``reszoo predict NAME AUDIO...`` prints: classes, or speaker embeddings and verification.

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def predict(model: Any, inputs: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """What ``reszoo predict NAME INPUT...`` prints.

    Classifiers: rows ``{input, rank, label, prob}``, the top ``top_k`` per file (as for images).
    Embedding models: one file -> its embedding's size and norm; several -> each later file
    verified against the first (cosine score and decision at the model's threshold).
    """
    from torch import nn

    from .preprocess import DEFAULT_VERIFY_THRESHOLD

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
