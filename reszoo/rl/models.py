"""Residual policy and value networks for reinforcement learning.

Architecture as data: :class:`ResMLP` is the SimBa trunk (Lee et al. 2024, "SimBa: Simplicity
Bias for Scaling Up Parameters in Deep Reinforcement Learning"): running observation
normalisation (kept outside the trunk, in the agent, so actor and critics share it), a linear
embedding, ``depth`` pre-LayerNorm residual blocks ``x + W2 relu(W1 LN(x))`` whose hidden layer is
``expansion`` (4) times wider, and a final LayerNorm. ``residual=False`` builds the plain twin:
the same layers without the additions.

Agents (what ``reszoo.load`` returns for the rl domain) derive from :class:`reszoo.rl.agents.Agent`
and add ``act(obs, deterministic=True)``; the discrete ones derive from
:class:`reszoo.rl.agents.CategoricalAgent` and give only their ``policy_logits``:

- :class:`DiscreteActorCritic`: categorical policy + state value (PPO).
- :class:`SquashedGaussianActorCritic`: tanh-squashed Gaussian actor + twin Q critics (SAC). Each
  critic's residual encoder reads observation and action *together*, so Q can be non-linear in
  the action (a Q linear in the action has its maximum on a corner of the box and fails).
- :class:`ImpalaActorCritic`: the IMPALA residual CNN (Espeholt et al. 2018) for pixels, with
  categorical policy and value heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..domains import Registry
from ..nn import ResidualBlock
from .agents import Agent, CategoricalAgent

__all__ = [
    "RunningNorm",
    "ResMLPBlock",
    "ResMLP",
    "QNetwork",
    "DiscreteActorCritic",
    "SquashedGaussianActorCritic",
    "ImpalaResidualBlock",
    "ImpalaConvSequence",
    "ImpalaCNN",
    "ImpalaActorCritic",
    "LOG_STD_MIN",
    "LOG_STD_MAX",
    "archs",
]

# Every architecture of the domain, registered where it is defined (registry entries name them in ``arch``).
archs: Registry[Callable[..., nn.Module]] = Registry("architecture")

# Stable-Baselines3's SAC bounds, so the deterministic action is the same function of the weights.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def _init_linear(layer: nn.Linear, gain: float) -> None:
    # Orthogonal init (as in SB3/openai baselines); skipped on the meta device, where
    # load_state_dict(assign=True) fills the weights and QR is not available.
    if layer.weight.is_meta:
        return
    nn.init.orthogonal_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class RunningNorm(nn.Module):
    """Running mean/variance observation normaliser (SimBa's RSNorm), clipped to ``±clip``.

    The statistics are persistent buffers, so they travel with the weights. They change only
    through :meth:`update` (called by the training loop on freshly collected observations), never
    in ``forward``: the same weights always compute the same function.
    """

    def __init__(self, dim: int, eps: float = 1e-8, clip: float = 10.0) -> None:
        super().__init__()
        self.dim, self.eps, self.clip = dim, eps, clip
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge a batch ``(N, dim)`` into the statistics (parallel Welford / Chan et al.)."""
        x = torch.as_tensor(x, dtype=torch.float64, device=self.running_mean.device).reshape(-1, self.dim)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        mean, var, count = self.running_mean.double(), self.running_var.double(), self.count
        total = count + n
        delta = batch_mean - mean
        new_mean = mean + delta * n / total
        m2 = var * count + batch_var * n + delta.square() * count * n / total
        self.running_mean.copy_(new_mean)
        self.running_var.copy_(m2 / total)
        self.count.fill_(total)

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)
        return z.clamp(-self.clip, self.clip)

    def extra_repr(self) -> str:
        return f"{self.dim}, clip={self.clip}"


