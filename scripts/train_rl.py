"""Train reszoo's residual RL agents (and their plain twins) with Stable-Baselines3, then evaluate.

    nice -n 10 python scripts/train_rl.py ppo-cartpole-resmlp --variant residual
    nice -n 10 python scripts/train_rl.py ppo-cartpole-resmlp --variant plain

Each run trains one variant with the preset's budget and seed (hyper-parameters from RL-Baselines3
Zoo, networks from reszoo.rl), evaluates it over ``--eval-episodes`` deterministic episodes on
seeds 10000, 10001, ... (training uses seeds 0..n_envs-1), and writes
``runs/rl/<name>/<variant>.json`` (curve, evaluation, timings) and the weights
(``weights/reszoo/<name>/model.safetensors`` for the residual agent, ``plain.safetensors`` for the
twin). Once both variants of the same configuration have run, it draws both learning curves in
``weights/reszoo/<name>/learning_curve.png`` and writes the measured results into registry.yaml.

Why Stable-Baselines3 hosts the networks: its PPO/SAC only need an ``mlp_extractor`` plus output
layers (PPO) and an actor ``latent_pi``/``mu``/``log_std`` plus critics over ``cat([obs, action])``
(SAC), so reszoo's modules slot in unchanged (see reszoo/rl/sb3.py); the only addition is a
callback that updates the in-network observation normaliser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SCRIPT = "scripts/train_rl.py"
EVAL_SEED = 10_000


def linear(start: float) -> Any:
    """RL-Zoo's ``lin_<x>`` schedule: decays linearly from ``start`` to 0 over training."""
    return lambda progress_remaining: progress_remaining * start


# RL-Baselines3 Zoo hyper-parameters (hyperparams/ppo.yml, sac.yml) with reszoo networks.
PRESETS: dict[str, dict[str, Any]] = {
    "ppo-cartpole-resmlp": dict(
        algo="ppo", env_id="CartPole-v1", timesteps=100_000, n_envs=8,
        agent=dict(width=64, depth=2),
        hyper=dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
                   learning_rate=("lin", 1e-3), clip_range=("lin", 0.2)),
    ),
    "ppo-acrobot-resmlp": dict(
        # RL-Zoo's Acrobot PPO and budget (1M steps), except minibatches of 256 instead of SB3's
        # default 64. Until a first episode reaches the goal (3% of random episodes do) every reward
        # is -1 and the normalised advantages are noise; 64-sample minibatches took 256 noisy steps
        # per rollout, and the residual trunk, which moves its policy further per step (clip
        # fraction 0.14-0.20 vs 0.06-0.13 for the plain twin, seed 0), drifted into a policy that
        # barely moves the links and never reached the goal (seeds 0 and 3, 200k steps). With 256
        # (64 steps per rollout) it reaches the goal, though still later than the plain twin.
        algo="ppo", env_id="Acrobot-v1", timesteps=1_000_000, n_envs=16, normalize_reward=True,
        agent=dict(width=64, depth=2),
        hyper=dict(n_steps=256, batch_size=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0),
    ),
    "ppo-lunarlander-resmlp": dict(
        # RL-Zoo's LunarLander PPO, hyper-parameters and budget (1M steps; ~25 min per variant on
        # one core). A first run at 500k steps reached 206.9 +- 51.6 (11 of 20 episodes < 200).
        algo="ppo", env_id="LunarLander-v3", timesteps=1_000_000, n_envs=16,
        agent=dict(width=64, depth=2),
        hyper=dict(n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4, ent_coef=0.01),
    ),
    "sac-pendulum-resmlp": dict(
        # RL-Zoo's Pendulum-v1 SAC (learning_rate 1e-3, SB3 defaults otherwise: gamma 0.99,
        # tau 0.005, batch 256, ent_coef auto, raw rewards). An earlier version of this preset added
        # reward normalisation and an initial temperature of 0.01 to work around a critic that
        # "fitted slowly"; the cause was a bug in reszoo/rl/sb3.py (SAC's running_* copy zeroed the
        # shared observation normaliser every step), fixed there, so the workarounds are gone.
        algo="sac", env_id="Pendulum-v1", timesteps=20_000, n_envs=1,
        agent=dict(width=64, depth=1, critic_width=64, critic_depth=1),
        hyper=dict(learning_rate=1e-3),
    ),
}


