"""The two RL environments: observations, gymnasium contracts (NEXT_STEP autoreset), exact rewards."""
import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

from rtsearch.net.cost import CostModel
from rtsearch.data import load
from rtsearch.rl.observations import (DESCRIPTOR_DIM, K_BINS, RUNTIME_OBS_DIM, STATIC_OBS_DIM, MacsMeter,
                                      current_importance, importance_summary, layer_descriptors, runtime_observation)
from rtsearch.rl.runtime_env import RuntimeVectorEnv
from rtsearch.rl.static_env import StaticLayerEnv
from rtsearch.net.models import build_model

B = 16
P_MAX = 0.9


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = build_model("small", (1, 8, 8), 10)
    with torch.no_grad():  # random but non-trivial importances and BN statistics
        for g in net.gates:
            g.static_importance.uniform_(0.1, 1.0)
            g.predictor.weight.normal_(0, 0.5)
            g.bn.running_mean.normal_(0, 0.1)
    return net.eval()


def world(net, static=None, beta_f=0.7):
    return {"model": net.config(), "state_dict": net.state_dict(),
            "static_ratios": static if static is not None else [0.0, 0.3, 0.5, 0.2, 0.6], "beta_f": beta_f}


def env_config(net, **extra):
    return {"world": world(net), "dataset": "digits", "seed": 0, "budget": 0.5, "p_max": P_MAX,
            "param_budget": 0.6, "beta_p": 2.0, "eval_batch": 64, **extra}


def test_descriptors_and_summary(net):
    cost = CostModel(net)
    d = layer_descriptors(net, cost)
    assert d.shape == (net.num_layers, DESCRIPTOR_DIM) and d.dtype == np.float32
    assert (d >= 0).all() and (d <= 1.0 + 1e-6).all()
    assert np.allclose(d[:, 0], np.arange(5) / 5)
    assert d[-1, -1] == pytest.approx(1.0)  # cumulative MACs share ends at 1
    assert np.all(np.diff(d[:, -1]) > 0)
    r = torch.rand(3, 37) * 5
    s = importance_summary(r)
    assert s.shape == (3, K_BINS)
    assert torch.allclose(s[:, 0], torch.ones(3), atol=1e-5)
    assert (s[:, :-1] >= s[:, 1:] - 1e-6).all()  # still sorted
    assert importance_summary(torch.rand(2, 1)).shape == (2, K_BINS)
    walk = net.walk(torch.randn(4, 1, 8, 8), torch.full((5,), 0.5))
    obs = runtime_observation(walk, d, np.zeros(4), 0.5)
    assert obs.shape == (4, RUNTIME_OBS_DIM) and obs.dtype == np.float32
    assert walk._runtime is None  # observing must not cache a grad-free importance in the walk
    assert torch.equal(current_importance(walk), walk.importance())


@pytest.mark.parametrize("model", ["small", "resnet20"])
def test_macs_meter_parts_add_up_to_cost(model):
    torch.manual_seed(1)
    net = build_model(model, (1, 8, 8), 10).eval()
    cost = CostModel(net)
    meter = MacsMeter(net, cost)
    assert meter.cum_share[-1] == pytest.approx(1.0)
    walk = net.walk(torch.randn(6, 1, 8, 8), torch.full((net.num_layers,), 0.25))
    total = np.zeros(6)
    with torch.no_grad():
        while not walk.done:
            walk.step(torch.rand(6) * 0.9)
            total += meter.spent(walk)
    expected = (cost.macs(walk.runtime_kept, walk.static_kept) / cost.dense_macs).numpy()
    assert np.allclose(total, expected, rtol=0, atol=1e-12)


def test_static_env_passes_gymnasium_checker(net):
    env = StaticLayerEnv(env_config(net))
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (STATIC_OBS_DIM,)


def test_static_env_episode(net):
    env = StaticLayerEnv(env_config(net))
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    rewards = []
    for action in ([-1.0], [5.0], [np.nan], [0.5], [0.2]):  # out of the box: clipped, never raised
        obs, reward, terminated, truncated, _ = env.step(np.array(action, dtype=np.float32))
        assert env.observation_space.contains(obs)
        rewards.append(reward)
    assert terminated and not truncated and rewards[:-1] == [0.0] * 4
    assert np.allclose(env.ratios, [0.0, P_MAX, 0.0, 0.5, 0.2])
    stats = env.pop_stats()
    assert stats["count"] == 1 and 0 <= stats["accuracy"] <= 1
    expected = stats["accuracy"] - 2.0 * max(0.0, stats["params_ratio"] - 0.6)
    assert rewards[-1] == pytest.approx(expected)
    assert env.pop_stats() == {"count": 0}


