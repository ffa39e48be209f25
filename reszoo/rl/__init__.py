"""Reinforcement learning: residual (SimBa-style) policy/value networks and agents.

The domain contract of :mod:`reszoo.domains`: ``models.py`` (the agents' networks), ``convert.py``
(Stable-Baselines3 policies), ``preprocess.py`` (observation checks), ``predict.py`` (actions),
``cli.py`` (``reszoo play``); ``agents.py`` (the Agent base), ``rollout.py`` (episodes) and
``sb3.py`` (training through Stable-Baselines3) besides. Light on import: gymnasium and
stable_baselines3 are imported inside the functions that run environments or train.

Registry entries of this domain carry in ``preprocess``: ``observation_shape`` and
``observation_dtype``; in ``runtime``: ``env_id``; in ``extra``: the spaces, the evaluation
protocol and the plain twin's result.
"""

from __future__ import annotations

from ..domains import Command, Domain, RuntimeSetting, lazy_exports
from .predict import predict

DOMAIN = Domain(
    name="rl",
    title="reinforcement-learning",
    package=__name__,
    commands={"play": Command("reszoo.rl.cli", "run a reinforcement-learning agent and print its returns")},
    runtime={"env_id": RuntimeSetting(
        "the Gymnasium environment the agent was trained for (`agent.env_id`, `reszoo play`)",
        lambda v: None if isinstance(v, str) and v.strip() and len(v) <= 200 else "expected an environment id such as 'CartPole-v1'",
        legacy="preprocess")},
)

_EXPORTS = {
    "Agent": "agents",
    "CategoricalAgent": "agents",
    "ObservationError": "agents",
    "SpaceMismatchError": "agents",
    "DiscreteActorCritic": "models",
    "ImpalaActorCritic": "models",
    "ImpalaCNN": "models",
    "MLPActorCritic": "models",
    "QNetwork": "models",
    "ResMLP": "models",
    "ResMLPBlock": "models",
    "RunningNorm": "models",
    "SquashedGaussianActorCritic": "models",
    "impala_cnn": "models",
    "resmlp_discrete": "models",
    "resmlp_sac": "models",
    "sb3_mlp_discrete": "models",
    "build_preprocess": "preprocess",
    "prepare": "preprocess",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DOMAIN", "predict", *_EXPORTS]
