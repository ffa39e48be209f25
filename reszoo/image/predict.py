"""What ``reszoo predict NAME IMAGE...`` prints: the top classes of each image.

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

import os
from typing import Any


def _describe(item: Any) -> str:
    """How an input is named in predict's rows: paths as given, other objects by type and shape."""
    if isinstance(item, str | os.PathLike):
        return str(item)
    shape = getattr(item, "shape", None) or getattr(item, "size", None)
    return f"<{type(item).__name__} {tuple(shape)}>" if shape is not None else f"<{type(item).__name__}>"


def predict(model: Any, inputs: list[Any], top_k: int = 5) -> list[dict[str, Any]]:
    """Top-``top_k`` classes of each input (a path, PIL image or tensor): rows ``{input, rank, label, prob}``.

    Uses ``model.preprocess`` and ``model.labels`` as set by :func:`reszoo.load`.
    """
    import torch

    preprocess = getattr(model, "preprocess", None)
    if preprocess is None:
        raise ValueError("model has no .preprocess; load it with reszoo.load(name) or set model.preprocess")
    labels = getattr(model, "labels", None)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    param = next(model.parameters())
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for item in inputs:
            batch = preprocess(item).to(device=param.device, dtype=param.dtype)
            probs = model(batch).float().softmax(dim=-1)
            k = min(top_k, probs.shape[-1])
            for i, (values, indices) in enumerate(zip(*probs.topk(k, dim=-1), strict=True)):
                name = _describe(item)
                name = name if batch.shape[0] == 1 else f"{name}[{i}]"
                for rank, (p, idx) in enumerate(zip(values.tolist(), indices.tolist(), strict=True), start=1):
                    rows.append({"input": name, "rank": rank, "label": labels[idx] if labels else str(idx), "prob": round(p, 4)})
    return rows
