"""Upstream GAN checkpoints onto reszoo's module names.

``biggan-pretrained``: the state dict of pytorch-pretrained-BigGAN's ``BigGAN`` (the
``pytorch_model.bin`` files on the Hub, e.g. ``osanseviero/BigGAN-deep-128``):

========================================================  =========================================
upstream                                                  reszoo
========================================================  =========================================
``embeddings.weight``                                     ``embed.weight``
``generator.gen_z.*`` (outputs in TF's HWC order)         ``linear.*`` (rows reordered to CHW)
``generator.layers.{i}.bn_{k}.{running_means,_vars}``     ``blocks.{j}.bn{k+1}.…``
``generator.layers.{i}.bn_{k}.{scale,offset}.*``          ``blocks.{j}.bn{k+1}.{scale,offset}.*``
``generator.layers.{i}.conv_{k}.*``                       ``blocks.{j}.conv{k+1}.*``
``generator.layers.{a}.snconv1x1_{theta,phi,g,o_conv}.*``  ``attention.{theta,phi,g,o}.*``
``generator.layers.{a}.gamma``                            ``attention.gamma``
``generator.bn.*``, ``generator.conv_to_rgb.*``           ``bn.*``, ``conv_out.*``
``*.weight_orig`` (spectral norm)                         ``*.weight`` (``weight_u``/``weight_v`` kept)
========================================================  =========================================

``{a}`` is the layer holding the attention (it has a ``gamma``); blocks after it shift down by
one (``j = i - 1``). Any key not covered is an error, as is a missing attention layer; a plain
``*.weight`` next to a ``*.weight_orig`` (the normalised weight, which old torch versions also
saved) is derived data and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import Tensor

from ..domains import Registry

__all__ = ["convert_biggan_pretrained", "converters"]

converters: Registry[Callable[[dict[str, Tensor]], dict[str, Tensor]]] = Registry("converter")

_LAYER = re.compile(r"^generator\.layers\.(\d+)\.(.+)$")
_BLOCK_PART = re.compile(r"^(bn|conv)_(\d)\.(.+)$")
_ATTENTION_PART = {"snconv1x1_theta": "theta", "snconv1x1_phi": "phi", "snconv1x1_g": "g", "snconv1x1_o_conv": "o"}
_SN_LEAF = {"weight_orig": "weight", "weight_u": "weight_u", "weight_v": "weight_v", "bias": "bias",
            "weight": "weight", "running_means": "running_means", "running_vars": "running_vars"}


def _leaf(rest: str, key: str) -> str:
    """``scale.weight_orig`` -> ``scale.weight`` (the last dotted part mapped by _SN_LEAF)."""
    head, _, last = rest.rpartition(".")
    if last not in _SN_LEAF:
        raise KeyError(f"biggan-pretrained: unexpected key {key!r}")
    return f"{head}.{_SN_LEAF[last]}" if head else _SN_LEAF[last]


def _hwc_rows_to_chw(t: Tensor, side: int = 4) -> Tensor:
    """Reorder the first dimension from (h, w, c) to (c, h, w): upstream reshapes gen_z's output
    TF-style as NHWC and permutes; reszoo views it directly as NCHW."""
    c = t.shape[0] // (side * side)
    return t.reshape(side, side, c, *t.shape[1:]).movedim(2, 0).reshape(t.shape).contiguous()


@converters.register("biggan-pretrained")
def convert_biggan_pretrained(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """pytorch-pretrained-BigGAN's ``BigGAN`` state dict -> reszoo's :class:`BigGANDeep`."""
    attention = {int(m[1]) for k in state if (m := _LAYER.match(k)) and m[2] == "gamma"}
    if len(attention) != 1:
        raise KeyError(f"biggan-pretrained: expected exactly one self-attention layer (a 'gamma'), found {sorted(attention)}")
    (attn_index,) = attention
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight") and key.removesuffix(".weight") + ".weight_orig" in state:
            continue  # a spectrally normalised copy some torch versions also saved: derived, recomputed
        if key == "embeddings.weight":
            out["embed.weight"] = value
        elif key.startswith("generator.gen_z."):
            leaf = _leaf(key.removeprefix("generator.gen_z."), key)
            # rows (outputs) are reordered; weight_v lives on the input side and stays
            out[f"linear.{leaf}"] = value if leaf == "weight_v" else _hwc_rows_to_chw(value)
        elif key.startswith("generator.bn."):
            out[f"bn.{_leaf(key.removeprefix('generator.bn.'), key)}"] = value
        elif key.startswith("generator.conv_to_rgb."):
            out[f"conv_out.{_leaf(key.removeprefix('generator.conv_to_rgb.'), key)}"] = value
        elif m := _LAYER.match(key):
            index, rest = int(m[1]), m[2]
            if index == attn_index:
                if rest == "gamma":
                    out["attention.gamma"] = value
                    continue
                part, _, tail = rest.partition(".")
                if part not in _ATTENTION_PART:
                    raise KeyError(f"biggan-pretrained: unexpected key {key!r}")
                out[f"attention.{_ATTENTION_PART[part]}.{_leaf(tail, key)}"] = value
                continue
            block = index - 1 if index > attn_index else index
            pm = _BLOCK_PART.match(rest)
            if pm is None:
                raise KeyError(f"biggan-pretrained: unexpected key {key!r}")
            kind, k, tail = pm[1], int(pm[2]), pm[3]
            out[f"blocks.{block}.{kind}{k + 1}.{_leaf(tail, key)}"] = value
        else:
            raise KeyError(f"biggan-pretrained: unexpected key {key!r}")
    return out