def _hyper(preset: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in preset["hyper"].items():
        out[key] = linear(value[1]) if isinstance(value, tuple) and value[0] == "lin" else value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return f"{value[0]}_{value[1]}"
    return value


def describe_spaces(env_id: str) -> dict[str, Any]:
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        obs, act = env.observation_space, env.action_space
        info: dict[str, Any] = {"observation_space": " ".join(str(obs).split()), "action_space": " ".join(str(act).split())}
        info["observation_shape"] = list(obs.shape)
        if hasattr(act, "n"):
            info["n_actions"] = int(act.n)
        else:
            info["action_shape"] = list(act.shape)
            info["action_low"] = [float(v) for v in act.low.reshape(-1)]
            info["action_high"] = [float(v) for v in act.high.reshape(-1)]
        return info
    finally:
        env.close()


def train(name: str, variant: str, timesteps: int, seed: int, eval_episodes: int, out_dir: Path, log_every: int,
          weights_dir: Path) -> dict[str, Any]:
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from reszoo.rl.rollout import run_episodes
    from reszoo.rl.sb3 import EpisodeLogCallback, ObsNormCallback, ReszooActorCriticPolicy, ReszooSACPolicy

    preset = PRESETS[name]
    torch.set_num_threads(1)  # the machine is shared; one core per training run
    residual = variant == "residual"
    agent_kwargs = dict(preset["agent"], residual=residual)
    env = make_vec_env(preset["env_id"], n_envs=preset["n_envs"], seed=seed)
    if preset.get("normalize_reward"):
        # Rewards scaled for the critic only (RL-Zoo `normalize: true`); observations are
        # normalised inside the network, and the Monitor under this wrapper logs raw returns.
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=preset["hyper"].get("gamma", 0.99))
    if preset["algo"] == "ppo":
        model = PPO(ReszooActorCriticPolicy, env, seed=seed, device="cpu", verbose=0,
                    policy_kwargs=dict(agent_kwargs=agent_kwargs), **_hyper(preset))
        per_step = False
    else:
        model = SAC(ReszooSACPolicy, env, seed=seed, device="cpu", verbose=0,
                    policy_kwargs=dict(agent_kwargs=agent_kwargs), **_hyper(preset))
        per_step = True
    agent = model.policy.agent
    episodes = EpisodeLogCallback(log_every=log_every, log_fn=lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=[ObsNormCallback(agent.obs_norm, per_step=per_step), episodes])
    train_s = time.perf_counter() - t0
    env.close()

    agent.eval()
    t0 = time.perf_counter()
    returns = run_episodes(agent, preset["env_id"], eval_episodes, seed=EVAL_SEED, deterministic=True)
    eval_s = time.perf_counter() - t0
    print(f"{name} [{variant}] eval over {eval_episodes} episodes: {np.mean(returns):.2f} +- {np.std(returns):.2f}", flush=True)

    from registry_io import COMMIT_LIMIT, write_weights

    weights_path = weights_dir / ("model.safetensors" if residual else "plain.safetensors")
    written = write_weights(agent.state_dict(), weights_path, max_bytes=COMMIT_LIMIT)
    result = {
        "name": name, "variant": variant, "algo": preset["algo"], "env_id": preset["env_id"], "seed": seed,
        "timesteps": timesteps, "n_envs": preset["n_envs"], "agent": agent_kwargs,
        "arch_args": arch_args(preset, agent_kwargs),
        "hyper": {k: _jsonable(v) for k, v in preset["hyper"].items()},
        "normalize_reward": bool(preset.get("normalize_reward")),
        "curve": episodes.curve, "eval_returns": returns, "eval_mean": float(np.mean(returns)),
        "eval_std": float(np.std(returns)), "eval_episodes": eval_episodes, "eval_seed": EVAL_SEED,
        "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
        "parameters": sum(p.numel() for p in agent.parameters()),
        "weights_file": str(weights_path), **written,
        "torch": torch.__version__, "sb3": __import__("stable_baselines3").__version__,
        "gymnasium": __import__("gymnasium").__version__,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{variant}.json").write_text(json.dumps(result, indent=1))
    return result


ARCH = {"ppo": "resmlp-discrete", "sac": "resmlp-sac"}


def arch_args(preset: dict[str, Any], agent_kwargs: dict[str, Any]) -> dict[str, Any]:
    spaces = describe_spaces(preset["env_id"])
    args: dict[str, Any] = {"obs_dim": int(np.prod(spaces["observation_shape"]))}
    if preset["algo"] == "ppo":
        args["n_actions"] = spaces["n_actions"]
    else:
        args["action_dim"] = int(np.prod(spaces["action_shape"]))
        args["action_low"], args["action_high"] = spaces["action_low"], spaces["action_high"]
    args.update({k: v for k, v in agent_kwargs.items() if k != "residual"})
    return args


def _smooth(curve: list[list[float]], window: int = 20) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([c[0] for c in curve], dtype=float)
    rets = np.array([c[1] for c in curve], dtype=float)
    if len(rets) >= window:
        kernel = np.ones(window) / window
        return steps[window - 1:], np.convolve(rets, kernel, mode="valid")
    return steps, rets


def plot(name: str, runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for variant, color in (("residual", "tab:blue"), ("plain", "tab:orange")):
        run = runs[variant]
        x, y = _smooth(run["curve"])
        label = f"{variant} (eval {run['eval_mean']:.1f} ± {run['eval_std']:.1f})"
        ax.plot(x, y, color=color, label=label)
    first = runs["residual"]
    ax.set_title(f"{name}: {first['env_id']}, {first['algo'].upper()}, seed {first['seed']}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training episode return (mean of last 20)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_registry(name: str, runs: dict[str, dict[str, Any]], plot_path: Path) -> None:
    from registry_io import measured, update_entry

    res, plain = runs["residual"], runs["plain"]
    protocol = (f"{res['eval_episodes']} episodes, deterministic actions, env.reset(seed=s) for s = "
                f"{res['eval_seed']}..{res['eval_seed'] + res['eval_episodes'] - 1} (training used seeds "
                f"{res['seed']}..{res['seed'] + res['n_envs'] - 1}); return = undiscounted sum of rewards")
    spaces = describe_spaces(res["env_id"])
    metric = measured(SCRIPT, dataset=res["env_id"], split="evaluation", metric="mean_reward", value=res["eval_mean"],
                      name=f"mean reward ({res['eval_episodes']} deterministic episodes, std {res['eval_std']:.2f})",
                      dataset_type=res["env_id"])
    std_metric = measured(SCRIPT, dataset=res["env_id"], split="evaluation", metric="std_reward", value=res["eval_std"],
                          name=f"std of the episode return ({res['eval_episodes']} deterministic episodes)",
                          dataset_type=res["env_id"])
    extra = {
        "observation_space": spaces["observation_space"],
        "action_space": spaces["action_space"],
        "algorithm": f"{res['algo'].upper()} (Stable-Baselines3 {res['sb3']}, reszoo networks)",
        "training_steps": res["timesteps"],
        "n_envs": res["n_envs"],
        "seed": res["seed"],
        "hyperparameters": res["hyper"],
        "reward_normalisation": res["normalize_reward"],
        "evaluation_protocol": protocol,
        "mean_reward": round(res["eval_mean"], 3),
        "std_reward": round(res["eval_std"], 3),
        "plain_twin": {
            "mean_reward": round(plain["eval_mean"], 3),
            "std_reward": round(plain["eval_std"], 3),
            "weights_file": "plain.safetensors",
            "sha256": plain["sha256"],
            "note": "same budget, seed and hyper-parameters; residual=False (no skip additions)",
        },
        "train_seconds": {"residual": res["train_seconds"], "plain": plain["train_seconds"]},
        "parameters": res["parameters"],
        "versions": {"torch": res["torch"], "stable_baselines3": res["sb3"], "gymnasium": res["gymnasium"]},
    }
    others = other_seeds(name, res)
    if others:
        extra["other_seeds"] = {f"seed {seed}": {v: row[v] for v in ("residual", "plain")} for seed, row in others.items()}
        # Per-seed means and their mean over every seed run (the recipe's seed included), so one
        # seed's luck is visible for what it is; the committed weights stay the recipe seed's.
        per_seed = {res["seed"]: {"residual": res["eval_mean"], "plain": plain["eval_mean"]},
                    **{seed: {v: row[f"{v}_mean"] for v in ("residual", "plain")} for seed, row in others.items()}}
        seeds = sorted(per_seed)
        extra["over_seeds"] = {
            "seeds": seeds,
            **{f"{v}_per_seed": [round(per_seed[s][v], 2) for s in seeds] for v in ("residual", "plain")},
            **{f"{v}_mean_over_seeds": round(float(np.mean([per_seed[s][v] for s in seeds])), 2)
               for v in ("residual", "plain")},
            "note": "mean over seeds of each run's 20-episode evaluation mean; same budget and hyper-parameters",
        }
    figures = {"learning_curve": plot_path.name}  # both variants' curves, beside the weights in the agent's repo
    update_entry(
        name,
        arch_args=res["arch_args"],
        metrics=[metric, std_metric],
        weights={"sha256": res["sha256"], "size": res["size"]},
        runtime={"env_id": res["env_id"]},
        extra=extra,
        figures=figures,
    )
    print(f"registry.yaml: {name} mean_reward {res['eval_mean']:.3f} (plain twin {plain['eval_mean']:.3f})", flush=True)
    write_plain_entry(name, plain, res, extra, protocol, figures)


def write_plain_entry(name: str, plain: dict[str, Any], res: dict[str, Any], residual_extra: dict[str, Any], protocol: str,
                      figures: dict[str, str]) -> None:
    """The plain twin ``<name>-plain`` (same repo, ``plain.safetensors``), so it loads by name. The
    registry keeps it in the agent's ``plain:``, holding only what differs from the agent's entry."""
    from registry_io import measured, update_entry

    dataset = dict(dataset=plain["env_id"], split="evaluation", dataset_type=plain["env_id"])
    n = plain["eval_episodes"]
    metrics = [
        measured(SCRIPT, metric="mean_reward", value=plain["eval_mean"],
                 name=f"mean reward ({n} deterministic episodes, std {plain['eval_std']:.2f})", **dataset),
        measured(SCRIPT, metric="std_reward", value=plain["eval_std"],
                 name=f"std of the episode return ({n} deterministic episodes)", **dataset),
    ]
    shared = ("observation_space", "action_space", "algorithm", "training_steps", "n_envs", "seed",
              "hyperparameters", "reward_normalisation", "versions")
    extra = {key: residual_extra[key] for key in shared}
    extra.update({
        "evaluation_protocol": protocol,
        "mean_reward": round(plain["eval_mean"], 3),
        "std_reward": round(plain["eval_std"], 3),
        "residual_twin": {"name": name, "mean_reward": round(res["eval_mean"], 3), "std_reward": round(res["eval_std"], 3)},
        "train_seconds": plain["train_seconds"],
        "parameters": plain["parameters"],
    })
    if "over_seeds" in residual_extra:
        extra["over_seeds"] = residual_extra["over_seeds"]
    update_entry(f"{name}-plain", arch_args={**plain["arch_args"], "residual": False}, metrics=metrics,
                 weights={"sha256": plain["sha256"], "size": plain["size"]}, runtime={"env_id": plain["env_id"]},
                 extra=extra, figures=figures)
    print(f"registry.yaml: {name}-plain mean_reward {plain['eval_mean']:.3f}", flush=True)


def other_seeds(name: str, recipe_run: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Evaluation results of extra-seed runs (``--scratch runs/rl/seeds/seed<N>``), by seed; only
    runs with the recipe run's budget and hyper-parameters count (older ones are reported as skipped)."""
    out: dict[int, dict[str, Any]] = {}
    for folder in sorted((ROOT / "runs" / "rl" / "seeds").glob("seed*")):
        row: dict[str, Any] = {}
        for variant in ("residual", "plain"):
            path = folder / "runs" / "rl" / name / f"{variant}.json"
            if not path.is_file():
                continue
            run = json.loads(path.read_text())
            if any(run[k] != recipe_run[k] for k in ("timesteps", "hyper", "n_envs", "eval_episodes")):
                print(f"skipping {path}: not the recipe's budget and hyper-parameters", flush=True)
                continue
            row[variant] = f"{run['eval_mean']:.2f} +- {run['eval_std']:.2f}"
            row[f"{variant}_mean"] = run["eval_mean"]
            seed = run["seed"]
        if "residual" in row and "plain" in row:
            out[seed] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(PRESETS))
    parser.add_argument("--variant", choices=("residual", "plain", "both", "report"), default="both",
                        help="'report': train nothing; plot and write the registry from the two runs' saved output")
    parser.add_argument("--timesteps", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=10_000)
    parser.add_argument("--register", action="store_true",
                        help="publish: weights into weights/, the plot and the measured results into registry.yaml "
                             "(without it a run writes only under runs/rl-trial/, so a trial never overwrites published results)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="write runs and weights under this folder instead (extra seeds); never registers")
    args = parser.parse_args()
    if args.register and args.scratch is not None:
        parser.error("--register publishes into the repository; --scratch runs never do")

    preset = PRESETS[args.name]
    timesteps = args.timesteps or preset["timesteps"]
    base = args.scratch if args.scratch is not None else (ROOT if args.register else ROOT / "runs" / "rl-trial")
    out_dir = base / "runs" / "rl" / args.name
    weights_dir = base / "weights" / "reszoo" / args.name
    variants = {"both": ("residual", "plain"), "report": ()}.get(args.variant, (args.variant,))
    for variant in variants:
        print(f"training {args.name} [{variant}] {preset['algo']} on {preset['env_id']} for {timesteps} steps, seed {args.seed}", flush=True)
        train(args.name, variant, timesteps, args.seed, args.eval_episodes, out_dir, args.log_every, weights_dir)

    runs = {}
    for variant in ("residual", "plain"):
        path = out_dir / f"{variant}.json"
        if path.is_file():
            runs[variant] = json.loads(path.read_text())
    if len(runs) < 2:
        print("waiting for the other variant before writing the plot and the registry", flush=True)
        return 0
    same = all(runs["residual"][k] == runs["plain"][k] for k in ("timesteps", "seed", "hyper", "eval_episodes"))
    if not same:
        print("residual and plain runs differ in budget/seed/hyper-parameters: not writing the registry", flush=True)
        return 1
    if not args.register:
        print(f"trial run: results under {base}; pass --register to publish them", flush=True)
        return 0
    plot_path = ROOT / "weights" / "reszoo" / args.name / "learning_curve.png"
    plot(args.name, runs, plot_path)
    write_registry(args.name, runs, plot_path)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
