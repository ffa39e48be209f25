"""The residual study's RL sweep: SimBa agents of growing depth, residual vs plain twin, with SAC.

One run trains ``sac-pendulum-resmlp``'s recipe (``scripts/train_rl.py``: RL-Zoo's Pendulum-v1 SAC,
learning rate 1e-3, width 64; 10,000 steps instead of 20,000) with ``depth`` SimBa blocks in the actor *and* in each
critic (SimBa scales both), residual or plain (``residual=False``), and writes the same kind of
record as the classifier sweeps: the learning curve (training-episode returns and the critic's
TD loss), the final training return (mean of the last 10 training episodes, stochastic policy) and
test return (10 deterministic episodes on unseen seeds 10000..), ``reszoo.analysis`` gradient flow,
branch ratio and gradient correlation at initialisation and at the end, the lesion study at the
end, wall time, seed.

What the diagnostics are measured on, since RL has no data set: a fixed batch of 256 transitions
from a seeded uniform-random policy (the same for every run). Gradient flow: the critic's TD loss
(SAC's soft Bellman target from the target critics, the current actor and temperature; critic 0),
and the actor's SAC loss (``alpha log pi - min Q``, reparameterised with fixed noise) for the actor.
The lesion study removes actor blocks (Veit et al.) and scores the agent by the mean return of 5
deterministic episodes (seeds 20000..); "chance" is the uniform-random policy's return on them.

    python scripts/residual_study.py rl --depths 1 2 4 8 --seeds 0 1 --out results/residual-study/rl
"""

from __future__ import annotations

import dataclasses
import math
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reszoo.analysis import block_infos, branch_ratio, gradient_correlation, gradient_flow
from reszoo.analysis.lesions import lesioned
from reszoo.analysis.suite import plain_data

EVAL_SEED, LESION_SEED, PROBE_SEED = 10_000, 20_000, 30_000


@dataclasses.dataclass(frozen=True)
class RLRecipe:
    """What two comparable runs share (a kept run must have the same)."""

    preset: str = "sac-pendulum-resmlp"
    env_id: str = "Pendulum-v1"
    # Half the preset's 20,000: its depth-1 agent's training return levels off by ~7,000 steps, and
    # 16 runs of up to 8 blocks must fit in an hour on 2 cores. Slower learners show it as a lower return.
    timesteps: int = 10_000
    width: int = 64
    eval_episodes: int = 10
    train_window: int = 10  # training episodes averaged into the final training return
    probe_transitions: int = 256
    lesion_episodes: int = 5
    lesion_ks: tuple[int, ...] = (1, 2, 4, 8)
    lesion_trials: int = 3
    log_every: int = 1000

    def describe(self) -> dict[str, Any]:
        from train_rl import PRESETS

        preset = PRESETS[self.preset]
        return dataclasses.asdict(self) | {
            "algorithm": f"SB3 SAC, {preset['hyper']} (RL-Zoo), otherwise SB3 defaults: gamma 0.99, tau 0.005, batch 256, "
                         "buffer 1M, automatic entropy temperature, 100 random warm-up steps",
            "model": f"SimBa agent (reszoo resmlp-sac): running observation normaliser, width {self.width}, 4x MLP blocks "
                     "with pre-LayerNorm; depth = blocks in the actor and in each of the two critics",
            "train_metric": f"mean return of the last {self.train_window} training episodes (stochastic policy)",
            "test_metric": f"mean return of {self.eval_episodes} deterministic episodes, seeds {EVAL_SEED}..",
            "diagnostics": f"{self.probe_transitions} transitions of a uniform-random policy (seed {PROBE_SEED})",
        }


class _ActorObjective(nn.Module):
    """Per-sample SAC actor loss ``alpha log pi(a|s) - min_i Q_i(s, a)``, ``a`` reparameterised with
    fixed noise; the critics are held outside the module tree so that only actor blocks are traced."""

    def __init__(self, agent: nn.Module, alpha: float, noise: Tensor) -> None:
        super().__init__()
        self.actor = agent.actor
        self._agent = (agent,)
        self.alpha, self.noise = alpha, noise

    def forward(self, obs: Tensor) -> Tensor:
        agent = self._agent[0]
        h = self.actor(obs)
        mu, log_std = agent.mu(h), agent.log_std(h).clamp(-20, 2)
        u = mu + log_std.exp() * self.noise[: len(obs)]
        a = torch.tanh(u)
        log_pi = (-0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_pi = log_pi - torch.log1p(-a.pow(2) + 1e-6).sum(-1)
        q = torch.stack([c(obs, a).squeeze(-1) for c in agent.critics]).min(0).values
        return self.alpha * log_pi - q


class _Policy(nn.Module):
    """The actor's deterministic action in [-1, 1] from a normalised observation (lesions, correlation)."""

    def __init__(self, agent: nn.Module) -> None:
        super().__init__()
        self.actor, self.mu = agent.actor, agent.mu

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.mu(self.actor(obs)))


