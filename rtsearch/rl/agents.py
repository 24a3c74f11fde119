"""RLlib (new API stack, PPO) configurations of the two agents, and reaching their envs (docs/method.md).

- the runtime agent: single-agent PPO on `RuntimeVectorEnv`, passed to RLlib with
  `gym_env_vectorize_mode="vector_entry_point"` so one env step is one batched network forward;
- the static agent: single-agent PPO on `StaticLayerEnv`.

Each sample() call of either agent ends exactly on an episode boundary (the rollout fragment is a
whole number of L-step episodes), so a world pushed between two `train()` calls (`push_world`) is
seen by whole episodes only. Their greedy use is rtsearch.rl.policies.
"""
from __future__ import annotations

import math

import numpy as np
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from rtsearch.config import RunConfig
from rtsearch.rl.runtime_env import RuntimeVectorEnv
from rtsearch.rl.static_env import StaticLayerEnv
from rtsearch.rl.world import n_layers

HIDDEN = [64, 64]
RUNTIME_BATCHES_PER_ITERATION = 12  # batches of B inputs (each an L-step episode) per runtime update
STATIC_EPISODES_PER_ITERATION = 32


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------

def _log_env_metrics(env_runner, metrics_logger, **kwargs) -> None:
    """on_sample_end callback: the env's own means (macs_ratio, ce, accuracy) as custom metrics."""
    env = getattr(env_runner, "env", None)
    env = getattr(env, "unwrapped", None)
    pop = getattr(env, "pop_rllib_stats", None)
    if pop is None:
        return
    stats = pop()
    if stats.get("count"):
        for key in ("macs_ratio", "ce", "accuracy"):
            metrics_logger.log_value(("rtsearch", key), float(stats[key]), reduce="mean", window=20)


def agent_model_config(use_lstm: bool, max_seq_len: int, hidden: list[int] = HIDDEN) -> DefaultModelConfig:
    if use_lstm:
        return DefaultModelConfig(fcnet_hiddens=hidden, use_lstm=True, lstm_cell_size=hidden[-1],
                                  max_seq_len=max_seq_len)
    return DefaultModelConfig(fcnet_hiddens=hidden)


# The two agents never sample at the same time (runtime update, then static update), so runner i of
# each shares one CPU: N CPUs for 2N runners, and a trial's placement group has one 1-CPU bundle per
# runner pair (rtsearch.tune.placement). A full CPU each (2N bundles) would keep N reserved CPUs idle
# at any moment; a static agent without remote runners would sample on the trial's own CPU, one
# episode after another, never on the other nodes of a cluster.
CPUS_PER_ENV_RUNNER = 0.5
# A lost env runner (its node died) fails the algorithm's train() and so the trial, which Tune
# retries from its last checkpoint (at most one iteration lost). RLlib's in-place restart would hand
# the new runner an env without the current network, pushed once per iteration (push_world).


def env_runner_nodes(algo) -> set:
    """Ids of the Ray nodes the algorithm's remote env runners run on (empty without remote runners)."""
    import ray
    if algo.env_runner_group.num_remote_env_runners() == 0:
        return set()
    return set(algo.env_runner_group.foreach_env_runner(lambda runner: ray.get_runtime_context().get_node_id(),
                                                       local_env_runner=False))


def _learner_on_gpu(config: PPOConfig, gpu: bool) -> PPOConfig:
    """The local learner trains on the trial's GPU when the run has one; env runners stay on CPUs."""
    return config.learners(num_learners=0, num_gpus_per_learner=1) if gpu else config


