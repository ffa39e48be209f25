"""Running an agent in a Gymnasium environment: evaluation episodes and optional frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError
from .agents import Agent

__all__ = ["run_episodes", "make_env"]


def make_env(env_id: str, render_mode: str | None = None) -> Any:
    """``gymnasium.make(env_id)``, with a clear error where gymnasium or the environment is missing."""
    try:
        import gymnasium as gym
    except ImportError as exc:  # pragma: no cover - gymnasium is in the rl extra
        raise ImportError("reszoo's rl domain needs gymnasium: pip install 'reszoo[rl]'") from exc
    try:
        return gym.make(env_id, render_mode=render_mode)
    except gym.error.Error as exc:
        raise ValueError(f"could not create environment {env_id!r}: {exc}") from exc


def run_episodes(agent: Agent, env_id: str, episodes: int, seed: int, *, deterministic: bool = True,
                 on_frame: Callable[[np.ndarray], None] | None = None, max_steps: int | None = None) -> list[float]:
    """Returns of ``episodes`` episodes; episode ``i`` starts from ``env.reset(seed=seed + i)``.

    ``on_frame`` receives every ``rgb_array`` frame (the environment is created with that render
    mode only when it is given). The environment's spaces are checked against the agent first.
    """
    for label, value in (("episodes", episodes), ("max_steps", max_steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{label} must be a whole number >= 1, got {value!r}")
    env = make_env(env_id, render_mode="rgb_array" if on_frame is not None else None)
    try:
        agent.check_env(env)
        returns = []
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            if on_frame is not None:
                on_frame(env.render())
            total, steps, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(agent.act(obs, deterministic=deterministic))
                total += float(reward)
                steps += 1
                if on_frame is not None:
                    on_frame(env.render())
                done = terminated or truncated or (max_steps is not None and steps >= max_steps)
            returns.append(total)
        return returns
    finally:
        env.close()
