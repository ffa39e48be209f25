"""Checkpoint converters: upstream key layouts onto :class:`~reszoo.text.models.TextEncoder`'s.

``"bert"``: transformers' BERT layout (``BertModel``, ``BertForPreTraining``,
``BertForMaskedLM``, ``BertForSequenceClassification``), with or without the ``bert.`` prefix
and with the legacy ``gamma``/``beta`` LayerNorm names of the original Google checkpoints.

Strict: every input key is either mapped or on a short list of keys that carry nothing a
reszoo model uses, and every key a complete encoder needs must be there. Ignored on purpose:

* ``embeddings.position_ids``: a buffer (``arange``) that old transformers versions saved.
* ``cls.seq_relationship.*``: the next-sentence-prediction classifier of pre-training.
* ``cls.predictions.decoder.weight``: the MLM decoder, tied to the word embeddings (checked equal).
* ``cls.predictions.decoder.bias``: the same tensor as ``cls.predictions.bias`` (used if that is absent).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor

from .._text import listing
from ..domains import Registry
from ..errors import ConversionError

__all__ = ["ConversionError", "convert_bert", "converters"]

converters: Registry[Callable[[dict[str, Tensor]], dict[str, Tensor]]] = Registry("converter")


_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
# per-layer upstream suffix -> reszoo suffix (q/k/v are fused separately)
_LAYER_KEYS = {
    "attention.output.dense.weight": "attn.fn.proj.weight",
    "attention.output.dense.bias": "attn.fn.proj.bias",
    "attention.output.LayerNorm.weight": "attn.norm.weight",
    "attention.output.LayerNorm.bias": "attn.norm.bias",
    "intermediate.dense.weight": "ffn.fn.fc1.weight",
    "intermediate.dense.bias": "ffn.fn.fc1.bias",
    "output.dense.weight": "ffn.fn.fc2.weight",
    "output.dense.bias": "ffn.fn.fc2.bias",
    "output.LayerNorm.weight": "ffn.norm.weight",
    "output.LayerNorm.bias": "ffn.norm.bias",
}
_QKV = tuple(f"attention.self.{p}.{t}" for p in ("query", "key", "value") for t in ("weight", "bias"))
_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.segment.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
}
# Optional groups: all of a group's keys or none of them.
_GROUPS = {
    "pooler": {"pooler.dense.weight": "pooler.weight", "pooler.dense.bias": "pooler.bias"},
    "masked-LM head": {
        "cls.predictions.transform.dense.weight": "mlm.dense.weight",
        "cls.predictions.transform.dense.bias": "mlm.dense.bias",
        "cls.predictions.transform.LayerNorm.weight": "mlm.norm.weight",
        "cls.predictions.transform.LayerNorm.bias": "mlm.norm.bias",
        "cls.predictions.bias": "mlm.bias",
    },
    "sequence classifier": {"classifier.weight": "head.weight", "classifier.bias": "head.bias"},
}
_IGNORED = {"embeddings.position_ids", "cls.seq_relationship.weight", "cls.seq_relationship.bias"}


def _canonical(key: str) -> str:
    """Strip the ``bert.`` prefix and rename legacy LayerNorm ``gamma``/``beta``."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    if ".LayerNorm." in key:
        key = re.sub(r"\.gamma$", ".weight", key)
        key = re.sub(r"\.beta$", ".bias", key)
    return key


@converters.register("bert")
def convert_bert(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers BERT state dict -> a :class:`TextEncoder` state dict (see the module doc)."""
    src: dict[str, Tensor] = {}
    for key, value in state.items():
        canon = _canonical(key)
        if canon in src:
            raise ConversionError(f"BERT checkpoint has {canon!r} twice (with and without the 'bert.' prefix, or as gamma/beta and weight/bias)")
        src[canon] = value

    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []

    def take(upstream: str, ours: str) -> None:
        if upstream in src:
            out[ours] = src[upstream]
            used.add(upstream)
        else:
            missing.append(upstream)

    for upstream, ours in _EMBEDDINGS.items():
        take(upstream, ours)

    layers = sorted({int(m.group(1)) for k in src if (m := _LAYER.match(k))})
    if not layers:
        missing.append("encoder.layer.0.*")
    elif layers != list(range(len(layers))):
        gaps = sorted(set(range(max(layers) + 1)) - set(layers))
        missing += [f"encoder.layer.{i}.*" for i in gaps]
    for i in layers:
        for upstream, ours in _LAYER_KEYS.items():
            take(f"encoder.layer.{i}.{upstream}", f"layers.{i}.{ours}")
        qkv = [f"encoder.layer.{i}.{s}" for s in _QKV]
        absent = [k for k in qkv if k not in src]
        if absent:
            missing += absent
            continue
        weights, biases = [src[k] for k in qkv[0::2]], [src[k] for k in qkv[1::2]]
        out[f"layers.{i}.attn.fn.qkv.weight"] = torch.cat(weights, 0)
        out[f"layers.{i}.attn.fn.qkv.bias"] = torch.cat(biases, 0)
        used.update(qkv)

    # The MLM bias lives under two names in transformers (tied); accept either.
    if "cls.predictions.bias" not in src and "cls.predictions.decoder.bias" in src:
        src["cls.predictions.bias"] = src["cls.predictions.decoder.bias"]
    for group, keys in _GROUPS.items():
        present = [k for k in keys if k in src]
        if present and len(present) < len(keys):
            missing += [f"{k} (the {group} is incomplete)" for k in keys if k not in src]
        for upstream in present:
            take(upstream, keys[upstream])

    decoder = src.get("cls.predictions.decoder.weight")
    if decoder is not None:
        word = src.get("embeddings.word_embeddings.weight")
        if word is None or decoder.shape != word.shape or not torch.equal(decoder, word):
            raise ConversionError("BERT checkpoint has an MLM decoder not tied to the word embeddings; "
                                  "reszoo's MLM head always ties them")
        used.add("cls.predictions.decoder.weight")
    used.update(k for k in ("cls.predictions.decoder.bias", *_IGNORED) if k in src)

    if missing:
        raise ConversionError(f"BERT checkpoint is missing {len(missing)} key(s): {listing(sorted(missing), 10)}")
    leftover = [k for k in src if k not in used]
    if leftover:
        raise ConversionError(f"BERT checkpoint has {len(leftover)} key(s) the 'bert' converter does not know: {listing(sorted(leftover), 10)}")
    return out
