"""Reinforcement learning: residual (SimBa-style) policy/value networks and agents.

Light on import (torch and numpy only): gymnasium and stable_baselines3 are imported inside the
functions that run environments or train (see :mod:`reszoo.rl.rollout`, :mod:`reszoo.rl.sb3`).

Registry entries of this domain carry in ``preprocess``: ``observation_shape`` and
``observation_dtype``; in ``runtime``: ``env_id``; in ``extra``: the spaces, the evaluation
protocol and the plain twin's result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .agents import Agent, ObservationError, SpaceMismatchError, as_observation_batch
from .models import (
    DiscreteActorCritic,
    MLPActorCritic,
    ImpalaActorCritic,
    ImpalaCNN,
    QNetwork,
    ResMLP,
    ResMLPBlock,
    RunningNorm,
    SquashedGaussianActorCritic,
)

__all__ = [
    "ARCHS",
    "CONVERTERS",
    "Agent",
    "DiscreteActorCritic",
    "ImpalaActorCritic",
    "ImpalaCNN",
    "MLPActorCritic",
    "ObservationError",
    "QNetwork",
    "ResMLP",
    "ResMLPBlock",
    "RunningNorm",
    "SpaceMismatchError",
    "SquashedGaussianActorCritic",
    "build_preprocess",
    "predict",
    "prepare",
    "resmlp_discrete",
    "resmlp_sac",
    "impala_cnn",
    "sb3_mlp_discrete",
]


def resmlp_discrete(obs_dim: int, n_actions: int, width: int = 64, depth: int = 2, residual: bool = True,
                    **kwargs: Any) -> DiscreteActorCritic:
    """PPO agent: SimBa actor and critic trunks, categorical policy and value heads."""
    return DiscreteActorCritic(obs_dim, n_actions, width=width, depth=depth, residual=residual, **kwargs)


def resmlp_sac(obs_dim: int, action_dim: int, width: int = 128, depth: int = 1, residual: bool = True,
               **kwargs: Any) -> SquashedGaussianActorCritic:
    """SAC agent: SimBa actor, squashed Gaussian head, twin Q over ``[obs, action]``."""
    return SquashedGaussianActorCritic(obs_dim, action_dim, width=width, depth=depth, residual=residual, **kwargs)


def impala_cnn(height: int = 64, width: int = 64, in_channels: int = 3, n_actions: int = 15, residual: bool = True,
               **kwargs: Any) -> ImpalaActorCritic:
    """IMPALA residual CNN (channels 16/32/32, 256 units) with policy and value heads (Procgen: 64x64x3, 15 actions)."""
    return ImpalaActorCritic(height, width, in_channels, n_actions, residual=residual, **kwargs)


def sb3_mlp_discrete(obs_dim: int, n_actions: int, net_arch: list[int] | tuple[int, ...] = (64, 64), activation: str = "tanh",
                     residual: bool = False) -> MLPActorCritic:
    """Stable-Baselines3's discrete MlpPolicy (to load RL-Zoo agents). It has no skips: ``residual=True`` is an error."""
    if residual:
        raise ValueError("sb3-mlp-discrete is SB3's plain MLP policy and has no residual form; use resmlp-discrete")
    return MLPActorCritic(obs_dim, n_actions, tuple(net_arch), activation)


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resmlp-discrete": resmlp_discrete,
    "resmlp-sac": resmlp_sac,
    "impala-cnn": impala_cnn,
    "sb3-mlp-discrete": sb3_mlp_discrete,
}


# Upstream layouts onto reszoo's (strict: leftover or missing keys are errors).
def _sb3_mlp_policy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    from .sb3_convert import convert_sb3_mlp_policy

    return convert_sb3_mlp_policy(state)


CONVERTERS: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {"sb3-mlp-policy": _sb3_mlp_policy}


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


def _parse_observation(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise ObservationError(f"could not read observation {text!r}: give numbers separated by commas") from exc


@torch.no_grad()
def predict(model: nn.Module, inputs: list[str], top_k: int = 5) -> list[dict]:
    """For ``reszoo predict NAME OBS...``: each input is one observation, numbers separated by commas.

    Discrete agents: the greedy action, its probability, the ``top_k`` actions with
    probabilities, and the state value. Continuous agents: the deterministic action and the
    twin Q estimates of it.
    """
    if not isinstance(model, Agent):
        raise TypeError(f"reszoo.rl.predict needs an rl agent, got {type(model).__name__}")
    rows: list[dict] = []
    for text in inputs:
        obs = _parse_observation(text)
        batch, _ = model._as_batch(obs)
        if isinstance(model, DiscreteActorCritic | ImpalaActorCritic | MLPActorCritic):
            logits, value = model(batch)
            probs = logits.softmax(-1)[0]
            k = min(top_k, probs.numel())
            top = probs.topk(k)
            rows.append({
                "input": text,
                "action": int(top.indices[0]),
                "probability": round(float(top.values[0]), 4),
                "top": " ".join(f"{int(i)}:{float(p):.4f}" for p, i in zip(top.values, top.indices)),
                "value": round(float(value[0]), 4),
            })
        elif isinstance(model, SquashedGaussianActorCritic):
            action = model(batch)
            q = model.q_values(batch, action)[:, 0]
            rows.append({
                "input": text,
                "action": ",".join(f"{float(a):.4f}" for a in action[0]),
                "q": ",".join(f"{float(v):.4f}" for v in q),
            })
        else:  # pragma: no cover - every agent class is handled above
            raise TypeError(f"no predict rule for {type(model).__name__}")
    return rows


def prepare(model: nn.Module, entry: Any, *, mirror: object = None) -> None:
    """Attach the environment id so ``play``/``evaluate`` know where the agent belongs."""
    model.env_id = entry.runtime.get("env_id")
