"""The static agent's environment (`StaticLayerEnv`): one episode walks the L prunable layers
once; the agent picks one static pruning ratio per layer and is rewarded at the end by the accuracy
the network reaches on a held-out batch under the current runtime policy, minus the
parameter-budget penalty.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.supervised import fixed_policy, policy_forward
from rtsearch.rl.observations import OBS_BOUND, STATIC_OBS_DIM, layer_descriptors, static_observation
from rtsearch.rl.policies import runtime_policy
from rtsearch.rl.world import Tally, train_split, world_network


class StaticLayerEnv(gym.Env):
    """One episode decides the static pruning ratio of each of the L layers in turn.

    Observation: descriptor of layer t, parameters kept so far (fraction of dense; undecided layers
    dense), param_budget minus that, the ratio chosen at t - 1. Reward 0 until the last layer, then
    accuracy on a random `eval_batch` sample of the train split under the current runtime policy
    (world["runtime_module"]; None means runtime ratios 0) - beta_p * max(0, params_ratio - param_budget).
    With env_config["static_macs_budget"] (static-only runs, where nothing else meets the MACs
    budget) it also subtracts beta_p * max(0, macs_ratio - budget).
    """

    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None, **kwargs):
        config = {**dict(config or {}), **kwargs}
        self.budget = float(config.get("budget", 0.5))
        self.p_max = float(config.get("p_max", 0.95))
        self.param_budget = float(config.get("param_budget", 1.0))
        self.beta_p = float(config.get("beta_p", 2.0))
        self.eval_batch = int(config.get("eval_batch", 512))
        self.static_macs_budget = bool(config.get("static_macs_budget", False))
        self.cost_predictors = bool(config.get("cost_predictors", True))
        self.device = torch.device(config.get("device", "cpu"))
        self.x, self.y = (t.to(self.device) for t in train_split(config))
        self._np_random, _ = gym.utils.seeding.np_random(int(config.get("seed", 0)) + 1)
        self.set_world(config["world"])
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (STATIC_OBS_DIM,), np.float32)
        self.action_space = spaces.Box(0.0, self.p_max, (1,), np.float32)
        self.tally = Tally("accuracy", "params_ratio", "macs_ratio", "return")
        self._start()

    def set_world(self, payload: dict) -> None:
        """Network and runtime policy used by the rewards of episodes that end from now on."""
        self.net = world_network(payload).to(self.device)
        self.cost = CostModel(self.net, predictors=self.cost_predictors)
        self.descriptors = layer_descriptors(self.net, self.cost)
        self.runtime_module = payload.get("runtime_module")
        self._policy = None
        if self.runtime_module is not None:
            self._policy = runtime_policy(self.runtime_module, self.net, self.cost, self.descriptors, self.budget,
                                          self.p_max)

    def _start(self):
        self.t = 0
        self.ratios = np.zeros(self.net.num_layers, dtype=np.float32)
        self.prev = 0.0

    def params_ratio(self, ratios) -> float:
        return self.cost.params_ratio(static_kept_for(self.cost.widths, ratios))

    def _obs(self) -> np.ndarray:
        return static_observation(self.descriptors, self.t, self.params_ratio(self.ratios), self.param_budget,
                                  self.prev)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._start()
        return self._obs(), {}

    def step(self, action):
        ratio = float(np.clip(np.nan_to_num(np.asarray(action, dtype=np.float32).reshape(-1)[0], nan=0.0),
                              0.0, self.p_max))
        self.ratios[self.t] = ratio
        self.prev = ratio
        self.t += 1
        if self.t < self.net.num_layers:
            return self._obs(), 0.0, False, False, {}
        acc, macs = self.evaluate(self.ratios)
        params = self.params_ratio(self.ratios)
        reward = acc - self.beta_p * max(0.0, params - self.param_budget)
        if self.static_macs_budget:
            reward -= self.beta_p * max(0.0, macs - self.budget)
        self.tally.add(1, accuracy=acc, params_ratio=params, macs_ratio=macs, **{"return": reward})
        return self._obs(), float(reward), True, False, {}

    def evaluate(self, static_ratios) -> tuple[float, float]:
        """(accuracy, mean MACs ratio) on a fresh random eval batch under the current runtime policy."""
        n = len(self.x)
        idx = torch.from_numpy(self.np_random.choice(n, min(self.eval_batch, n), replace=False))
        ratios = torch.as_tensor(static_ratios, dtype=torch.float32)
        policy = self._policy or fixed_policy(torch.zeros(self.net.num_layers))
        with torch.no_grad():
            logits, walk = policy_forward(self.net, self.x[idx], ratios, policy)
            acc = float((logits.argmax(1) == self.y[idx]).float().mean())
            macs = float(self.cost.macs_ratio(walk.runtime_kept, walk.static_kept).mean())
        return acc, macs

    def pop_stats(self) -> dict:
        """Means over episodes ended since the last call: accuracy, params_ratio, macs_ratio, return; count."""
        return self.tally.pop()

    def pop_rllib_stats(self) -> dict:
        return {}
