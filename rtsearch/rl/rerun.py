"""The re-run agent: once a cheap network has answered an input, keep that answer or re-run the input on one
dearer network, paying both (the runtime policy of the ladder method, rtsearch.methods.ladder).

One decision per input, so an episode is one step. Every action's answer on every input is computed before
training, and an env step is a table lookup: RLlib PPO samples 4,096 decisions in milliseconds. The agent
observes only the cheap pass (its sorted class probabilities, their normalised entropy, the predicted class
one-hot), never the label. An action is charged `charge` (the answer's cross-entropy, or 1 for a wrong answer)
plus beta times the MACs it adds. After every iteration beta moves towards the re-run share the budget leaves
(on validation), and a shift on the logits (`calibration_shift`) puts the greedy policy onto the budget.
"""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from rtsearch.config import RunConfig

ENVS = 512                 # inputs per env step (one step is one decision per input)
BATCHES_PER_ITERATION = 8  # PPO samples 8 x 512 decisions per update
SHIFT_BOUND = 100.0        # the calibration shift's range, in logits per unit of MACs ratio
LR = RunConfig.lr_rerun
ENTROPY = RunConfig.entropy_rerun


def choices(outputs: list[dict], cheap: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per input and action (0 keep, a: re-run on outputs[cheap + a]): CE of the answer and whether it is right.
    `outputs[i][split]` holds a network's "log_probs" and "labels" (rtsearch.methods.ladder.split_outputs)."""
    y = outputs[cheap][split]["labels"]
    ce, right = [], []
    for level in outputs[cheap:]:
        lp = level[split]["log_probs"]
        lp = lp - np.logaddexp.reduce(lp, 1, keepdims=True)
        ce.append(-lp[np.arange(len(y)), y])
        right.append(lp.argmax(1) == y)
    return np.stack(ce, 1).astype(np.float32), np.stack(right, 1)


def charge(ce: np.ndarray, right: np.ndarray, reward: str) -> np.ndarray:
    """What each (input, action) is charged besides its MACs: the answer's cross-entropy ("ce"), or 1 if the
    answer is wrong and 0 if it is right ("error", what accuracy counts)."""
    return ce if reward == "ce" else (~right).astype(np.float32)


class RerunVectorEnv(gym.vector.VectorEnv):
    """B inputs decide at once; each episode is one step (keep, or re-run at a wider level). NEXT_STEP
    autoreset, as the runtime env: the step after a terminal one loads new inputs with reward 0."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None, num_envs: int | None = None, **kwargs):
        config = {**dict(config or {}), **kwargs}
        self.num_envs = int(num_envs or config.get("num_envs", ENVS))
        self.obs, self.ce, self.extra = config["obs"], config["ce"], np.asarray(config["extra"], np.float32)
        self.beta = float(config["beta"])
        self._rng = np.random.default_rng(int(config.get("seed", 0)))
        self.single_observation_space = spaces.Box(-1.0, 1.0, (self.obs.shape[1],), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = spaces.Discrete(self.ce.shape[1])
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset = True

    def set_world(self, payload: dict) -> None:
        """rtsearch.rl.agents.push_world: a new beta, from the next step on."""
        self.beta = float(payload["beta"])

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed if np.isscalar(seed) else list(seed)[0])
        return self._draw(), {}

    def _draw(self) -> np.ndarray:
        self._idx = self._rng.integers(0, len(self.obs), self.num_envs)
        self._needs_reset = False
        return self.obs[self._idx]

    def step(self, actions):
        B = self.num_envs
        if self._needs_reset:
            return self._draw(), np.zeros(B), np.zeros(B, bool), np.zeros(B, bool), {}
        a = np.asarray(actions, dtype=np.int64).reshape(B)
        reward = -self.ce[self._idx, a] - self.beta * self.extra[a]
        self._needs_reset = True
        return self.obs[self._idx], reward.astype(np.float64), np.ones(B, bool), np.zeros(B, bool), {}


def action_logits(actor: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
    """The actor's logits per input (actor: the plain torch layers of rtsearch.rl.actor.actor_network)."""
    with torch.no_grad():
        return actor(torch.as_tensor(obs)).numpy()


def greedy(logits: np.ndarray, extra: np.ndarray, shift: float) -> np.ndarray:
    return (logits - shift * extra).argmax(1)


def calibration_shift(logits: np.ndarray, extra: np.ndarray, spare: float) -> float:
    """The smallest shift in [-SHIFT_BOUND, SHIFT_BOUND] whose greedy actions spend at most `spare` re-run
    MACs on average: the bisection that calibrates a run's runtime shift (net.baseline.budget_shift)."""
    from rtsearch.net.baseline import budget_shift
    return budget_shift(lambda shift: extra[greedy(logits, extra, shift)].mean(), spare, SHIFT_BOUND, steps=50)


def train_agent(obs: np.ndarray, charged: np.ndarray, extra: np.ndarray, spare: float, val_obs: np.ndarray,
                seed: int, iterations: int = 40, lr: float = LR, entropy: float = ENTROPY,
                after_iteration=None, width: int = RunConfig.rerun_width,
                num_env_runners: int = 0) -> tuple[torch.nn.Module, float]:
    """Train the agent with RLlib PPO on inputs `obs` charged `charged` (inputs x actions) plus beta times
    `extra` (each action's added MACs ratio). After every iteration beta follows the greedy re-run MACs on
    `val_obs` towards `spare`, and `after_iteration(iteration, actor, beta)` sees the live actor. The policy and
    value networks have two hidden layers of `width`; `num_env_runners` rollout workers (0: the driver samples).
    Returns a copy of the final actor as plain torch layers, and the final beta."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from rtsearch.rl.agents import agent_model_config, push_world
    from rtsearch.rl.actor import actor_network

    beta = 1.0 / max(spare, 1e-3)      # a first scale: one unit of charge per budget's worth of spare MACs
    config = (PPOConfig()
              .environment(RerunVectorEnv, env_config={"obs": obs, "ce": charged, "extra": extra, "beta": beta,
                                                       "seed": seed})
              .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=ENVS,
                           gym_env_vectorize_mode="vector_entry_point",
                           rollout_fragment_length=BATCHES_PER_ITERATION, batch_mode="truncate_episodes")
              .training(lr=lr, gamma=1.0, lambda_=1.0, train_batch_size_per_learner=ENVS * BATCHES_PER_ITERATION,
                        minibatch_size=ENVS * 2, num_epochs=4, entropy_coeff=entropy)
              .rl_module(model_config=agent_model_config(False, 1, [width, width]))
              .debugging(seed=seed))
    algo = config.build_algo()
    try:
        for iteration in range(1, iterations + 1):
            algo.train()
            actor = actor_network(algo.get_module())
            rerun = extra[greedy(action_logits(actor, val_obs), extra, 0.0)].mean()
            beta = beta * float(np.exp(np.clip((rerun - spare) / max(spare, 1e-3), -1, 1)))
            push_world(algo, {"beta": beta})
            if after_iteration:
                after_iteration(iteration, actor, beta)
        return copy.deepcopy(actor_network(algo.get_module())).eval(), beta
    finally:
        algo.stop()
