"""Text domain: residual Transformer encoders (BERT family) with their own tokenizers.

Light on import (torch only): ``tokenizers`` is imported when a tokenizer is read, and
transformers never (the BERT converter works on plain state dicts).

Registry ``preprocess`` of a text entry::

    preprocess:
      tokenizer: {file: tokenizer.json}   # + repo/revision when not the weights' repo
      max_length: 256                     # longer texts are truncated (documented in docs/text.md)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from .convert import ConversionError, convert_bert
from .models import ENCODER_CONFIGS, EncoderConfig, TextEncoder, build_encoder
from .tokenize import TextPreprocess, check_texts

__all__ = [
    "ARCHS",
    "CONVERTERS",
    "ConversionError",
    "EncoderConfig",
    "TextEncoder",
    "TextPreprocess",
    "aux_files",
    "build_preprocess",
    "check_texts",
    "predict",
    "prepare",
]


def _named(config: str) -> Callable[..., TextEncoder]:
    def builder(**kwargs: Any) -> TextEncoder:
        return build_encoder(config, **kwargs)

    builder.__name__ = config
    builder.__doc__ = f"``{config}`` encoder ({ENCODER_CONFIGS[config]}); keyword arguments go to TextEncoder/EncoderConfig."
    return builder


def transformer_encoder(**kwargs: Any) -> TextEncoder:
    """Any size: ``hidden_size``, ``num_layers``, ``num_heads`` … (fields of EncoderConfig) plus model options."""
    return build_encoder(EncoderConfig(), **kwargs)


ARCHS: dict[str, Callable[..., nn.Module]] = {name: _named(name) for name in ENCODER_CONFIGS}
ARCHS["transformer_encoder"] = transformer_encoder

CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"bert": convert_bert}

# LoRA (reszoo.lora, `reszoo finetune --lora`): the layers adapted by default, a regex over module
# names (full match): every attention (fused q/k/v, output) and feed-forward linear of each layer.
LORA_TARGETS = r"layers\.\d+\.(attn\.fn\.(qkv|proj)|ffn\.fn\.(fc1|fc2))"


def _tokenizer_spec(entry: Any) -> tuple[str, str | None, str | None]:
    """(file, repo, revision) of an entry's tokenizer; repo/revision default to the weights'."""
    spec = entry.preprocess.get("tokenizer", {"file": "tokenizer.json"})
    if isinstance(spec, str):
        spec = {"file": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
        raise ValueError(f"{entry.name}: preprocess.tokenizer must be a file name or {{file, repo?, revision?}}, got {spec!r}")
    weights = entry.weights
    if "repo" in spec:
        return spec["file"], spec["repo"], spec.get("revision")
    return spec["file"], weights.repo if weights else None, weights.revision if weights else None


def build_preprocess(entry: Any) -> TextPreprocess:
    """The entry's :class:`TextPreprocess` (its tokenizer is read by :func:`prepare`)."""
    max_length = entry.preprocess.get("max_length")
    if max_length is None:
        raise ValueError(f"{entry.name}: preprocess.max_length is required for text models")
    file, repo, revision = _tokenizer_spec(entry)
    return TextPreprocess(max_length=max_length, tokenizer_file=file, repo=repo, revision=revision)


def aux_files(entry: Any) -> list[tuple[str, str | None, str]]:
    """``(repo, revision, file)`` of the tokenizer, which ``prepare`` reads besides the weights."""
    file, repo, revision = _tokenizer_spec(entry)
    return [(repo, revision, file)] if repo else []


def prepare(model: nn.Module, entry: Any, *, mirror: str | os.PathLike[str] | None = None) -> None:
    """Read the tokenizer (same mirror/cache/Hub lookup as the weights) so ``model.encode`` works."""
    pre = getattr(model, "preprocess", None)
    if not isinstance(pre, TextPreprocess):
        pre = model.preprocess = build_preprocess(entry)
    if pre.tokenizer is None:
        pre.load(mirror=mirror)


# ---------------------------------------------------------------------------- predict (CLI)


def predict(model: nn.Module, inputs: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """What ``reszoo predict NAME TEXT...`` prints, by the model's head:

    * sentence embedding: cosine similarity of the first text with each other one;
    * classifier: the ``top_k`` labels of each text with their probabilities;
    * masked LM: the ``top_k`` tokens for each ``[MASK]`` of each text.
    """
    import torch

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


def _fill_mask(model: TextEncoder, texts: list[str], top_k: int) -> list[dict[str, Any]]:
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
