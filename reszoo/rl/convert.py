"""Stable-Baselines3 / RL-Zoo checkpoints onto reszoo's layouts (no stable_baselines3 import needed).

An SB3 ``.zip`` holds ``policy.pth`` (a plain state dict) next to pickled data; only
``policy.pth`` is read, with ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Callable

import torch
from torch import Tensor

from .._text import listing
from ..domains import Registry

__all__ = ["convert_sb3_mlp_policy", "converters", "read_sb3_zip"]

# Upstream layouts onto reszoo's (strict: leftover or missing keys are errors).
converters: Registry[Callable[[dict[str, Tensor]], dict[str, Tensor]]] = Registry("converter")

_RENAMES = (
    (re.compile(r"^mlp_extractor\.policy_net\.(\d+)\.(weight|bias)$"), r"actor.\1.\2"),
    (re.compile(r"^mlp_extractor\.value_net\.(\d+)\.(weight|bias)$"), r"critic.\1.\2"),
    (re.compile(r"^action_net\.(weight|bias)$"), r"policy_head.\1"),
    (re.compile(r"^value_net\.(weight|bias)$"), r"value_head.\1"),
)


@converters.register("sb3-mlp-policy")
def convert_sb3_mlp_policy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """SB3 discrete ``MlpPolicy`` state dict -> :class:`~reszoo.rl.models.MLPActorCritic`'s.

    Strict: a key it does not know (``log_std`` of a Gaussian policy, a CNN or separate features
    extractor, ...) is an error naming the keys, never silently dropped.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            "not a Stable-Baselines3 discrete MlpPolicy (shared Flatten extractor): unexpected keys "
            + listing(unknown, 8)
        )
    for needed in ("policy_head.weight", "value_head.weight"):
        if needed not in out:
            raise ValueError(f"Stable-Baselines3 MlpPolicy state dict lacks {needed.split('.')[0].replace('policy_head', 'action_net').replace('value_head', 'value_net')}")
    return out


def read_sb3_zip(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The policy state dict inside an SB3 model ``.zip`` (``policy.pth``), read without unpickling code."""
    with zipfile.ZipFile(path) as zf:
        if "policy.pth" not in zf.namelist():
            raise ValueError(f"{path}: no policy.pth inside (files: {', '.join(zf.namelist())}); not a Stable-Baselines3 model zip")
        data = zf.read("policy.pth")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
