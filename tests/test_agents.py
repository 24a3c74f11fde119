"""The two RLlib agents (new API stack PPO) on digits / small, kept small for 2 busy cores."""
import time

import numpy as np
import pytest
import ray
import torch

from rtsearch.rl import agents, policies
from rtsearch import methods
from rtsearch.config import RunConfig
from rtsearch.net.cost import CostModel
from rtsearch.data import load
from rtsearch.rl.observations import layer_descriptors
from rtsearch.net.models import build_model
from rtsearch.net.supervised import evaluate, policy_forward

# every test needs the module's Ray session and PPO algorithm (11-24 s to set up): make test only
pytestmark = pytest.mark.slow

B = 32
P_MAX = 0.9
L = 5
BATCHES = agents.RUNTIME_BATCHES_PER_ITERATION     # batches of B inputs per runtime update


@pytest.fixture(scope="module")
def ray_session():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two busy cores: torch's thread pool only contends
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("small", (1, 8, 8), 10).eval()


@pytest.fixture(scope="module")
def splits():
    return load("digits", 0)


def world(net, beta_f=1.0, module=None):
    return {"model": net.config(), "state_dict": net.state_dict(), "static_ratios": [0.0, 0.2, 0.2, 0.4, 0.4],
            "beta_f": beta_f, "runtime_module": module}


def env_config(net):
    return {"world": world(net), "dataset": "digits", "seed": 0, "data_dir": None, "budget": 0.5, "p_max": P_MAX,
            "param_budget": 0.7, "beta_p": 2.0, "eval_batch": 64}


def cfg(**kw):
    return methods.configured(RunConfig(**{"dataset": "digits", "model": "small", "method": "both",
                                           "num_env_runners": 0, "p_max": P_MAX, **kw}))


@pytest.fixture(scope="module")
def runtime_algo(ray_session, net):
    algo = agents.runtime_algo_config(cfg(), env_config(net), batch=B).build_algo()
    yield algo
    algo.stop()


def test_runtime_agent_trains_and_syncs_world(runtime_algo, net):
    algo = runtime_algo
    for i, beta_f in enumerate((1.0, 3.0)):
        agents.push_world(algo, world(net, beta_f))
        start = time.perf_counter()
        result = algo.train()
        seconds = time.perf_counter() - start
        steps = result["env_runners"]["num_env_steps_sampled"]
        print(f"runtime iteration {i}: {seconds:.2f} s, {steps} agent steps, {steps / seconds:.0f} steps/s")
        assert steps == BATCHES * B * L
        stats = agents.pop_env_stats(algo)
        assert stats["count"] == BATCHES * B and len(stats["macs_ratios"]) == BATCHES * B
        assert 0 < stats["macs_ratio"] <= 1 and 0 <= stats["accuracy"] <= 1
        # the batch's return is -CE - beta_f * macs, on average too
        assert stats["return"] == pytest.approx(-stats["ce"] - beta_f * stats["macs_ratio"])
        assert "rtsearch" in result["env_runners"]
    assert agents.pop_env_stats(algo) == {"count": 0}


def test_rllib_sees_whole_episodes_and_greedy_actions_match(runtime_algo, net):
    """Sampled through RLlib's env runner, every episode is exactly L steps (NEXT_STEP autoreset
    spliced nothing), and deterministic_actions reproduces the runner's explore=False actions."""
    algo = runtime_algo
    agents.pop_env_stats(algo)
    episodes = algo.env_runner.sample(num_timesteps=B * L, explore=False)
    done = [e for e in episodes if e.is_done]
    assert len(done) == B and all(len(e) == L and e.is_terminated for e in done)
    stats = agents.pop_env_stats(algo)
    assert np.mean([e.get_return() for e in done]) == pytest.approx(stats["return"], rel=1e-5)
    module = algo.get_module()
    obs = np.concatenate([np.asarray(e.get_observations())[:-1] for e in done])
    raw = np.concatenate([np.asarray(e.get_actions()) for e in done])
    actions, _ = policies.deterministic_actions(module, obs, 0.0, P_MAX)
    assert np.allclose(actions, np.clip((raw + 1.0) * P_MAX / 2.0, 0.0, P_MAX), atol=1e-5)


def test_runtime_policy_drives_evaluate(runtime_algo, net, splits):
    cost = CostModel(net)
    policy = policies.runtime_policy(runtime_algo.get_module(), net, cost, layer_descriptors(net, cost), 0.5, P_MAX)
    result = evaluate(net, cost, *splits.val, torch.tensor(world(net)["static_ratios"]), policy, batch_size=128)
    assert 0 <= result["accuracy"] <= 1 and 0 < result["macs_ratio"] <= 1
    assert len(result["per_input"]["macs_ratio"]) == len(splits.val[0])