def runtime_algo_config(cfg: RunConfig, env_config: dict, batch: int = 256, gpu: bool = False) -> PPOConfig:
    """PPO for the runtime agent: B = `batch` inputs per env (runner), RUNTIME_BATCHES_PER_ITERATION
    batches per iteration (rounded up to a multiple of the runner count)."""
    L = n_layers(env_config["world"])
    runners = max(1, cfg.num_env_runners)
    episodes = max(1, math.ceil(RUNTIME_BATCHES_PER_ITERATION / runners))  # per runner and sample() call
    fragment = L * episodes
    train_batch = runners * batch * fragment
    return _learner_on_gpu((
        PPOConfig()
        .environment(RuntimeVectorEnv, env_config=dict(env_config))
        .env_runners(num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=batch,
                     gym_env_vectorize_mode="vector_entry_point", rollout_fragment_length=fragment,
                     batch_mode="truncate_episodes", num_cpus_per_env_runner=CPUS_PER_ENV_RUNNER)
        .fault_tolerance(restart_failed_env_runners=False)
        .training(lr=cfg.lr_runtime, gamma=1.0, lambda_=0.95, train_batch_size_per_learner=train_batch,
                  minibatch_size=max(batch * L, train_batch // 4), num_epochs=4)
        .rl_module(model_config=agent_model_config(cfg.lstm, L))
        .callbacks(on_sample_end=_log_env_metrics)
        .debugging(seed=cfg.seed)
    ), gpu)


def static_algo_config(cfg: RunConfig, env_config: dict, gpu: bool = False) -> PPOConfig:
    """PPO for the static agent: ~32 episodes (L steps each) per iteration."""
    L = n_layers(env_config["world"])
    runners = max(1, cfg.num_env_runners)
    episodes = max(1, math.ceil(STATIC_EPISODES_PER_ITERATION / runners))
    fragment = L * episodes
    train_batch = runners * fragment
    return _learner_on_gpu((
        PPOConfig()
        .environment(StaticLayerEnv, env_config=dict(env_config))
        .env_runners(num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=1,
                     rollout_fragment_length=fragment, batch_mode="truncate_episodes",
                     num_cpus_per_env_runner=CPUS_PER_ENV_RUNNER)
        .fault_tolerance(restart_failed_env_runners=False)
        .training(lr=cfg.lr_static, gamma=1.0, lambda_=0.95, train_batch_size_per_learner=train_batch,
                  minibatch_size=max(L, train_batch // 4), num_epochs=8)
        .rl_module(model_config=agent_model_config(False, L))
        .debugging(seed=cfg.seed)
    ), gpu)


# --------------------------------------------------------------------------------------------
# Reaching the envs inside the env runners
# --------------------------------------------------------------------------------------------

def envs_of(runner) -> list:
    """The rtsearch env objects inside one EnvRunner (none on a local runner without env)."""
    env = getattr(runner, "env", None)
    if env is None:
        return []
    env = env.unwrapped
    if hasattr(env, "set_world"):          # vector_entry_point: the VectorEnv itself
        return [env]
    return [e.unwrapped for e in getattr(env, "envs", [])]  # gymnasium's SyncVectorEnv


def restore(algo, path: str) -> None:
    """Restore an algorithm from `save_to_path` output, its env runners' policies included.

    RLlib's env runners skip module weights whose sequence number is not newer than their own, so
    going back to an earlier checkpoint would leave them acting with the later policy; set the
    restored learner weights on every runner's module directly.
    """
    algo.restore_from_path(path)
    _push_learner_weights(algo)


def _push_learner_weights(algo) -> None:
    state = algo.learner_group.get_state(components="learner/rl_module", inference_only=True)
    weights = state["learner"]["rl_module"][DEFAULT_MODULE_ID]
    algo.env_runner_group.foreach_env_runner(lambda runner: runner.module.set_state(weights), local_env_runner=True)


def initialize_policy(algo, ratio: float, p_max: float, log_std: float = -1.6) -> None:
    """Start the Gaussian policy at mean action `ratio` with a narrow spread.

    An untrained PPO policy acts around the middle of the box with std 1 (in RLlib's normalised
    action space), i.e. it prunes about p_max / 2 everywhere at random, which wrecks a fine-tuned
    network before the agent has learnt anything. Starting at the uniform solution (the baseline's
    ratio) lets the agents improve on it instead.
    """
    normalised = 2.0 * min(max(ratio, 0.0), p_max) / p_max - 1.0

    def init(learner):
        module = learner.module[DEFAULT_MODULE_ID]
        last = [m for m in module.pi.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(0.01)
            half = last.bias.shape[0] // 2
            last.bias[:half] = normalised
            last.bias[half:] = log_std

    algo.learner_group.foreach_learner(init)
    _push_learner_weights(algo)


def push_world(algo, payload: dict) -> None:
    """Set the world on every env of the local and all remote env runners.

    Remote runners get the payload through the object store (one copy, `ray.put`), each resolves it
    and calls `env.set_world`. The runtime env applies it from its next batch, never mid-episode.
    """
    group = algo.env_runner_group
    local = group.local_env_runner
    if local is not None:
        for env in envs_of(local):
            env.set_world(payload)
    if group.num_remote_env_runners() > 0:
        ref = ray.put(payload)

        def apply(runner):
            world = ray.get(ref)
            for env in envs_of(runner):
                env.set_world(world)
            return len(envs_of(runner))

        group.foreach_env_runner(apply, local_env_runner=False)


def pop_env_stats(algo) -> dict:
    """pop_stats() of every env of every runner, averaged weighted by episode count."""
    group = algo.env_runner_group

    def pop(runner):
        return [env.pop_stats() for env in envs_of(runner)]

    parts = []
    if group.local_env_runner is not None:
        parts += pop(group.local_env_runner)
    if group.num_remote_env_runners() > 0:
        for res in group.foreach_env_runner(pop, local_env_runner=False):
            parts += res
    return merge_stats(parts)


def merge_stats(parts: list[dict]) -> dict:
    total = sum(p.get("count", 0) for p in parts)
    out: dict = {"count": total}
    if not total:
        return out
    keys = {k for p in parts for k, v in p.items() if k not in ("count", "macs_ratios") and np.isscalar(v)}
    for k in sorted(keys):
        out[k] = sum(p[k] * p["count"] for p in parts if k in p and p.get("count")) / total
    ratios = [p["macs_ratios"] for p in parts if "macs_ratios" in p]
    if ratios:
        out["macs_ratios"] = np.concatenate(ratios)
    return out
