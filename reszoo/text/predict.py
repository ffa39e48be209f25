"""What ``reszoo predict NAME TEXT...`` prints, by the model's head.

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from typing import Any


def predict(model: Any, inputs: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """What ``reszoo predict NAME TEXT...`` prints, by the model's head:

    * sentence embedding: cosine similarity of the first text with each other one;
    * classifier: the ``top_k`` labels of each text with their probabilities;
    * masked LM: the ``top_k`` tokens for each ``[MASK]`` of each text.
    """
    import torch

    from .models import TextEncoder
    from .preprocess import check_texts

    texts = check_texts(inputs)
    if not isinstance(model, TextEncoder):
        raise TypeError(f"expected a reszoo TextEncoder, got {type(model).__name__}")
    if model.head is not None:
        labels = getattr(model, "labels", None) or [str(i) for i in range(model.num_classes)]
        with torch.inference_mode():
            probs = model(**model.preprocess(texts)).softmax(-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [{"text": t, "rank": r + 1, "label": labels[int(i)], "probability": round(float(p), 6)}
                for t, ps, ids in zip(texts, top.values, top.indices) for r, (p, i) in enumerate(zip(ps, ids))]
    if model.mlm is not None:
        return _fill_mask(model, texts, top_k)
    if len(texts) < 2:
        raise ValueError("sentence similarity needs at least two texts: the first is compared with each other one")
    emb = model.encode(texts, normalize=True)
    cos = emb[1:] @ emb[0]
    return [{"text_a": texts[0], "text_b": t, "cosine": round(float(c), 6)} for t, c in zip(texts[1:], cos)]


def _fill_mask(model: Any, texts: list[str], top_k: int) -> list[dict[str, Any]]:
    import torch

    pre = model.preprocess
    mask_id = pre.token_id("[MASK]")
    batch = pre(texts)
    where = batch["input_ids"] == mask_id
    missing = [i for i in range(len(texts)) if not bool(where[i].any())]
    if missing:
        raise ValueError(f"fill-mask: text(s) #{', #'.join(map(str, missing))} contain no [MASK] token")
    with torch.inference_mode():
        probs = model(**batch).softmax(-1)
    rows = []
    for row, pos in where.nonzero().tolist():
        top = probs[row, pos].topk(top_k)
        for r, (p, i) in enumerate(zip(top.values, top.indices)):
            rows.append({"text": texts[row], "position": pos, "rank": r + 1,
                         "token": pre.id_to_token(int(i)), "score": round(float(p), 6)})
    return rows
