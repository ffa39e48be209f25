"""What ``reszoo predict NAME OBS...`` prints: each agent's action for each observation.

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from typing import Any


def _parse_observation(text: str) -> list[float]:
    from .agents import ObservationError

    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise ObservationError(f"could not read observation {text!r}: give numbers separated by commas") from exc


def predict(model: Any, inputs: list[str], top_k: int = 5) -> list[dict]:
    """For ``reszoo predict NAME OBS...``: each input is one observation, numbers separated by commas.

    Discrete agents: the greedy action, its probability, the ``top_k`` actions with
    probabilities, and the state value. Continuous agents: the deterministic action and the
    twin Q estimates of it.
    """
    import torch

    from .agents import Agent
    from .models import DiscreteActorCritic, ImpalaActorCritic, MLPActorCritic, SquashedGaussianActorCritic

    if not isinstance(model, Agent):
        raise TypeError(f"reszoo.rl.predict needs an rl agent, got {type(model).__name__}")
    rows: list[dict] = []
    with torch.no_grad():
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
