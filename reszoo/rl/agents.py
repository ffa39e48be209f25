"""The agent interface shared by every rl model: ``act``, input checks, environment checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError

__all__ = ["Agent", "CategoricalAgent", "ObservationError", "SpaceMismatchError", "as_observation_batch"]


class ObservationError(InputError):
    """An observation of the wrong shape or dtype, or with NaN/inf values."""


class SpaceMismatchError(InputError):
    """An environment whose observation or action space does not match the agent's."""


class Agent(nn.Module):
    """Base class of reszoo agents.

    Subclasses implement ``_act(obs: Tensor (N, *observation_shape), deterministic) -> Tensor`` on a
    checked batch; :meth:`act` handles single observations, numpy/tensor input and validation.
    A discrete agent has ``n_actions``; a continuous one ``action_shape`` and
    ``action_low``/``action_high`` buffers.
    """

    kind: str = "discrete"  # "discrete" | "continuous"
    # The fast path (reszoo.optimize) keeps agents in float32 and eager: their networks are a few
    # narrow layers, where casts and graph launches cost more than bf16 or a compiled graph saves,
    # and a greedy action must not flip between two near-equal logits.
    fast_methods: tuple[str, ...] = ()

    def __init__(self, observation_shape: tuple[int, ...], observation_dtype: torch.dtype = torch.float32,
                 n_actions: int | None = None, action_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.observation_dtype = observation_dtype
        self.n_actions = n_actions
        self.action_shape = action_shape

    # ------------------------------------------------------------------ input handling

    def _as_batch(self, obs: Any) -> tuple[Tensor, bool]:
        """Validate ``obs`` and return ``(batch tensor on the model's device, was_single)``."""
        t, single = as_observation_batch(obs, self.observation_shape, self.observation_dtype, owner=type(self).__name__)
        param = next(self.parameters(), None)
        if param is not None:
            t = t.to(param.device)
            if t.is_floating_point():
                t = t.to(param.dtype)
        return t, single

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = True) -> Any:
        """The action for one observation, or actions for a batch ``(N, *observation_shape)``.

        Accepts numpy arrays, lists and tensors. Returns, for one observation, an ``int``
        (discrete) or a float32 numpy array of ``action_shape`` (continuous); for a batch, a numpy
        array of ``N`` such actions. Tensor input gives tensor output on the same device.
        """
        batch, single = self._as_batch(obs)
        actions = self._act(batch, deterministic)
        if isinstance(obs, Tensor):
            out = actions.to(obs.device)
            return out[0] if single else out
        out_np = actions.cpu().numpy()
        if self.kind == "discrete":
            out_np = out_np.astype(np.int64)
            return int(out_np[0]) if single else out_np
        out_np = out_np.astype(np.float32)
        return out_np[0] if single else out_np

    def _act(self, obs: Tensor, deterministic: bool) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ environments

    def check_env(self, env: Any) -> None:
        """Raise :class:`SpaceMismatchError` unless ``env``'s spaces are the ones this agent was built for."""
        from gymnasium import spaces  # heavy: only when an environment is involved

        obs_space, act_space = env.observation_space, env.action_space
        name = getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
        problems = []
        if not isinstance(obs_space, spaces.Box) or tuple(obs_space.shape) != self.observation_shape:
            problems.append(f"observation space {obs_space} (agent expects a Box of shape {self.observation_shape})")
        if self.kind == "discrete":
            if not isinstance(act_space, spaces.Discrete) or int(act_space.n) != self.n_actions:
                problems.append(f"action space {act_space} (agent expects Discrete({self.n_actions}))")
        else:
            ok = isinstance(act_space, spaces.Box) and tuple(act_space.shape) == tuple(self.action_shape or ())
            if ok:
                low = torch.as_tensor(act_space.low, dtype=torch.float32)
                high = torch.as_tensor(act_space.high, dtype=torch.float32)
                ok = torch.allclose(low, self.action_low.float().cpu()) and torch.allclose(high, self.action_high.float().cpu())
            if not ok:
                problems.append(
                    f"action space {act_space} (agent expects a Box of shape {self.action_shape} with low "
                    f"{self.action_low.tolist()} and high {self.action_high.tolist()})"
                )
        if problems:
            raise SpaceMismatchError(f"environment {name!r} does not match {type(self).__name__}: " + "; ".join(problems))


class CategoricalAgent(Agent):
    """A discrete agent whose policy is a categorical distribution over ``n_actions``: subclasses give
    :meth:`policy_logits`; the action is its argmax (deterministic) or a sample."""

    kind = "discrete"

    def policy_logits(self, obs: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``(N, n_actions)`` logits of the policy for a checked batch of observations."""
        raise NotImplementedError

    def _act(self, obs: Tensor, deterministic: bool) -> Tensor:
        logits = self.policy_logits(obs)
        if deterministic:
            return logits.argmax(-1)
        return torch.distributions.Categorical(logits=logits).sample()


def as_observation_batch(obs: Any, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                         owner: str = "agent") -> tuple[Tensor, bool]:
    """Check one observation of ``shape`` or a batch ``(N, *shape)`` and return ``(batch, was_single)``.

    Raises :class:`ObservationError` for a wrong shape, a non-numeric dtype (uint8 is required for
    pixel agents, ``dtype=torch.uint8``), or NaN/inf values.
    """
    if isinstance(obs, Tensor):
        t = obs
    else:
        try:
            arr = np.asarray(obs)
        except Exception as exc:  # ragged lists and the like
            raise ObservationError(f"could not read the observation as an array: {exc}") from exc
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise ObservationError(f"could not read the observation as a numeric array (dtype {arr.dtype}, shape {arr.shape})")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        single = True
        t = t.unsqueeze(0)
    elif t.dim() == len(shape) + 1 and tuple(t.shape[1:]) == shape:
        single = False
    else:
        raise ObservationError(
            f"{owner} expects an observation of shape {shape} or a batch (N, {', '.join(map(str, shape))}), "
            f"got shape {tuple(t.shape)}"
        )
    if dtype == torch.uint8:
        if t.dtype != torch.uint8:
            raise ObservationError(f"{owner} expects uint8 pixel observations, got dtype {t.dtype}")
        return t, single
    if t.dtype == torch.bool or t.dtype.is_complex or not (t.dtype.is_floating_point or _is_int(t.dtype)):
        raise ObservationError(f"{owner} expects real-valued (float) observations, got dtype {t.dtype}")
    t = t.to(dtype)
    finite = torch.isfinite(t)
    if not finite.all():
        first = (~finite).nonzero()[0].tolist()
        raise ObservationError(f"observation contains NaN or infinite values (first at index {first})")
    return t, single


def _is_int(dtype: torch.dtype) -> bool:
    return dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
