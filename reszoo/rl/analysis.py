"""What ``reszoo analyze`` measures on an agent: its policy, on observations of its own episodes.

An agent is not a classifier and has no labelled data, so the diagnostics look at the *policy*
(the modules that choose the action; a critic or value head is left out) and score it against the
intact agent:

- inputs: observations from ``--data`` (an ``.npz`` holding ``observations`` or ``obs``, shape
  ``(N, *observation_shape)``), or from the agent's own deterministic episodes in its environment
  (``agent.env_id``; episodes reset with seeds ``seed``, ``seed + 1``, ...);
- targets: the intact agent's deterministic actions;
- lesion metric: agreement with those actions (%): the same greedy action (discrete), or every
  action dimension within 5 % of its range (continuous);
- gradient-flow loss: the cross-entropy of the policy's logits against the greedy actions
  (discrete), or a fixed random projection of the action (continuous, whose own action is no loss).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..analysis.core import AnalysisError, projection_loss
from ..analysis.data import AnalysisData
from ..analysis.lesions import accuracy

__all__ = ["ACTION_TOLERANCE", "Policy", "analysis_data"]

ACTION_TOLERANCE = 0.05  # of each action dimension's range: "the same action" for a continuous agent


class Policy(nn.Module):
    """The agent's action path: ``obs -> logits`` (discrete) or ``obs -> deterministic action``
    (continuous). Only the agent's children that path calls are submodules, so the analysis sees
    the policy's blocks and not the critic's (the agent itself is kept outside the module tree)."""

    def __init__(self, agent: nn.Module, example: Tensor) -> None:
        super().__init__()
        self._agent = (agent,)
        self.kind = agent.kind
        called: set[str] = set()
        hooks = [child.register_forward_hook(lambda *_, name=name: called.add(name))
                 for name, child in agent.named_children()]
        try:
            with torch.no_grad():
                self.forward(example[:1])
        finally:
            for h in hooks:
                h.remove()
        for name, child in agent.named_children():
            if name in called:
                self.add_module(name, child)

    def forward(self, obs: Tensor) -> Tensor:
        agent = self._agent[0]
        return agent.policy_logits(obs) if self.kind == "discrete" else agent(obs)


def _observations(agent: nn.Module, path: str | os.PathLike[str] | None, n: int, seed: int) -> tuple[Tensor, str]:
    if path is not None:
        path = Path(path)
        if not path.is_file() or path.suffix != ".npz":
            raise AnalysisError(f"--data {path}: an agent reads an .npz file of observations")
        with np.load(path, allow_pickle=False) as archive:
            key = next((k for k in ("observations", "obs") if k in archive.files), None)
            if key is None:
                raise AnalysisError(f"--data {path}: holds {sorted(archive.files)}; expected an 'observations' or 'obs' array")
            obs = archive[key]
        if tuple(obs.shape[1:]) != tuple(agent.observation_shape) or len(obs) == 0:
            raise AnalysisError(f"--data {path}: observations of shape {tuple(obs.shape)}; this agent reads "
                                f"(N, {', '.join(map(str, agent.observation_shape))})")
        idx = np.sort(np.random.default_rng(seed).choice(len(obs), size=min(n, len(obs)), replace=False))
        return torch.as_tensor(obs[idx], dtype=agent.observation_dtype), f"{path} ({len(idx)} of {len(obs)} observations)"
    env_id = getattr(agent, "env_id", None)
    if not env_id:
        raise AnalysisError("this agent names no environment (runtime env_id): pass --data with an .npz of observations")
    from .rollout import make_env

    env = make_env(env_id)
    try:
        agent.check_env(env)
        rows, episode = [], 0
        while len(rows) < n:
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done and len(rows) < n:
                rows.append(np.asarray(obs))
                obs, _, terminated, truncated, _ = env.step(agent.act(obs, deterministic=True))
                done = terminated or truncated
            episode += 1
    finally:
        env.close()
    return (torch.as_tensor(np.stack(rows), dtype=agent.observation_dtype),
            f"{env_id}: {len(rows)} steps of the agent's own deterministic episodes (seeds {seed}..{seed + episode - 1})")


def _within(agent: nn.Module) -> Any:
    span = (agent.action_high - agent.action_low).float()

    def metric(actions: Tensor, reference: Tensor) -> float:
        close = ((actions - reference.to(actions)).abs() <= ACTION_TOLERANCE * span.to(actions)).flatten(1).all(1)
        return 100.0 * int(close.sum()) / len(close)

    return metric


def analysis_data(model: nn.Module, path: str | os.PathLike[str] | None, *, limit: int | None = None,
                  seed: int = 0) -> AnalysisData:
    """Observations, the intact agent's actions, and how to score the policy (see the module doc)."""
    obs, source = _observations(model, path, limit or 512, seed)
    policy = Policy(model, obs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = policy(obs)
    finally:
        model.train(was_training)
    if model.kind == "discrete":
        return AnalysisData(obs, out.argmax(-1), False, source, metric=accuracy,
                            metric_name="agreement with the intact agent's greedy actions (%)", module=policy)
    return AnalysisData(obs, out, False, source, metric=_within(model),
                        metric_name=f"actions within {ACTION_TOLERANCE:.0%} of the range of the intact agent's (%)",
                        loss_fn=projection_loss(seed), module=policy)
