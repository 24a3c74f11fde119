"""RLlib PPO (new API stack) for the paper's two agents: recurrent policies across layers on `PaperVectorEnv`.

Both are the paper's actor-critic: a linear encoder with ReLU (RLlib's tokenizer), an LSTM of 128 units across the
layers, linear heads for the Gaussian's mean and log-spread and for the value (shared trunk). The action space is
[-1, 1], so what RLlib samples is the decoder's output and the env adds the width budget to it (the Gaussian's mean is
budget + output). One `train()` is one PPO update on one batch of `paper_batch` inputs per env runner, as the paper
updates once per 128-image batch; PPO as its code: gamma 0.999, GAE lambda 0.95, clip 0.2, one epoch, minibatches
of 64 inputs, no entropy bonus, gradients clipped at 0.5.
"""
from __future__ import annotations

import numpy as np
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from rtsearch.config import RunConfig
from rtsearch.rl.agents import CPUS_PER_ENV_RUNNER, envs_of, initialize_policy
from rtsearch.rl.paper_env import PaperVectorEnv

CELLS = 128             # the paper's recurrent state
INITIAL_LOG_STD = -4.0  # the paper's initial log-spread: std 0.018
MINIBATCH_INPUTS = 64


def model_config(layers: int, recurrent: bool = True) -> DefaultModelConfig:
    """The encoder then the LSTM; not `recurrent` (`--no-paper-recurrent`): the encoder then a feed-forward layer of
    as many units in the LSTM's place, so only the memory across layers differs."""
    if not recurrent:
        return DefaultModelConfig(fcnet_hiddens=[CELLS, CELLS], fcnet_activation="relu", head_fcnet_hiddens=[],
                                  vf_share_layers=True)
    return DefaultModelConfig(fcnet_hiddens=[CELLS], fcnet_activation="relu", use_lstm=True, lstm_cell_size=CELLS,
                              max_seq_len=layers, head_fcnet_hiddens=[], vf_share_layers=True)


def algo_config(cfg: RunConfig, env_config: dict, role: str, layers: int, gpu: bool = False) -> PPOConfig:
    """PPO of one agent (`role`): each train() one batch of cfg.paper_batch inputs per runner."""
    runners = max(1, cfg.num_env_runners)
    batch = cfg.paper_batch
    train_batch = runners * batch * layers
    lr = cfg.paper_lr_runtime if role == "runtime" else cfg.paper_lr_static
    config = (
        PPOConfig()
        .environment(PaperVectorEnv, env_config={**env_config, "role": role})
        .env_runners(num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=batch,
                     gym_env_vectorize_mode="vector_entry_point", rollout_fragment_length=layers,
                     batch_mode="truncate_episodes", num_cpus_per_env_runner=CPUS_PER_ENV_RUNNER)
        .fault_tolerance(restart_failed_env_runners=False)
        .training(lr=lr, gamma=0.999, lambda_=0.95, clip_param=0.2, entropy_coeff=0.0, grad_clip=0.5,
                  train_batch_size_per_learner=train_batch,
                  minibatch_size=min(train_batch, MINIBATCH_INPUTS * layers), num_epochs=1)
        .rl_module(model_config=model_config(layers, cfg.paper_recurrent))
        .debugging(seed=cfg.seed + (0 if role == "runtime" else 1))
    )
    return config.learners(num_learners=0, num_gpus_per_learner=1) if gpu else config


def build(cfg: RunConfig, env_config: dict, role: str, layers: int, gpu: bool = False):
    """The algorithm, its policy started at decoder output 0 (mean = the width budget) with a small spread."""
    algo = algo_config(cfg, env_config, role, layers, gpu).build_algo()
    initialize_policy(algo, 0.5, 1.0, log_std=INITIAL_LOG_STD)     # normalised mean 0: output 0
    return algo


def pop_stats(algo) -> dict:
    """The envs' means since the last call (weighted by inputs) and the last env's running-mean state."""
    group = algo.env_runner_group
    parts = [env.pop_stats() for env in envs_of(group.local_env_runner)] if group.local_env_runner else []
    if group.num_remote_env_runners() > 0:
        for found in group.foreach_env_runner(lambda r: [e.pop_stats() for e in envs_of(r)], local_env_runner=False):
            parts += found
    out = {"mean_state": parts[-1]["mean_state"]} if parts else {}
    total = sum(p.get("count", 0) for p in parts)
    for key in ("macs_ratio", "ce", "accuracy", "return", "params_ratio", "overflowed"):
        if total:
            out[key] = float(sum(p[key] * p["count"] for p in parts if p.get("count")) / total)
        else:
            out[key] = float(np.nan)
    return out