class ResMLPBlock(ResidualBlock):
    """Pre-LayerNorm MLP block: ``x + fc2(relu(fc1(norm(x))))`` (plain twin: no ``x +``)."""

    def __init__(self, width: int, expansion: int = 4, residual: bool = True) -> None:
        super().__init__(residual)
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, expansion * width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(expansion * width, width)
        _init_linear(self.fc1, math.sqrt(2))
        _init_linear(self.fc2, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.join(self.fc2(self.act(self.fc1(self.norm(x)))), x)


class ResMLP(nn.Module):
    """SimBa trunk without its normaliser: ``embed -> depth x ResMLPBlock -> LayerNorm``."""

    def __init__(self, in_dim: int, width: int = 64, depth: int = 2, expansion: int = 4, residual: bool = True) -> None:
        super().__init__()
        self.in_dim, self.width, self.depth = in_dim, width, depth
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*(ResMLPBlock(width, expansion, residual) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        _init_linear(self.embed, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.blocks(self.embed(x)))


class QNetwork(nn.Module):
    """``Q(s, a)``: one residual encoder over ``[s, a]`` (action enters before the blocks)."""

    def __init__(self, obs_dim: int, action_dim: int, width: int, depth: int, residual: bool = True) -> None:
        super().__init__()
        self.encoder = ResMLP(obs_dim + action_dim, width, depth, residual=residual)
        self.head = nn.Linear(width, 1)
        _init_linear(self.head, 1.0)

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        return self.head(self.encoder(torch.cat([obs, action], dim=-1)))


class DiscreteActorCritic(CategoricalAgent):
    """Categorical policy and state value over separate SimBa trunks that share one normaliser.

    ``forward(obs)`` takes raw (unnormalised) float observations ``(N, obs_dim)`` and returns
    ``(logits (N, n_actions), value (N,))``.
    """

    def __init__(self, obs_dim: int, n_actions: int, width: int = 64, depth: int = 2, critic_width: int | None = None,
                 critic_depth: int | None = None, residual: bool = True, obs_clip: float = 10.0) -> None:
        super().__init__(observation_shape=(obs_dim,), n_actions=n_actions)
        self.obs_norm = RunningNorm(obs_dim, clip=obs_clip)
        self.actor = ResMLP(obs_dim, width, depth, residual=residual)
        self.critic = ResMLP(obs_dim, critic_width or width, critic_depth or depth, residual=residual)
        self.policy_head = nn.Linear(width, n_actions)
        self.value_head = nn.Linear(critic_width or width, 1)
        _init_linear(self.policy_head, 0.01)  # near-uniform initial policy
        _init_linear(self.value_head, 1.0)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        z = self.obs_norm(obs)
        return self.policy_head(self.actor(z)), self.value_head(self.critic(z)).squeeze(-1)

    def policy_logits(self, obs: Tensor) -> Tensor:
        return self.policy_head(self.actor(self.obs_norm(obs)))


class SquashedGaussianActorCritic(Agent):
    """SAC agent: squashed Gaussian actor and ``n_critics`` Q networks over ``[obs, action]``.

    Actions are produced in ``[-1, 1]`` (``tanh``) and mapped affinely onto the environment's box
    ``[action_low, action_high]`` (arguments, kept as persistent buffers saved with the weights).
    """

    kind = "continuous"

    def __init__(self, obs_dim: int, action_dim: int, width: int = 128, depth: int = 1, critic_width: int | None = None,
                 critic_depth: int | None = None, n_critics: int = 2, residual: bool = True, obs_clip: float = 10.0,
                 action_low: float | list[float] = -1.0, action_high: float | list[float] = 1.0) -> None:
        super().__init__(observation_shape=(obs_dim,), action_shape=(action_dim,))
        self.obs_norm = RunningNorm(obs_dim, clip=obs_clip)
        self.actor = ResMLP(obs_dim, width, depth, residual=residual)
        self.mu = nn.Linear(width, action_dim)
        self.log_std = nn.Linear(width, action_dim)
        self.critics = nn.ModuleList(
            QNetwork(obs_dim, action_dim, critic_width or width, critic_depth or depth, residual) for _ in range(n_critics)
        )
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32).expand(action_dim).clone())
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32).expand(action_dim).clone())

    def distribution_params(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clamped log-std of the Gaussian before the ``tanh`` squash."""
        h = self.actor(self.obs_norm(obs))
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def q_values(self, obs: Tensor, action: Tensor) -> Tensor:
        """``(n_critics, N)`` Q estimates; ``action`` in the environment's units."""
        z = self.obs_norm(obs)
        a = self.scale_action(action)
        return torch.stack([q(z, a).squeeze(-1) for q in self.critics])

    def scale_action(self, action: Tensor) -> Tensor:
        """Environment units onto ``[-1, 1]``."""
        return 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0

    def unscale_action(self, squashed: Tensor) -> Tensor:
        """``[-1, 1]`` onto the environment's box."""
        return self.action_low + 0.5 * (squashed + 1.0) * (self.action_high - self.action_low)

    def forward(self, obs: Tensor) -> Tensor:
        """Deterministic action in environment units."""
        return self._act(obs, deterministic=True)

    def _act(self, obs: Tensor, deterministic: bool) -> Tensor:
        mean, log_std = self.distribution_params(obs)
        pre = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return self.unscale_action(torch.tanh(pre))


# --------------------------------------------------------------------------- IMPALA CNN


class ImpalaResidualBlock(ResidualBlock):
    """``x + conv(relu(conv(relu(x))))`` with 3x3 convolutions (IMPALA's pre-activation block)."""

    def __init__(self, channels: int, residual: bool = True) -> None:
        super().__init__(residual)
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.join(self.conv1(torch.relu(self.conv0(torch.relu(x)))), x)


class ImpalaConvSequence(nn.Module):
    """conv 3x3 -> max-pool 3x3 stride 2 -> two residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0 = ImpalaResidualBlock(out_channels, residual)
        self.res1 = ImpalaResidualBlock(out_channels, residual)

    def forward(self, x: Tensor) -> Tensor:
        return self.res1(self.res0(self.pool(self.conv(x))))


class ImpalaCNN(nn.Module):
    """Three conv sequences (channels 16/32/32), relu, flatten, a ``hidden``-unit layer, relu."""

    def __init__(self, in_channels: int, height: int, width: int, channels: tuple[int, ...] = (16, 32, 32),
                 hidden: int = 256, residual: bool = True) -> None:
        super().__init__()
        seqs, c = [], in_channels
        for out in channels:
            seqs.append(ImpalaConvSequence(c, out, residual))
            c = out
        self.stages = nn.Sequential(*seqs)
        h, w = height, width
        for _ in channels:  # max-pool 3, stride 2, padding 1: ceil(n / 2)
            h, w = (h + 1) // 2, (w + 1) // 2
        self.fc = nn.Linear(c * h * w, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stages(x))
        return torch.relu(self.fc(x.flatten(1)))


class ImpalaActorCritic(CategoricalAgent):
    """IMPALA CNN with categorical policy and value heads, for ``uint8`` HxWxC frames."""

    def __init__(self, height: int, width: int, in_channels: int, n_actions: int, channels: tuple[int, ...] = (16, 32, 32),
                 hidden: int = 256, residual: bool = True) -> None:
        super().__init__(observation_shape=(height, width, in_channels), observation_dtype=torch.uint8, n_actions=n_actions)
        self.encoder = ImpalaCNN(in_channels, height, width, tuple(channels), hidden, residual)
        self.policy_head = nn.Linear(hidden, n_actions)
        self.value_head = nn.Linear(hidden, 1)
        _init_linear(self.policy_head, 0.01)
        _init_linear(self.value_head, 1.0)

    def features(self, obs: Tensor) -> Tensor:
        # Frames arrive channels-last uint8 as Gymnasium gives them; scale to [0, 1] here.
        return self.encoder(obs.permute(0, 3, 1, 2).float() / 255.0)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(obs)
        return self.policy_head(h), self.value_head(h).squeeze(-1)

    def policy_logits(self, obs: Tensor) -> Tensor:
        return self.policy_head(self.features(obs))


# --------------------------------------------------------------------------- SB3's MlpPolicy


class MLPActorCritic(CategoricalAgent):
    """Stable-Baselines3's discrete ``MlpPolicy`` (separate ``Linear-Tanh`` stacks for policy and
    value, default 64-64), so RL-Zoo checkpoints load for comparison (converter ``sb3-mlp-policy``).

    It has no skips at all: it is the plain reference, not a residual network. Observations are
    not normalised inside it (a zoo agent trained with VecNormalize needs those statistics too).
    """

    def __init__(self, obs_dim: int, n_actions: int, net_arch: tuple[int, ...] | list[int] = (64, 64),
                 activation: str = "tanh") -> None:
        super().__init__(observation_shape=(obs_dim,), n_actions=n_actions)
        acts = {"tanh": nn.Tanh, "relu": nn.ReLU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")

        def stack() -> nn.Sequential:
            layers: list[nn.Module] = []
            d = obs_dim
            for h in net_arch:
                layers += [nn.Linear(d, h), acts[activation]()]
                d = h
            return nn.Sequential(*layers)

        self.actor, self.critic = stack(), stack()
        last = net_arch[-1] if net_arch else obs_dim
        self.policy_head = nn.Linear(last, n_actions)
        self.value_head = nn.Linear(last, 1)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.policy_head(self.actor(obs)), self.value_head(self.critic(obs)).squeeze(-1)

    def policy_logits(self, obs: Tensor) -> Tensor:
        return self.policy_head(self.actor(obs))


# --------------------------------------------------------------------------- architectures


@archs.register("resmlp-discrete")
def resmlp_discrete(obs_dim: int, n_actions: int, width: int = 64, depth: int = 2, residual: bool = True,
                    **kwargs: Any) -> DiscreteActorCritic:
    """PPO agent: SimBa actor and critic trunks, categorical policy and value heads."""
    return DiscreteActorCritic(obs_dim, n_actions, width=width, depth=depth, residual=residual, **kwargs)


@archs.register("resmlp-sac")
def resmlp_sac(obs_dim: int, action_dim: int, width: int = 128, depth: int = 1, residual: bool = True,
               **kwargs: Any) -> SquashedGaussianActorCritic:
    """SAC agent: SimBa actor, squashed Gaussian head, twin Q over ``[obs, action]``."""
    return SquashedGaussianActorCritic(obs_dim, action_dim, width=width, depth=depth, residual=residual, **kwargs)


@archs.register("impala-cnn")
def impala_cnn(height: int = 64, width: int = 64, in_channels: int = 3, n_actions: int = 15, residual: bool = True,
               **kwargs: Any) -> ImpalaActorCritic:
    """IMPALA residual CNN (channels 16/32/32, 256 units) with policy and value heads (Procgen: 64x64x3, 15 actions)."""
    return ImpalaActorCritic(height, width, in_channels, n_actions, residual=residual, **kwargs)


@archs.register("sb3-mlp-discrete")
def sb3_mlp_discrete(obs_dim: int, n_actions: int, net_arch: list[int] | tuple[int, ...] = (64, 64), activation: str = "tanh",
                     residual: bool = False) -> MLPActorCritic:
    """Stable-Baselines3's discrete MlpPolicy (to load RL-Zoo agents). It has no skips: ``residual=True`` is an error."""
    if residual:
        raise ValueError("sb3-mlp-discrete is SB3's plain MLP policy and has no residual form; use resmlp-discrete")
    return MLPActorCritic(obs_dim, n_actions, tuple(net_arch), activation)
