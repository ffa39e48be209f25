"""Stable-Baselines3 hosting reszoo's networks: PPO and SAC train the very modules reszoo saves.

SB3 keeps its algorithms (rollouts, GAE, clipped objective, replay, entropy tuning, target
networks) and calls reszoo's modules where it would call its own MLPs:

- PPO: :class:`ReszooActorCriticPolicy` replaces ``mlp_extractor`` with the agent's normaliser +
  actor/critic trunks and ``action_net``/``value_net`` with the agent's heads.
- SAC: :class:`ReszooSACPolicy` replaces the actor's ``latent_pi``/``mu``/``log_std`` with the
  agent's, and each critic ``qf{i}`` with a reszoo :class:`~reszoo.rl.models.QNetwork` whose
  residual encoder reads ``[normalised obs, action]`` together (SB3 already concatenates the two
  before its Q MLP, so this is faithful). The target critics are deep copies of the Q networks
  reading the one normaliser, which the critics hold unregistered (see :class:`_QFromConcat`).

The observation normaliser changes only in :class:`ObsNormCallback` (SB3 has no hook for
statistics kept inside the network): after each PPO rollout's update, from that rollout's
observations (so a rollout's log-probabilities and values stay consistent with the network that
is trained on them), and after every SAC environment step.

After ``learn``, ``policy.agent`` is the trained reszoo agent (``state_dict()`` is what gets saved).
This module imports stable_baselines3 and gymnasium: import it only to train.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.sac.policies import SACPolicy
from torch import Tensor, nn

from .models import DiscreteActorCritic, QNetwork, RunningNorm, SquashedGaussianActorCritic

__all__ = ["ReszooActorCriticPolicy", "ReszooSACPolicy", "ObsNormCallback", "EpisodeLogCallback"]


class _PPOLatents(nn.Module):
    """SB3's ``mlp_extractor`` interface over a reszoo discrete agent."""

    def __init__(self, agent: DiscreteActorCritic) -> None:
        super().__init__()
        self.agent = agent
        self.latent_dim_pi = agent.policy_head.in_features
        self.latent_dim_vf = agent.value_head.in_features

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        z = self.agent.obs_norm(features)
        return self.agent.actor(z), self.agent.critic(z)

    def forward_actor(self, features: Tensor) -> Tensor:
        return self.agent.actor(self.agent.obs_norm(features))

    def forward_critic(self, features: Tensor) -> Tensor:
        return self.agent.critic(self.agent.obs_norm(features))