def test_finetuning_under_runtime_policy_trains_predictors(runtime_algo):
    torch.manual_seed(0)
    net = build_model("small", (1, 8, 8), 10).train()
    cost = CostModel(net)
    policy = policies.runtime_policy(runtime_algo.get_module(), net, cost, layer_descriptors(net, cost), 0.5, P_MAX)
    logits, _ = policy_forward(net, torch.randn(8, 1, 8, 8), None, policy)
    logits.square().sum().backward()
    assert all(g.predictor.weight.grad is not None and g.predictor.weight.grad.abs().sum() > 0 for g in net.gates)


def test_static_agent_trains(ray_session, runtime_algo, net):
    algo = agents.static_algo_config(cfg(), env_config(net)).build_algo()
    try:
        for i in range(2):
            agents.push_world(algo, world(net, module=runtime_algo.get_module()))
            start = time.perf_counter()
            result = algo.train()
            print(f"static iteration {i}: {time.perf_counter() - start:.2f} s")
            assert result["env_runners"]["num_env_steps_sampled"] == 32 * L
            stats = agents.pop_env_stats(algo)
            assert stats["count"] == 32 and 0 <= stats["accuracy"] <= 1 and 0 < stats["params_ratio"] <= 1
        cost = CostModel(net)
        ratios = policies.static_ratios(algo.get_module(), net, cost, layer_descriptors(net, cost), 0.7, P_MAX)
        assert ratios.shape == (L,) and ((ratios >= 0) & (ratios <= P_MAX)).all()
    finally:
        algo.stop()


def test_lstm_runtime_agent(ray_session, net, splits):
    algo = agents.runtime_algo_config(cfg(lstm=True), env_config(net), batch=B).build_algo()
    try:
        module = algo.get_module()
        assert module.is_stateful()
        algo.train()
        cost = CostModel(net)
        policy = policies.runtime_policy(algo.get_module(), net, cost, layer_descriptors(net, cost), 0.5, P_MAX)
        result = evaluate(net, cost, *splits.val, None, policy, batch_size=128)
        assert 0 <= result["accuracy"] <= 1 and 0 < result["macs_ratio"] <= 1
    finally:
        algo.stop()


def test_remote_env_runner_gets_the_world(ray_session, net):
    """With a remote runner the world goes through the object store to the runner's env."""
    algo = agents.runtime_algo_config(cfg(num_env_runners=1), env_config(net), batch=B).build_algo()
    try:
        agents.push_world(algo, world(net, beta_f=4.0))
        seen = algo.env_runner_group.foreach_env_runner(
            lambda runner: [env._pending["beta_f"] if env._pending else env.beta_f for env in agents.envs_of(runner)],
            local_env_runner=False)
        assert seen == [[4.0]]
        assert agents.env_runner_nodes(algo) == {ray.get_runtime_context().get_node_id()}
        algo.train()
        stats = agents.pop_env_stats(algo)
        assert stats["count"] == BATCHES * B
        assert stats["return"] == pytest.approx(-stats["ce"] - 4.0 * stats["macs_ratio"])
    finally:
        algo.stop()


def _greedy(algo, obs):
    return policies.deterministic_actions(algo.get_module(), obs, 0.0, P_MAX)[0]


def test_restore_to_an_earlier_checkpoint_reaches_the_acting_policy(runtime_algo, tmp_path):
    # RLlib's env runners skip weights whose sequence number is not newer than theirs; restoring
    # the best (earlier) iteration must still change the policy that acts.
    obs = np.random.default_rng(0).normal(size=(16, runtime_algo.get_module().config.observation_space.shape[0]))
    obs = obs.astype(np.float32)
    runtime_algo.save_to_path(str(tmp_path / "early"))
    early = _greedy(runtime_algo, obs)
    runtime_algo.train()
    assert not np.allclose(_greedy(runtime_algo, obs), early)
    agents.restore(runtime_algo, str(tmp_path / "early"))
    np.testing.assert_allclose(_greedy(runtime_algo, obs), early, atol=1e-6)


def test_initialized_policy_starts_at_the_requested_ratio(ray_session, net):
    algo = agents.runtime_algo_config(cfg(seed=3), env_config(net), batch=B).build_algo()
    try:
        agents.initialize_policy(algo, 0.6, P_MAX)
        obs = np.random.default_rng(1).normal(size=(8, algo.get_module().config.observation_space.shape[0]))
        actions = _greedy(algo, obs.astype(np.float32))
        np.testing.assert_allclose(actions, 0.6, atol=0.02)
    finally:
        algo.stop()