def test_vector_env_spaces_and_determinism(net):
    env = RuntimeVectorEnv(env_config(net), num_envs=B)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert env.single_action_space == gym.spaces.Box(0.0, P_MAX, (1,), np.float32)
    assert env.action_space.shape == (B, 1) and env.observation_space.shape == (B, RUNTIME_OBS_DIM)
    obs_a, info = env.reset(seed=5)
    assert isinstance(info, dict) and env.observation_space.contains(obs_a)
    actions = env.action_space.sample()
    step_a = env.step(actions)
    obs_b, _ = env.reset(seed=5)
    step_b = env.step(actions)
    assert np.array_equal(obs_a, obs_b)
    for a, b in zip(step_a[:4], step_b[:4]):
        assert np.array_equal(a, b)
    # the RLlib calling convention: one config dict carrying num_envs
    assert RuntimeVectorEnv({**env_config(net), "num_envs": 3}).num_envs == 3


def test_vector_env_clips_actions_and_autoresets_next_step(net):
    env = RuntimeVectorEnv(env_config(net), num_envs=B)
    obs, _ = env.reset(seed=0)
    first_index = env.batch_index.clone()
    wild = np.where(np.arange(B) % 3 == 0, -4.0, np.where(np.arange(B) % 3 == 1, 9.0, np.nan))
    for t in range(net.num_layers):
        obs, reward, terminated, truncated, info = env.step(wild[:, None].astype(np.float32))
        assert env.observation_space.contains(obs)
        assert reward.shape == (B,) and np.isfinite(reward).all() and (reward < 0).all()
        assert not truncated.any()
        assert terminated.all() == (t == net.num_layers - 1) and terminated.any() == terminated.all()
    kept = env.walk.runtime_kept  # -4 and NaN -> ratio 0 (all static channels), 9 -> p_max
    assert (kept[0] > kept[1]).all() and torch.equal(kept[0], kept[2])
    # NEXT_STEP: the step after the terminal one ignores actions, starts a new batch, reward 0.
    obs, reward, terminated, truncated, info = env.step(np.full((B, 1), 123.0, dtype=np.float32))
    assert (reward == 0).all() and not terminated.any() and not truncated.any()
    assert env.observation_space.contains(obs) and env.walk.t == 0
    assert not torch.equal(env.batch_index, first_index)
    obs2, reward, terminated, *_ = env.step(np.zeros((B, 1), dtype=np.float32))
    assert not terminated.any() and env.walk.t == 1
    stats = env.pop_stats()
    assert stats["count"] == B and len(stats["macs_ratios"]) == B and env.pop_stats() == {"count": 0}


def test_vector_env_return_is_exact(net):
    """Episode return per input = -CE - beta_f * macs/dense, computed independently."""
    beta_f = 0.7
    env = RuntimeVectorEnv(env_config(net), num_envs=B)
    env.reset(seed=11)
    x, y = load("digits", 0).train
    index = env.batch_index.clone()
    rng = np.random.default_rng(0)
    ratios = rng.uniform(0, P_MAX, size=(B, net.num_layers)).astype(np.float32)
    returns = np.zeros(B)
    for t in range(net.num_layers):
        _, reward, terminated, *_ = env.step(ratios[:, t:t + 1])
        returns += reward
    assert terminated.all()
    static = torch.tensor(world(net)["static_ratios"])
    with torch.no_grad():
        logits, walk = net.forward_walk(x[index], static, torch.from_numpy(ratios))
        ce = F.cross_entropy(logits, y[index], reduction="none").double()
    cost = CostModel(net)
    macs = cost.macs(walk.runtime_kept, walk.static_kept) / cost.dense_macs
    expected = (-ce - beta_f * macs).numpy()
    assert np.allclose(returns, expected, rtol=0, atol=1e-9)
    stats = env.pop_stats()
    assert stats["macs_ratio"] == pytest.approx(float(macs.mean()))
    assert stats["return"] == pytest.approx(float(expected.mean()))


def test_vector_env_world_changes_between_episodes_only(net):
    env = RuntimeVectorEnv(env_config(net), num_envs=B)
    env.reset(seed=0)
    env.step(np.zeros((B, 1), dtype=np.float32))
    env.set_world(world(net, beta_f=5.0))
    assert env.beta_f == pytest.approx(0.7)  # mid-episode: unchanged
    for _ in range(net.num_layers - 1):
        env.step(np.zeros((B, 1), dtype=np.float32))
    env.step(np.zeros((B, 1), dtype=np.float32))  # autoreset step loads the new world
    assert env.beta_f == pytest.approx(5.0)