class ReszooActorCriticPolicy(ActorCriticPolicy):
    """SB3 ``ActorCriticPolicy`` whose networks are a :class:`DiscreteActorCritic`.

    ``agent_kwargs`` (via ``policy_kwargs``) go to the agent builder (width, depth, residual, ...).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 agent_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"ReszooActorCriticPolicy supports Discrete action spaces, got {action_space}")
        self.agent_kwargs = dict(agent_kwargs or {})
        kwargs.setdefault("ortho_init", False)  # reszoo's modules initialise themselves
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        obs_dim = int(np.prod(self.observation_space.shape))
        self.agent = DiscreteActorCritic(obs_dim, int(self.action_space.n), **self.agent_kwargs)
        self.mlp_extractor = _PPOLatents(self.agent)
        self.action_net = self.agent.policy_head
        self.value_net = self.agent.value_head
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "agent_kwargs": self.agent_kwargs}


class _QFromConcat(nn.Module):
    """SB3 critics call ``qf(cat([obs, action]))``: split, normalise obs, call the reszoo Q network.

    The normaliser is the agent's, held *unregistered* (not a submodule): SAC copies every
    ``running_*`` tensor of the critic onto the target critic's after each gradient step
    (``polyak_update(..., tau=1.0)``, meant for BatchNorm). With one normaliser shared by both,
    that copy is ``x.mul_(0).add_(x)`` on the same tensor and zeroed its statistics every step,
    so the networks saw observations blown up to the ±clip bounds. The agent owns (saves, moves)
    the normaliser; the critics only read it.
    """

    def __init__(self, norm: RunningNorm, q: QNetwork, obs_dim: int) -> None:
        super().__init__()
        self.q, self.obs_dim = q, obs_dim
        self._norm = (norm,)  # a tuple keeps it out of _modules, state_dict() and SB3's running_* copy

    @property
    def norm(self) -> RunningNorm:
        return self._norm[0]

    def forward(self, obs_action: Tensor) -> Tensor:
        obs, action = obs_action[:, : self.obs_dim], obs_action[:, self.obs_dim :]
        return self.q(self.norm(obs), action)


class ReszooSACPolicy(SACPolicy):
    """SB3 ``SACPolicy`` whose actor and critics are a :class:`SquashedGaussianActorCritic`."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 agent_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"ReszooSACPolicy supports Box action spaces, got {action_space}")
        self.agent_kwargs = dict(agent_kwargs or {})
        kwargs["net_arch"] = []  # SB3 builds only the output layers, which are then replaced
        if "n_critics" in self.agent_kwargs:
            kwargs["n_critics"] = self.agent_kwargs["n_critics"]
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _install_critics(self, critic: nn.Module, q_networks: nn.ModuleList) -> None:
        obs_dim = self.agent.obs_norm.dim
        critic.q_networks = []
        for i, q in enumerate(q_networks):
            wrapped = _QFromConcat(self.agent.obs_norm, q, obs_dim)
            setattr(critic, f"qf{i}", wrapped)
            critic.q_networks.append(wrapped)

    def _build(self, lr_schedule: Any) -> None:
        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        bounds = dict(action_low=self.action_space.low.reshape(-1).tolist(), action_high=self.action_space.high.reshape(-1).tolist())
        agent = SquashedGaussianActorCritic(obs_dim, act_dim, **{**self.agent_kwargs, **bounds})
        self.agent = agent

        self.actor = self.make_actor()
        self.actor.latent_pi = nn.Sequential(agent.obs_norm, agent.actor)
        self.actor.mu = agent.mu
        self.actor.log_std = agent.log_std
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

        self.critic = self.make_critic(features_extractor=None)
        self._install_critics(self.critic, agent.critics)
        self.critic_target = self.make_critic(features_extractor=None)
        self._install_critics(self.critic_target, copy.deepcopy(agent.critics))
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)
        self.critic_target.set_training_mode(False)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "agent_kwargs": self.agent_kwargs}


class ObsNormCallback(BaseCallback):
    """Feeds freshly collected observations into the agent's :class:`RunningNorm`.

    ``per_step=False`` (PPO): observations of a rollout are merged when the next rollout starts,
    i.e. after the policy update on that rollout. ``per_step=True`` (SAC): after every step.
    """

    def __init__(self, norm: RunningNorm, per_step: bool) -> None:
        super().__init__()
        self.norm, self.per_step = norm, per_step
        self._pending: list[np.ndarray] = []

    def _on_training_start(self) -> None:
        # The first observations (from reset) count too for SAC; PPO's first rollout runs with
        # identity statistics rather than ones from a handful of near-identical reset states.
        obs = getattr(self.model, "_last_obs", None)
        if obs is not None and self.per_step:
            self._pending.append(np.asarray(obs, dtype=np.float64).reshape(len(obs), -1))
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.norm.update(torch.from_numpy(np.concatenate(self._pending)))
            self._pending.clear()

    def _on_rollout_start(self) -> None:
        if not self.per_step:
            self._flush()

    def _on_step(self) -> bool:
        obs = np.asarray(self.locals["new_obs"], dtype=np.float64)
        self._pending.append(obs.reshape(len(obs), -1))
        if self.per_step:
            self._flush()
        return True


class EpisodeLogCallback(BaseCallback):
    """Records ``(timestep, episode return)`` of every finished training episode (Monitor infos)."""

    def __init__(self, log_every: int = 0, log_fn: Any = print) -> None:
        super().__init__()
        self.curve: list[tuple[int, float]] = []
        self.log_every, self.log_fn = log_every, log_fn
        self._next_log = log_every

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.curve.append((int(self.num_timesteps), float(info["episode"]["r"])))
        if self.log_every and self.num_timesteps >= self._next_log and self.curve:
            recent = [r for _, r in self.curve[-20:]]
            self.log_fn(f"  step {self.num_timesteps:>8d}  episodes {len(self.curve):>5d}  mean return (last {len(recent)}) {np.mean(recent):9.2f}")
            self._next_log += self.log_every
        return True