def random_transitions(env_id: str, n: int, seed: int) -> dict[str, Tensor]:
    """``n`` transitions of a uniform-random policy (actions in [-1, 1] units and the env's)."""
    import gymnasium as gym

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "done")}
    obs, _ = env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high
    episode = 0
    while len(rows["obs"]) < n:
        a = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        nxt, reward, terminated, truncated, _ = env.step(low + (a + 1) * (high - low) / 2)
        for key, value in (("obs", obs), ("action", a), ("reward", reward), ("next_obs", nxt), ("done", terminated)):
            rows[key].append(value)
        obs = nxt
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in rows.items()}


def episode_returns(policy: Any, env_id: str, episodes: int, seed: int) -> list[float]:
    """Returns of ``policy(obs) -> action in [-1, 1]`` (or None: uniform random) on seeds seed, seed + 1, ..."""
    import gymnasium as gym

    env = gym.make(env_id)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            a = rng.uniform(-1, 1, size=env.action_space.shape) if policy is None else policy(obs)
            obs, reward, terminated, truncated, _ = env.step(low + (np.asarray(a) + 1) * (high - low) / 2)
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    env.close()
    return out


def _deterministic(agent: nn.Module) -> Any:
    policy = _Policy(agent).eval()

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return policy(agent.obs_norm(torch.as_tensor(obs, dtype=torch.float32)[None]))[0].numpy()

    return act


