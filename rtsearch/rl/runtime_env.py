"""The runtime agent's environment (`RuntimeVectorEnv`): a natively batched
`gymnasium.vector.VectorEnv`; each sub-env is one input image, one step is one prunable layer for the
whole batch (one network forward, `Walk.step`). The agent picks one runtime pruning ratio per input
and layer. Why batched and why NEXT_STEP autoreset: see docs/method.md, "Why this shape on RLlib".
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from rtsearch.net.cost import CostModel
from rtsearch.net.models import Walk
from rtsearch.rl import budgets
from rtsearch.rl.observations import (OBS_BOUND, RUNTIME_OBS_DIM, MacsMeter, layer_descriptors, runtime_observation,
                                      terminal_runtime_observation)
from rtsearch.rl.world import Tally, train_split, world_network


class RuntimeVectorEnv(gym.vector.VectorEnv):
    """B inputs walk the prunable layers together; sub-env i is input i of the current batch.

    Reward of input x at layer t: -beta_f * (MACs x spent at layer t) / macs_dense, and at the last
    layer also -CE(logits(x), y), so an episode returns -CE - beta_f * macs(x) / macs_dense.
    Every sub-env terminates at the last layer; the step after that ignores its actions, loads a new
    batch and returns first observations with reward 0 (gymnasium's NEXT_STEP autoreset, docs/method.md §4).
    A world set with `set_world` takes effect with the next batch, never within an episode.
    With env_config["budget_range"] = [lo, hi], every batch draws its own budget from that range and
    takes beta_f at that budget from the world's "beta_table" and the BatchNorm statistics of the
    nearest evaluation budget from its "bn_stats" (rtsearch.rl.budgets).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None, num_envs: int | None = None, **kwargs):
        config = {**dict(config or {}), **kwargs}
        self.num_envs = int(num_envs if num_envs is not None else config.get("num_envs", 1))
        self.budget = float(config.get("budget", 0.5))
        self.budget_range = config.get("budget_range")
        self.p_max = float(config.get("p_max", 0.95))
        self.cost_predictors = bool(config.get("cost_predictors", True))
        self.device = torch.device(config.get("device", "cpu"))
        self.x, self.y = (t.to(self.device) for t in train_split(config))
        self._rng = np.random.default_rng(int(config.get("seed", 0)))
        self._pending = None
        self._apply_world(config["world"])
        self.single_observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (RUNTIME_OBS_DIM,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = spaces.Box(0.0, self.p_max, (1,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.tally = Tally("macs_ratio", "ce", "accuracy", "return")
        self._rllib_tally = Tally("macs_ratio", "ce", "accuracy", "return")
        self.walk: Walk | None = None
        self._needs_reset = True

    # world ---------------------------------------------------------------------------------
    def set_world(self, payload: dict) -> None:
        """Use this network, static ratios and beta_f from the next batch on."""
        self._pending = payload
        if self.walk is None or self._needs_reset:
            self._apply_world(payload)

    def _apply_world(self, world: dict) -> None:
        self._pending = None
        self.net = world_network(world).to(self.device)
        self.cost = CostModel(self.net, predictors=self.cost_predictors)
        self.meter = MacsMeter(self.net, self.cost)
        self.descriptors = layer_descriptors(self.net, self.cost)
        ratios = world.get("static_ratios")
        self.static_ratios = torch.as_tensor([0.0] * self.net.num_layers if ratios is None else ratios,
                                             dtype=torch.float32)
        self.beta_f = float(world.get("beta_f", 1.0))
        self.beta_table = world.get("beta_table")        # {"budgets": [...], "betas": [...]}: a range run
        self.bn_table = world.get("bn_stats")            # a range run: BatchNorm statistics per budget there

    # gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed if np.isscalar(seed) else list(seed)[0])
        return self._new_batch(), {}

    def step(self, actions):
        B = self.num_envs
        if self._needs_reset:
            obs = self._new_batch()
            return obs, np.zeros(B), np.zeros(B, dtype=bool), np.zeros(B, dtype=bool), {}
        ratios = np.asarray(actions, dtype=np.float32).reshape(B, -1)[:, 0]
        ratios = np.clip(np.nan_to_num(ratios, nan=0.0), 0.0, self.p_max)
        with torch.no_grad():
            self.walk.step(torch.from_numpy(ratios))
        spent = self.meter.spent(self.walk)
        self._macs += spent
        reward = -self.beta_f * spent
        terminated = np.zeros(B, dtype=bool)
        if self.walk.done:
            with torch.no_grad():
                logits = self.walk.logits()
                ce = F.cross_entropy(logits, self._y, reduction="none").double().cpu().numpy()
                correct = (logits.argmax(1) == self._y).cpu().numpy()
            reward = reward - ce
            terminated[:] = True
            self._return += reward
            for tally in (self.tally, self._rllib_tally):
                tally.add(B, macs_ratio=self._macs, ce=ce, accuracy=correct, **{"return": self._return})
            self.tally.macs_ratios.append(self._macs.copy())
            self._needs_reset = True
            obs = terminal_runtime_observation(self._macs, self.budget)
        else:
            self._return += reward
            obs = runtime_observation(self.walk, self.descriptors, self._macs, self.budget)
        return obs, reward, terminated, np.zeros(B, dtype=bool), {}

    def _new_batch(self) -> np.ndarray:
        if self._pending is not None:
            self._apply_world(self._pending)
        if self.budget_range:
            self.budget = budgets.draw(*self.budget_range, self._rng)
            if self.beta_table:
                self.beta_f = budgets.at(self.budget, self.beta_table["budgets"], self.beta_table["betas"])
                if self.bn_table:
                    budgets.load_bn_state(self.net, self.bn_table[budgets.nearest(self.budget,
                                                                                  self.beta_table["budgets"])])
        n = len(self.x)
        idx = torch.from_numpy(self._rng.choice(n, self.num_envs, replace=n < self.num_envs))
        self.batch_index = idx  # rows of the train split the current sub-envs walk
        self._y = self.y[idx]
        with torch.no_grad():
            self.walk = self.net.walk(self.x[idx], self.static_ratios)
        self._macs = np.zeros(self.num_envs)
        self._return = np.zeros(self.num_envs)
        self._needs_reset = False
        return runtime_observation(self.walk, self.descriptors, self._macs, self.budget)

    # stats --------------------------------------------------------------------------------
    def pop_stats(self) -> dict:
        """Means over the inputs whose episodes ended since the last call: macs_ratio, ce, accuracy,
        return; `count` inputs, `macs_ratios` their per-input MACs ratios."""
        return self.tally.pop()

    def pop_rllib_stats(self) -> dict:
        """The same, on a separate tally, for RLlib's metrics (agents.py logs it per sample() call)."""
        return self._rllib_tally.pop()
