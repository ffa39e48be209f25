"""SpeechBrain's ECAPA-TDNN checkpoint layout -> reszoo's :class:`~reszoo.speech.models.ECAPATDNN`.

SpeechBrain wraps every convolution and batch norm (``conv.conv.*``, ``norm.norm.*``) and keeps
the stem in ``blocks.0``; reszoo names the modules for what they are:

==========================================  =========================================
SpeechBrain (``embedding_model.ckpt``)       reszoo
==========================================  =========================================
``blocks.0.conv.conv.*`` / ``.norm.norm.*``  ``stem.conv.*`` / ``stem.bn.*``
``blocks.{i}.tdnn1|tdnn2`` (i >= 1)          ``blocks.{i-1}.tdnn1|tdnn2``
``blocks.{i}.res2net_block.blocks.{j}``      ``blocks.{i-1}.res2net.convs.{j}``
``blocks.{i}.se_block.conv1|conv2.conv.*``   ``blocks.{i-1}.se.reduce|expand.*``
``blocks.{i}.shortcut.conv.*``               ``blocks.{i-1}.shortcut.*``
``mfa``                                      ``mfa``
``asp.tdnn`` / ``asp.conv.conv.*``           ``pool.tdnn`` / ``pool.attention.*``
``asp_bn.norm.*``                            ``pool_bn.*``
``fc.conv.weight (E, 2C, 1)``                ``embedding.weight (E, 2C)`` (a linear layer)
==========================================  =========================================

The conversion is strict: a key no rule knows, or a checkpoint without stem, MFA, pooling or
embedding, is an error naming the keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import Tensor

from .._text import listing
from ..domains import Registry
from ..errors import ConversionError

__all__ = ["ConversionError", "convert_speechbrain_ecapa", "converters"]

converters: Registry[Callable[[dict[str, Tensor]], dict[str, Tensor]]] = Registry("converter")


# (pattern on the SpeechBrain key, replacement); the TDNN tail ``conv.conv.X`` / ``norm.norm.X``
# is rewritten separately by _tdnn_tail.
_TDNN_TAIL = r"(?P<tail>conv\.conv\.(weight|bias)|norm\.norm\.(weight|bias|running_mean|running_var|num_batches_tracked))"
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^blocks\.0\.{_TDNN_TAIL}$"), "stem.{tail}"),
    (re.compile(rf"^blocks\.(?P<i>[1-9]\d*)\.(?P<t>tdnn1|tdnn2)\.{_TDNN_TAIL}$"), "blocks.{i-1}.{t}.{tail}"),
    (re.compile(rf"^blocks\.(?P<i>[1-9]\d*)\.res2net_block\.blocks\.(?P<j>\d+)\.{_TDNN_TAIL}$"), "blocks.{i-1}.res2net.convs.{j}.{tail}"),
    (re.compile(r"^blocks\.(?P<i>[1-9]\d*)\.se_block\.conv1\.conv\.(?P<p>weight|bias)$"), "blocks.{i-1}.se.reduce.{p}"),
    (re.compile(r"^blocks\.(?P<i>[1-9]\d*)\.se_block\.conv2\.conv\.(?P<p>weight|bias)$"), "blocks.{i-1}.se.expand.{p}"),
    (re.compile(r"^blocks\.(?P<i>[1-9]\d*)\.shortcut\.conv\.(?P<p>weight|bias)$"), "blocks.{i-1}.shortcut.{p}"),
    (re.compile(rf"^mfa\.{_TDNN_TAIL}$"), "mfa.{tail}"),
    (re.compile(rf"^asp\.tdnn\.{_TDNN_TAIL}$"), "pool.tdnn.{tail}"),
    (re.compile(r"^asp\.conv\.conv\.(?P<p>weight|bias)$"), "pool.attention.{p}"),
    (re.compile(rf"^asp_bn\.norm\.(?P<p>{_BN})$"), "pool_bn.{p}"),
    (re.compile(r"^fc\.conv\.(?P<p>weight|bias)$"), "embedding.{p}"),
]
_REQUIRED = ("stem.conv.weight", "mfa.conv.weight", "pool.tdnn.conv.weight", "pool.attention.weight",
             "pool_bn.running_mean", "embedding.weight")


def _tdnn_tail(tail: str) -> str:
    return tail.replace("conv.conv.", "conv.").replace("norm.norm.", "bn.")


def _rename(key: str) -> str | None:
    for pattern, template in _RULES:
        m = pattern.match(key)
        if m is None:
            continue
        groups = m.groupdict()
        out = template
        if "i" in groups:
            out = out.replace("{i-1}", str(int(groups["i"]) - 1))
        for name in ("j", "t", "p"):
            if groups.get(name) is not None:
                out = out.replace("{" + name + "}", groups[name])
        if groups.get("tail") is not None:
            out = out.replace("{tail}", _tdnn_tail(groups["tail"]))
        return out
    return None


@converters.register("speechbrain-ecapa")
def convert_speechbrain_ecapa(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A SpeechBrain ``ECAPA_TDNN`` state dict (``embedding_model.ckpt``) in reszoo's layout."""
    # Checkpoints saved from a DataParallel/DDP-wrapped module carry a "module." prefix.
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        new = _rename(key)
        if new is None:
            unknown.append(key)
            continue
        if new == "embedding.weight":
            if value.dim() != 3 or value.shape[-1] != 1:
                raise ConversionError(f"fc.conv.weight: expected a (out, in, 1) 1x1 convolution, got {tuple(value.shape)}")
            value = value[..., 0]
        out[new] = value
    if unknown:
        raise ConversionError(f"speechbrain-ecapa: keys with no reszoo counterpart: {listing(unknown, 8)}")
    missing = [k for k in _REQUIRED if k not in out]
    if missing:
        raise ConversionError(f"speechbrain-ecapa: not an ECAPA_TDNN checkpoint, missing {', '.join(missing)} "
                              f"(after renaming; the checkpoint had {len(state_dict)} keys)")
    return out
