"""reszoo.rl: SimBa trunk, agents, Stable-Baselines3 hosting, input checks, trained agents, `play`.
(What every architecture and entry promises, plain twins included, is checked in test_contract.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reszoo.nn import residual_blocks
from reszoo.rl import (
    DiscreteActorCritic,
    ObservationError,
    QNetwork,
    ResMLP,
    RunningNorm,
    SpaceMismatchError,
    SquashedGaussianActorCritic,
    build_preprocess,
    impala_cnn,
    predict,
    resmlp_discrete,
    resmlp_sac,
)

gym = pytest.importorskip("gymnasium")


# --------------------------------------------------------------------------- trunk


def test_running_norm_matches_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 5)) for n in (1, 7, 64, 300)]
    norm = RunningNorm(5)
    for b in batches:
        norm.update(torch.from_numpy(b))
    data = np.concatenate(batches)
    np.testing.assert_allclose(norm.running_mean.numpy(), data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.running_var.numpy(), data.var(0), rtol=1e-5)
    assert norm.count.item() == len(data)
    x = torch.from_numpy(data[:4]).float()
    expected = (x - torch.from_numpy(data.mean(0)).float()) / torch.from_numpy(np.sqrt(data.var(0) + 1e-8)).float()
    torch.testing.assert_close(norm(x), expected, rtol=1e-4, atol=1e-5)
    assert norm(torch.full((1, 5), 1e6)).max().item() == 10.0  # clipped
    # The statistics are persistent buffers: they are saved with the weights.
    assert {"running_mean", "running_var", "count"} <= set(norm.state_dict())


def test_resmlp_shapes_blocks_and_plain_twin() -> None:
    torch.manual_seed(0)
    trunk = ResMLP(in_dim=6, width=32, depth=3)
    out = trunk(torch.randn(5, 6))
    assert out.shape == (5, 32)
    blocks = list(residual_blocks(trunk))
    assert len(blocks) == 3 and all(b.residual for b in blocks)
    assert blocks[0].fc1.out_features == 4 * 32  # hidden 4x
    torch.testing.assert_close(out.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)  # final LayerNorm

    plain = ResMLP(in_dim=6, width=32, depth=3, residual=False)
    plain.load_state_dict(trunk.state_dict())  # same parameters, only the joins differ
    assert not any(b.residual for b in residual_blocks(plain))
    x = torch.randn(5, 32)
    b_res, b_plain = trunk.blocks[0], plain.blocks[0]
    branch = b_res.fc2(torch.relu(b_res.fc1(b_res.norm(x))))
    torch.testing.assert_close(b_res(x), x + branch)
    torch.testing.assert_close(b_plain(x), branch)
    assert not torch.allclose(trunk(torch.randn(5, 6)), plain(torch.randn(5, 6)))


def test_q_network_reads_obs_and_action_together_and_is_nonlinear_in_action() -> None:
    torch.manual_seed(0)
    q = QNetwork(obs_dim=3, action_dim=1, width=32, depth=2)
    assert q.encoder.embed.in_features == 4  # the action goes into the residual encoder
    obs = torch.randn(1, 3).expand(41, 3)
    actions = torch.linspace(-1, 1, 41).unsqueeze(1)
    values = q(obs, actions).squeeze(1)
    second_diff = values[2:] - 2 * values[1:-1] + values[:-2]
    assert second_diff.abs().max() > 1e-4, "Q is linear in the action"
    # and the dependence on the action passes through the residual blocks
    a = torch.zeros(1, 1, requires_grad=True)
    q(torch.randn(1, 3), a).sum().backward()
    assert a.grad.abs().item() > 0


def test_impala_cnn_structure() -> None:
    model = impala_cnn(height=64, width=64, in_channels=3, n_actions=15)
    assert [seq.conv.out_channels for seq in model.encoder.stages] == [16, 32, 32]
    assert len(list(residual_blocks(model))) == 6 and model.encoder.fc.out_features == 256
    logits, value = model(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert logits.shape == (2, 15) and value.shape == (2,)
    with pytest.raises(ObservationError, match="uint8"):
        model.act(np.zeros((64, 64, 3), dtype=np.float32))


# --------------------------------------------------------------------------- act() and checks


def test_act_single_batch_numpy_tensor_list() -> None:
    torch.manual_seed(0)
    agent = resmlp_discrete(obs_dim=4, n_actions=2).eval()
    obs = np.array([0.01, -0.2, 0.03, 0.1], dtype=np.float32)
    single = agent.act(obs)
    assert isinstance(single, int) and single in (0, 1)
    batch = np.stack([obs, -obs, obs * 3])
    actions = agent.act(batch)
    assert isinstance(actions, np.ndarray) and actions.shape == (3,) and actions.dtype == np.int64
    assert actions[0] == single
    t = agent.act(torch.from_numpy(batch))
    assert isinstance(t, torch.Tensor) and t.tolist() == actions.tolist()
    assert agent.act(obs.tolist()) == single and agent.act(obs.astype(np.float64)) == single
    logits, _ = agent(torch.from_numpy(batch))
    assert actions.tolist() == logits.argmax(-1).tolist()

    sac = resmlp_sac(obs_dim=3, action_dim=1, action_low=-2.0, action_high=2.0)
    a = sac.act(np.array([1.0, 0.0, 0.5], dtype=np.float32))
    assert a.shape == (1,) and a.dtype == np.float32 and -2.0 <= a[0] <= 2.0
    many = sac.act(np.random.default_rng(0).normal(size=(8, 3)) * 5, deterministic=False)
    assert many.shape == (8, 1) and np.all(np.abs(many) <= 2.0)


def test_every_discrete_agent_acts_through_one_categorical_policy() -> None:
    """PPO, IMPALA and SB3's MLP agents give their logits; CategoricalAgent alone turns them into an
    action: the argmax, or a sample (seeded: the same actions again)."""
    from reszoo.rl import CategoricalAgent, MLPActorCritic

    torch.manual_seed(0)
    agents = [resmlp_discrete(obs_dim=4, n_actions=3), MLPActorCritic(4, 3), impala_cnn(height=8, width=8, n_actions=3)]
    for agent in agents:
        assert isinstance(agent, CategoricalAgent) and agent.kind == "discrete"
        assert "_act" not in vars(type(agent))  # no agent re-decides how an action is drawn
        shape = agent.observation_shape
        obs = torch.rand(64, *shape) if agent.observation_dtype != torch.uint8 else torch.randint(0, 256, (64, *shape), dtype=torch.uint8)
        assert agent.act(obs).tolist() == agent(obs)[0].argmax(-1).tolist()
        torch.manual_seed(1)
        drawn = agent.act(obs, deterministic=False)
        torch.manual_seed(1)
        assert agent.act(obs, deterministic=False).tolist() == drawn.tolist()
        assert set(drawn.tolist()) <= {0, 1, 2}


def test_bad_observations_raise_clear_errors() -> None:
    agent = resmlp_discrete(obs_dim=4, n_actions=2)
    with pytest.raises(ObservationError, match=r"shape \(4,\).*got shape \(3,\)"):
        agent.act(np.zeros(3, dtype=np.float32))
    with pytest.raises(ObservationError, match="got shape"):
        agent.act(np.zeros((2, 2, 4), dtype=np.float32))
    with pytest.raises(ObservationError, match="NaN"):
        agent.act(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ObservationError, match="NaN"):
        agent.act(torch.tensor([[0.0, 0.0, float("inf"), 0.0]]))
    with pytest.raises(ObservationError, match="dtype"):
        agent.act(np.array(["a", "b", "c", "d"]))
    with pytest.raises(ObservationError, match="dtype"):
        agent.act(torch.ones(4, dtype=torch.bool))


def test_environment_space_mismatch() -> None:
    agent = resmlp_discrete(obs_dim=4, n_actions=3)
    env = gym.make("CartPole-v1")
    with pytest.raises(SpaceMismatchError, match="CartPole-v1.*Discrete\\(3\\)"):
        agent.check_env(env)
    resmlp_discrete(obs_dim=4, n_actions=2).check_env(env)  # the right one passes
    with pytest.raises(SpaceMismatchError, match="observation space"):
        resmlp_discrete(obs_dim=6, n_actions=2).check_env(env)
    sac = resmlp_sac(obs_dim=3, action_dim=1)  # bounds [-1, 1], Pendulum's are [-2, 2]
    with pytest.raises(SpaceMismatchError, match="action space"):
        sac.check_env(gym.make("Pendulum-v1"))


def test_predict_and_preprocess() -> None:
    from reszoo.registry import parse_entry

    entry = parse_entry({"name": "x", "domain": "rl", "task": "reinforcement-learning", "arch": "resmlp-discrete",
                         "license": "apache-2.0", "preprocess": {"env_id": "CartPole-v1", "observation_shape": [4]}})
    pre = build_preprocess(entry)
    assert pre([0, 0, 0, 0]).shape == (1, 4) and pre(np.zeros((5, 4))).dtype == torch.float32
    with pytest.raises(ObservationError, match="'x' expects"):
        pre([0, 0])
    agent = resmlp_discrete(obs_dim=4, n_actions=2).eval()
    rows = predict(agent, ["0.01,0.2,-0.03,0.1"], top_k=2)
    assert rows[0]["action"] == agent.act([0.01, 0.2, -0.03, 0.1])
    assert abs(sum(r["prob"] for r in rows) - 1.0) < 1e-3
    assert "could not read observation" in predict(agent, ["1,2,x,4"])[0]["error"]
    with pytest.raises(ObservationError):
        predict(agent, ["1,2,x,4"], errors="raise")


# --------------------------------------------------------------------------- SB3 hosting


def _mean_return(agent: DiscreteActorCritic, episodes: int = 5) -> float:
    from reszoo.rl.rollout import run_episodes

    return float(np.mean(run_episodes(agent, "CartPole-v1", episodes, seed=10_000)))


def test_short_ppo_run_improves_cartpole() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from reszoo.rl.sb3 import ObsNormCallback, ReszooActorCriticPolicy

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPO(ReszooActorCriticPolicy, env, seed=0, device="cpu", n_steps=32, batch_size=256, gae_lambda=0.8,
                gamma=0.98, n_epochs=20, learning_rate=1e-3, policy_kwargs=dict(agent_kwargs=dict(width=32, depth=1)))
    agent = model.policy.agent
    # SB3 optimises exactly the agent's parameters
    assert {id(p) for p in model.policy.parameters()} == {id(p) for p in agent.parameters()}
    before = _mean_return(agent.eval())
    model.learn(total_timesteps=4096, callback=ObsNormCallback(agent.obs_norm, per_step=False))
    after = _mean_return(agent.eval())
    assert agent.obs_norm.count.item() > 0
    assert after >= 120 and after > before + 40, (before, after)  # measured here: 77 -> 190


def test_sac_policy_hosts_reszoo_critics_on_obs_and_action() -> None:
    from stable_baselines3 import SAC

    from reszoo.rl.sb3 import ObsNormCallback, ReszooSACPolicy

    torch.set_num_threads(1)
    env = gym.make("Pendulum-v1")
    model = SAC(ReszooSACPolicy, env, seed=0, device="cpu", learning_starts=32, batch_size=32,
                policy_kwargs=dict(agent_kwargs=dict(width=16, depth=1)))
    agent = model.policy.agent
    assert agent.action_high.tolist() == [2.0]
    critic_params = {id(p) for p in model.policy.critic.parameters()}
    assert critic_params == {id(p) for p in agent.critics.parameters()}
    assert {id(p) for p in model.policy.actor.parameters()} == {id(p) for n, p in agent.named_parameters() if not n.startswith("critics")}
    assert not critic_params & {id(p) for p in model.policy.critic_target.parameters()}
    obs = torch.randn(4, 3)
    act = torch.rand(4, 1) * 2 - 1
    torch.testing.assert_close(torch.cat(model.policy.critic(obs, act), 1).T, agent.q_values(obs, act * 2))
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    model.learn(total_timesteps=64, callback=ObsNormCallback(agent.obs_norm, per_step=True))
    assert agent.obs_norm.count.item() == 65  # the reset observation and one per step
    # The statistics are those of the observations seen, after 32 gradient steps: SAC's copy of
    # the critic's running_* tensors onto the target's must not touch the shared normaliser.
    buf = model.replay_buffer
    seen = np.concatenate([buf.observations[:1, 0], buf.next_observations[:64, 0]]).astype(np.float64)
    np.testing.assert_allclose(agent.obs_norm.running_mean.numpy(), seen.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(agent.obs_norm.running_var.numpy(), seen.var(0), rtol=1e-5, atol=1e-6)
    assert not torch.equal(before["critics.0.head.weight"], agent.state_dict()["critics.0.head.weight"])
    # SB3's deterministic action is reszoo's act()
    o = np.array([0.3, -0.9, 1.5], dtype=np.float32)
    np.testing.assert_allclose(model.predict(o, deterministic=True)[0], agent.act(o), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- trained agents


def _trained(name: str):
    from reszoo.registry import info

    entry = info(name)
    if entry.weights is None or entry.weights.sha256 is None or not entry.metrics:
        pytest.skip(f"{name} has not been trained yet (no sha256/metrics in registry.yaml)")
    return entry


TRAINED_AGENTS = ["ppo-cartpole-resmlp", "sac-pendulum-resmlp", "ppo-acrobot-resmlp", "ppo-lunarlander-resmlp"]


@pytest.mark.parametrize("name", TRAINED_AGENTS + [f"{name}-plain" for name in TRAINED_AGENTS])
def test_committed_agent_loads_and_reaches_its_registry_return(name: str) -> None:
    import reszoo
    from reszoo.nn import residual_blocks

    entry = _trained(name)
    agent = reszoo.load(name)
    assert isinstance(agent, DiscreteActorCritic | SquashedGaussianActorCritic)
    # the plain twin (its own entry, plain.safetensors beside the agent's weights) has no skips
    assert {block.residual for block in residual_blocks(agent)} == {not name.endswith("-plain")}
    assert agent.obs_norm.count.item() > 0  # the normaliser's statistics came with the weights
    from reszoo.rl.rollout import run_episodes

    mean_metric = next(m for m in entry.metrics if m.metric == "mean_reward")
    std = entry.extra.get("std_reward", 0.0)
    # the first episodes of the registry's own evaluation protocol
    returns = run_episodes(agent, entry.runtime["env_id"], 3, seed=10_000)
    assert abs(np.mean(returns) - mean_metric.value) <= 2 * std + 1.0, (returns, mean_metric.value, std)


def test_play_command_prints_returns_and_writes_gif(tmp_path, capsys) -> None:
    from reszoo.cli import main

    _trained("ppo-cartpole-resmlp")
    gif = tmp_path / "cartpole.gif"
    assert main(["play", "ppo-cartpole-resmlp", "--episodes", "2", "--seed", "10000", "--max-steps", "15",
                 "--video", str(gif)]) == 0
    out = capsys.readouterr().out
    assert "episode 1  seed 10001  return 15.00" in out and "mean return 15.00 +- 0.00 over 2 episodes" in out
    assert f"video: {gif} (32 frames)" in out  # per episode: the reset frame and one per step
    import imageio.v2 as imageio

    frames = imageio.mimread(gif, memtest=False)  # (the GIF writer merges identical consecutive frames)
    assert 2 <= len(frames) <= 32 and frames[0].shape[:2] == (400, 600)
    assert main(["play", "ppo-cartpole-resmlp", "--env", "Acrobot-v1", "--episodes", "1"]) == 1
    assert "does not match" in capsys.readouterr().err


# --------------------------------------------------------------------------- SB3 zoo checkpoints


def test_sb3_mlp_policy_zip_converts_with_identical_outputs(tmp_path) -> None:
    from stable_baselines3 import PPO

    from reszoo.rl import sb3_mlp_discrete
    from reszoo.rl.convert import converters
    from reszoo.rl.convert import read_sb3_zip

    torch.manual_seed(0)
    sb3 = PPO("MlpPolicy", gym.make("Acrobot-v1"), seed=0, device="cpu")
    sb3.save(tmp_path / "ppo-acrobot.zip")
    state = converters["sb3-mlp-policy"](read_sb3_zip(tmp_path / "ppo-acrobot.zip"))
    with torch.device("meta"):
        agent = sb3_mlp_discrete(obs_dim=6, n_actions=3)
    agent.load_state_dict(state, strict=True, assign=True)
    obs = torch.randn(16, 6)
    dist = sb3.policy.get_distribution(obs)
    logits, value = agent(obs)
    torch.testing.assert_close(logits.log_softmax(-1), dist.distribution.logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(value, sb3.policy.predict_values(obs).squeeze(-1), rtol=0, atol=0)
    np.testing.assert_array_equal(agent.act(obs.numpy()), sb3.predict(obs.numpy(), deterministic=True)[0])
    with pytest.raises(ValueError, match="unexpected keys log_std"):
        converters["sb3-mlp-policy"]({**read_sb3_zip(tmp_path / "ppo-acrobot.zip"), "log_std": torch.zeros(3)})
    with pytest.raises(ValueError, match="no residual form"):
        sb3_mlp_discrete(obs_dim=6, n_actions=3, residual=True)
