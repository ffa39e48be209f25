"""Raw observations to model input, and what a loaded agent carries (its environment id).

Registry entries of this domain carry in ``preprocess``: ``observation_shape`` and
``observation_dtype``; in ``runtime``: ``env_id``. Normalisation is inside the model (a running mean and variance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .agents import as_observation_batch

__all__ = ["build_preprocess", "prepare"]


def _dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float64": torch.float64, "uint8": torch.uint8}
    if name not in dtypes:
        raise ValueError(f"unknown observation_dtype {name!r}; expected one of {sorted(dtypes)}")
    return dtypes[name]


def build_preprocess(entry: Any) -> Callable[[Any], Tensor]:
    """Raw observation(s) (numpy, list or tensor) -> checked batch tensor ``(N, *observation_shape)``.

    The agent's own ``act`` applies the same checks; this callable is what ``model.preprocess``
    exposes (e.g. to feed ``model(obs)`` directly). Normalisation is inside the model.
    """
    pre = dict(entry.preprocess or {})
    shape = tuple(pre.get("observation_shape") or ())
    if not shape:
        raise ValueError(f"registry entry {entry.name!r}: preprocess.observation_shape is required for rl entries")
    dtype = _dtype(pre.get("observation_dtype", "float32"))

    def preprocess(obs: Any) -> Tensor:
        return as_observation_batch(obs, shape, dtype, owner=repr(entry.name))[0]

    return preprocess


def prepare(model: nn.Module, entry: Any, *, mirror: object = None) -> None:
    """Attach the environment id so ``play``/``evaluate`` know where the agent belongs."""
    model.env_id = entry.runtime.get("env_id")
