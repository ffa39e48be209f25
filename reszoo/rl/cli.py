"""``reszoo play NAME [--episodes N] [--seed S] [--video out.gif|out.mp4]``.

Imported when the core CLI builds its parser, so it stays light: reszoo, torch, gymnasium and
imageio are imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "play",
        help="run an rl agent in its Gymnasium environment and print the returns",
        description="Run an rl agent (deterministic actions) in the environment named by its registry entry.",
    )
    p.add_argument("name", help="registry name of an rl agent, e.g. ppo-cartpole-resmlp")
    p.add_argument("--episodes", type=int, default=5, help="number of episodes (default 5)")
    p.add_argument("--seed", type=int, default=0, help="episode i starts from env.reset(seed=SEED + i)")
    p.add_argument("--env", default=None, help="environment id (default: the one the agent was trained on)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic policy")
    p.add_argument("--video", default=None, metavar="OUT", help="write the episodes' rgb_array frames to OUT (.gif or .mp4)")
    p.add_argument("--max-steps", type=int, default=None, help="stop each episode after this many steps (short videos)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--mirror", default=None, help="mirror folder to load the weights from")
    p.add_argument("--json", action="store_true", help="print the returns as JSON")
    p.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse counts that would make ``play`` run nothing, run forever or fail deep inside gymnasium."""
    if args.episodes < 1:
        raise InputError(f"--episodes must be at least 1, got {args.episodes}")
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be at least 1 (or left out: episodes run to their end), got {args.max_steps}")
    if args.fps < 1:
        raise InputError(f"--fps must be at least 1, got {args.fps}")
    if args.seed < 0:  # gymnasium's seeding refuses negative seeds
        raise InputError(f"--seed must be 0 or more, got {args.seed}")


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    import reszoo

    from .rollout import run_episodes

    _check_options(args)
    video = Path(args.video) if args.video else None
    if video is not None and video.suffix.lower() not in (".gif", ".mp4"):
        raise InputError(f"--video must end in .gif or .mp4, got {video}")
    model = reszoo.load(args.name, mirror=args.mirror)
    if model.entry.domain != "rl":
        raise InputError(f"{args.name!r} is a {model.entry.domain} model; `reszoo play` runs rl agents (see `reszoo list --domain rl`)")
    env_id = args.env or model.entry.runtime.get("env_id")
    if not env_id:
        raise InputError(f"{args.name!r} names no environment (runtime.env_id); pass --env")

    frames: list[np.ndarray] = []
    returns = run_episodes(model, env_id, args.episodes, args.seed, deterministic=not args.stochastic,
                           on_frame=frames.append if video is not None else None, max_steps=args.max_steps)
    if video is not None:
        _write_video(video, frames, args.fps)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    if args.json:
        print(json.dumps({"name": model.entry.name, "env_id": env_id, "seed": args.seed, "returns": returns,
                          "mean_reward": mean, "std_reward": std}, indent=2))
    else:
        for i, r in enumerate(returns):
            print(f"episode {i}  seed {args.seed + i}  return {r:.2f}")
        print(f"{model.entry.name} on {env_id}: mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
        if video is not None:
            print(f"video: {video} ({len(frames)} frames)")
    return 0


def _write_video(path: Path, frames: list, fps: int) -> None:
    if not frames or frames[0] is None:
        raise ValueError("the environment rendered no rgb_array frames; cannot write a video")
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as exc:
            raise ValueError("writing .mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); .gif works without it") from exc
        imageio.mimsave(path, frames, fps=fps)
    else:
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