def diagnostics(agent: nn.Module, sac: Any, probe: dict[str, Tensor], seed: int) -> dict[str, Any]:
    """Critic and actor gradient flow, branch ratios and the policy's gradient correlation on ``probe``."""
    with torch.no_grad():
        obs, nxt = agent.obs_norm(probe["obs"]), agent.obs_norm(probe["next_obs"])
        alpha = float(sac.log_ent_coef.exp()) if getattr(sac, "log_ent_coef", None) is not None else float(sac.ent_coef_tensor)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(obs), probe["action"].shape[1], generator=gen)
        mu, log_std = agent.mu(agent.actor(nxt)), agent.log_std(agent.actor(nxt)).clamp(-20, 2)
        u = mu + log_std.exp() * noise
        a2 = torch.tanh(u)
        log_pi = ((-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
                  - torch.log1p(-a2.pow(2) + 1e-6).sum(-1))
        targets = sac.policy.critic_target.q_networks
        q_next = torch.stack([t.q(nxt, a2).squeeze(-1) for t in targets]).min(0).values
        target = probe["reward"] + sac.gamma * (1 - probe["done"]) * (q_next - alpha * log_pi)
    critic = agent.critics[0]
    inputs = {"obs": obs, "action": probe["action"]}
    mse = lambda out, y: F.mse_loss(out.squeeze(-1), y)  # noqa: E731
    return {
        "gradient_flow": gradient_flow(critic, inputs, target, loss_fn=mse),
        "actor_gradient_flow": gradient_flow(_ActorObjective(agent, alpha, noise), obs, None,
                                             loss_fn=lambda out, _: out.mean()),
        "branch_ratio": branch_ratio(critic, inputs),
        "actor_branch_ratio": branch_ratio(agent.actor, obs),
        "gradient_correlation": gradient_correlation(_Policy(agent), obs, seed=seed),
        "alpha": alpha,
    }


def lesion(agent: nn.Module, recipe: RLRecipe, probe: dict[str, Tensor], seed: int, chance: float) -> dict[str, Any]:
    """Veit et al.'s lesion study on the actor: the mean deterministic return with each block removed,
    and with k random blocks removed (``lesion_trials`` draws per k)."""
    obs = agent.obs_norm(probe["obs"])
    infos = block_infos(agent.actor, obs)
    names = [i.name for i in infos]
    act = _deterministic(agent)

    def score(remove: list[str]) -> float:
        with lesioned(agent.actor, remove, infos):
            return float(np.mean(episode_returns(act, recipe.env_id, recipe.lesion_episodes, LESION_SEED)))

    baseline = score([])
    single = [score([n]) for n in names]
    rng = random.Random(seed)
    curve = []
    for k in sorted({k for k in recipe.lesion_ks if 1 <= k <= len(names)}):
        draws = 1 if k == len(names) else recipe.lesion_trials
        values = [score(rng.sample(names, k)) for _ in range(draws)]
        mean = sum(values) / len(values)
        curve.append({"k": k, "mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)),
                      "values": values})
    return {"metric": f"mean return over {recipe.lesion_episodes} episodes", "baseline": baseline, "blocks": names,
            "removal": [i.removal for i in infos], "single": single, "random": curve,
            "samples": recipe.lesion_episodes, "candidates": names, "chance": chance}


class _CriticLossLog:
    """SB3 callback: the critic's TD loss as SAC logs it, every ``every`` steps."""

    def __new__(cls, every: int) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class Log(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.curve: list[tuple[int, float]] = []

            def _on_step(self) -> bool:
                if self.num_timesteps % every == 0:
                    value = self.model.logger.name_to_value.get("train/critic_loss")
                    if value is not None:
                        self.curve.append((int(self.num_timesteps), float(value)))
                return True

        return Log()


def run_id(depth: int, residual: bool, seed: int) -> str:
    return f"pendulum-simba{depth}-{'residual' if residual else 'plain'}-seed{seed}"


def train_twin(recipe: RLRecipe, depth: int, residual: bool, seed: int) -> dict[str, Any]:
    """Train one (depth, twin, seed) with SAC and measure it; returns the JSON record."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env
    from train_rl import PRESETS, _hyper, arch_args

    from reszoo.rl.sb3 import EpisodeLogCallback, ObsNormCallback, ReszooSACPolicy

    start = time.perf_counter()
    preset = PRESETS[recipe.preset]
    agent_kwargs = dict(width=recipe.width, depth=depth, critic_width=recipe.width, critic_depth=depth, residual=residual)
    env = make_vec_env(recipe.env_id, n_envs=1, seed=seed)
    sac = SAC(ReszooSACPolicy, env, seed=seed, device="cpu", verbose=0, policy_kwargs=dict(agent_kwargs=agent_kwargs),
              **_hyper(preset))
    agent = sac.policy.agent
    probe = random_transitions(recipe.env_id, recipe.probe_transitions, PROBE_SEED)
    at_init = diagnostics(agent, sac, probe, seed)
    episodes, losses = EpisodeLogCallback(), _CriticLossLog(recipe.log_every)
    t0 = time.perf_counter()
    sac.learn(total_timesteps=recipe.timesteps, callback=[ObsNormCallback(agent.obs_norm, per_step=True), episodes, losses])
    train_seconds = time.perf_counter() - t0
    env.close()
    agent.eval()
    act = _deterministic(agent)
    test = episode_returns(act, recipe.env_id, recipe.eval_episodes, EVAL_SEED)
    train_window = [r for _, r in episodes.curve[-recipe.train_window:]]
    at_end = diagnostics(agent, sac, probe, seed)
    chance = float(np.mean(episode_returns(None, recipe.env_id, recipe.lesion_episodes, LESION_SEED)))
    record = {
        "study": "residual-vs-plain", "domain": "rl", "dataset": recipe.env_id,
        "name": run_id(depth, residual, seed).rsplit("-seed", 1)[0], "arch": "resmlp-sac",
        "arch_args": arch_args(preset, {k: v for k, v in agent_kwargs.items() if k != "residual"}) | {"residual": residual},
        "depth": depth, "residual": residual, "seed": seed, "params": sum(p.numel() for p in agent.parameters()),
        "blocks": len(at_init["gradient_flow"].blocks) + len(at_init["actor_gradient_flow"].blocks),
        "recipe": recipe.describe(), "steps": recipe.timesteps,
        "episode_returns": episodes.curve, "critic_loss_curve": losses.curve,
        "final": {"train_return": float(np.mean(train_window)), "test_return": float(np.mean(test)),
                  "test_returns": test, "test_std": float(np.std(test)), "train_episodes": len(train_window),
                  "random_policy_return": chance},
        **{key: {"init": at_init[key], "end": at_end[key]} for key in (
            "gradient_flow", "actor_gradient_flow", "branch_ratio", "actor_branch_ratio", "gradient_correlation", "alpha")},
        "lesion": lesion(agent, recipe, probe, seed, chance),
        "precision": "float32", "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "sb3": __import__("stable_baselines3").__version__,
        "gymnasium": __import__("gymnasium").__version__, "python": platform.python_version(),
        "wall_seconds": {"train": train_seconds, "total": time.perf_counter() - start},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return plain_data(record)


def run_sweep(recipe: RLRecipe, depths: list[int], seeds: list[int], out: Path) -> list[Path]:
    """Every (depth, twin, seed) not already in ``out/runs`` with the same recipe; the records' paths."""
    from residual_domains import run_grid

    def summary(record: dict[str, Any]) -> str:
        return f"test return {record['final']['test_return']:.1f}, train {record['final']['train_return']:.1f}"

    return run_grid(recipe, depths, seeds, out, run_id, lambda d, r, s: train_twin(recipe, d, r, s), summary)
