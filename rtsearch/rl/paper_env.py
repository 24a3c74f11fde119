"""The environment of the paper's two agents (`PaperVectorEnv`) and what each observes.

One batched gymnasium VectorEnv, as the project's runtime env: sub-env i is input i of a batch of the training
split, one step is one prunable layer for the whole batch (one forward of the paper's gated network,
rtsearch.net.tradeoff). Its `role` says which agent learns in it; the other acts greedily from the world:

- "runtime": the agent sees the layer's pooled input channels and its runtime gate vector, plus the width budget
  (`runtime_observation`) and picks the input's keep fraction; the static keep fractions are the static agent's
  greedy ones;
- "static": the agent sees (C_in + C_out) / max over layers (`static_observation`) and picks a keep fraction per
  input, as the paper samples it; the runtime agent acts greedily (its RLModule, with its LSTM state).

Both are rewarded once, at the last layer (rtsearch.rl.paper_reward; the runtime agent by `--method both`'s
Lagrangian instead under --paper-reward lagrangian, its multiplier the world's "beta"). Autoreset NEXT_STEP, as the
runtime env (docs/method.md, "Why this shape on RLlib").
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from rtsearch.net.cost import CostModel
from rtsearch.net.models import build_model
from rtsearch.net.tradeoff import PaperNet
from rtsearch.rl import paper_reward
from rtsearch.rl.world import Tally, train_split

ROLES = ("runtime", "static")
OBSERVATIONS = ("blocks", "padded")


# ------------------------------------------------------------------------------------------------ observations

def layer_inputs(net) -> list[int]:
    """Channels of each prunable layer's input (what its runtime gate pools)."""
    seen = []
    hooks = [g.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1])) for g in net.gates]
    try:
        with torch.no_grad():
            was = net.training
            net.eval()
            net(torch.zeros(1, *net.input_shape, device=next(net.parameters()).device))
            net.train(was)
    finally:
        for h in hooks:
            h.remove()
    return seen


class Layout:
    """Where layer t's pooled input and gates sit in the runtime observation.

    "blocks": each layer has a slot of its own, so the policy's first linear layer (with ReLU, RLlib's tokenizer)
    acts as one linear encoder per layer, the layer's one-hot giving each its own bias: the paper's per-layer
    encoders in one matrix. "padded": one slot shared by all layers (zero-padded), a single encoder."""

    def __init__(self, inputs: list[int], outputs: list[int], mode: str):
        self.inputs, self.outputs, self.mode = list(inputs), list(outputs), mode
        self.layers = len(outputs)
        if mode == "blocks":
            sizes = [i + o for i, o in zip(inputs, outputs)]
            self.starts = [int(s) for s in np.cumsum([0] + sizes[:-1])]
            width = sum(sizes)
        else:
            self.starts = [0] * self.layers
            width = max(inputs) + max(outputs)
        self.gate_offset = [i if mode == "blocks" else max(inputs) for i in inputs]
        self.dim = width + self.layers + 1

    def observe(self, t: int | None, pooled: torch.Tensor | None, gates: torch.Tensor | None, width_budget: float,
                batch: int) -> np.ndarray:
        """(B, dim) float32: layer t's pooled input and gates in its slot, its one-hot, the width budget. t None:
        the terminal observation (the budget alone)."""
        obs = np.zeros((batch, self.dim), dtype=np.float32)
        obs[:, -1] = width_budget
        if t is None:
            return obs
        start = self.starts[t]
        obs[:, start:start + self.inputs[t]] = pooled.detach().float().cpu().numpy()
        begin = start + self.gate_offset[t]
        obs[:, begin:begin + self.outputs[t]] = gates.detach().float().cpu().numpy()
        obs[:, self.dim - 1 - self.layers + t] = 1.0
        return obs


def static_observation(inputs: list[int], outputs: list[int], t: int | None, batch: int) -> np.ndarray:
    """(B, 1): (C_in + C_out) / max over layers of layer t (0 after the last layer)."""
    sizes = [i + o for i, o in zip(inputs, outputs)]
    value = 0.0 if t is None else sizes[t] / max(sizes)
    return np.full((batch, 1), value, dtype=np.float32)


def paper_network(world: dict) -> PaperNet:
    """The paper's gated network a world payload holds, frozen (the agents never train it)."""
    m = world["model"]
    net = build_model(m["name"], tuple(m["input_shape"]), m["num_classes"], m["widths"], m["lam"],
                      m.get("predictors", True))
    paper = PaperNet(net, world.get("pruner", "dpratio"))
    paper.load_state_dict(world["paper_state"])
    paper.eval()
    for p in paper.parameters():
        p.requires_grad_(False)
    return paper


# ------------------------------------------------------------------------------------------------ the env

class PaperVectorEnv(gym.vector.VectorEnv):
    """B inputs walk the layers of the paper's gated network together; one agent (`role`) learns."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None, num_envs: int | None = None, **kwargs):
        config = {**dict(config or {}), **kwargs}
        self._pending: dict = {}
        self.num_envs = int(num_envs if num_envs is not None else config.get("num_envs", 1))
        self.role = config.get("role", "runtime")
        self.width = float(config["width"])
        self.static_width = float(config.get("static_width", self.width))
        self.macs_cap, self.param_cap = float(config["macs_cap"]), float(config["param_cap"])
        self.dpratio = float(config["dpratio"])
        self.scale, self.temperature = float(config["penalty_scale"]), float(config["penalty_temperature"])
        self.budget_form = config.get("budget_form", "input")
        self.reward_form, self.beta = config.get("reward_form", "wall"), float(config.get("beta", 0.0))
        self.under = config.get("under", "bonus")
        self.mean = paper_reward.RunningMean(float(config["mean_decay"]))
        self.device = torch.device(config.get("device", "cpu"))
        self.x, self.y = (t.to(self.device) for t in train_split(config))
        self._rng = np.random.default_rng(int(config.get("seed", 0)) + (0 if self.role == "runtime" else 1))
        self.static_keep = None
        self.runtime_module = None
        self._apply({**config["world"], "mean": config["world"].get("means", {}).get(self.role)})
        self.layout = Layout(self.inputs, self.outputs, config.get("observation", "blocks"))
        dim = self.layout.dim if self.role == "runtime" else 1
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.tally = Tally("macs_ratio", "ce", "accuracy", "return", "params_ratio", "overflowed")
        self._needs_reset = True
        self.t = 0

    # world ---------------------------------------------------------------------------------
    def set_world(self, payload: dict) -> None:
        """Apply the keys given (network, the other agent's greedy part) from the next batch on."""
        self._pending = {**self._pending, **payload}
        if self._needs_reset:
            self._apply_pending()

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            self._apply(pending)

    def _apply(self, world: dict) -> None:
        if "paper_state" in world:
            self.net = paper_network(world).to(self.device)
            self.cost = CostModel(self.net.net, predictors=True)
            self.outputs = [int(w) for w in self.cost.widths]
            self.inputs = layer_inputs(self.net.net)
        if world.get("static_keep") is not None:
            self.static_keep = np.asarray(world["static_keep"], dtype=np.float64)
        if world.get("runtime_module") is not None:
            self.runtime_module = world["runtime_module"]
        if world.get("beta") is not None:
            self.beta = float(world["beta"])
        if world.get("mean"):
            self.mean = paper_reward.RunningMean(**world["mean"])

    # gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed if np.isscalar(seed) else list(seed)[0])
        return self._new_batch(), {}

    def step(self, actions):
        B = self.num_envs
        if self._needs_reset:
            return self._new_batch(), np.zeros(B), np.zeros(B, dtype=bool), np.zeros(B, dtype=bool), {}
        out = np.nan_to_num(np.asarray(actions, dtype=np.float64).reshape(B, -1)[:, 0])
        t = self.t
        if self.role == "runtime":
            keep_r, keep_s = paper_reward.keep_fraction(self.width, out), np.full(B, self.static_keep[t])
        else:
            keep_r, keep_s = self._greedy_runtime(), paper_reward.keep_fraction(self.static_width, out)
            self._static_keeps.append(keep_s)
        with torch.no_grad():
            self.h, active = self.net.layer(t, self.h, torch.from_numpy(keep_r).float().to(self.device),
                                            torch.from_numpy(keep_s).float().to(self.device), self.dpratio,
                                            self._gates)
        self._kept.append(active.sum(dim=1).cpu())
        self.t += 1
        reward, terminated = np.zeros(B), np.zeros(B, dtype=bool)
        if self.t < self.net.num_layers:
            return self._observe(), reward, terminated, np.zeros(B, dtype=bool), {}
        with torch.no_grad():
            logits = self.net.net.head(self.h)
            ce = F.cross_entropy(logits, self._y, reduction="none").double().cpu().numpy()
            correct = (logits.argmax(1) == self._y).cpu().numpy()
        macs = self.cost.macs_ratio(torch.stack(self._kept, dim=1), self.cost.widths).numpy()
        m = self.mean.update(float(ce.mean()))
        params = np.full(B, np.nan)
        if self.role == "runtime" and self.reward_form == "lagrangian":
            reward = paper_reward.lagrangian_reward(ce, macs, self.beta)
        elif self.role == "runtime":
            reward = paper_reward.runtime_reward(ce, m, macs, self.macs_cap, self.scale, self.temperature,
                                                 self.budget_form, self.under)
        else:
            params = paper_reward.params_ratio(self.cost, torch.from_numpy(np.stack(self._static_keeps, 1)))
            reward = paper_reward.static_reward(ce, m, params, self.param_cap, self.scale, self.temperature,
                                                self.under)
        terminated[:] = True
        reward = self._finite(reward)
        self.tally.add(B, macs_ratio=macs, ce=ce, accuracy=correct, params_ratio=np.nan_to_num(params),
                       overflowed=self._overflowed, **{"return": reward})
        self._needs_reset = True
        obs = (self.layout.observe(None, None, None, self.width, B) if self.role == "runtime"
               else static_observation(self.inputs, self.outputs, None, B))
        return obs, reward, terminated, np.zeros(B, dtype=bool), {}

    # internals ----------------------------------------------------------------------------
    def _new_batch(self) -> np.ndarray:
        self._apply_pending()
        n = len(self.x)
        idx = torch.from_numpy(self._rng.choice(n, self.num_envs, replace=n < self.num_envs)).to(self.x.device)
        self._y = self.y[idx]
        with torch.no_grad():
            self.h = self.net.net.stem(self.x[idx])
        self.t, self._kept, self._static_keeps, self._state = 0, [], [], None
        self._overflowed = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = False
        return self._observe()

    def _observe(self) -> np.ndarray:
        with torch.no_grad():
            self._gates = self.net.runtime_gates(self.t, self.h)
        if self.role == "runtime":
            return self._runtime_obs()
        return static_observation(self.inputs, self.outputs, self.t, self.num_envs)

    def _runtime_obs(self) -> np.ndarray:
        return self._finite(self.layout.observe(self.t, self.net.pooled(self.h), self._gates, self.width,
                                                self.num_envs))

    def _finite(self, values: np.ndarray) -> np.ndarray:
        """`values` with the rows of inputs whose activations overflowed set to 0, those inputs marked: the agent
        never sees inf or NaN, and the run stops on the mark (pop_stats' "overflowed", paper_loop.check_finite)."""
        bad = ~np.isfinite(values.reshape(self.num_envs, -1)).all(axis=1)
        if not bad.any():
            return values
        self._overflowed |= bad
        values = values.copy()
        values[bad] = 0.0
        return values

    def _greedy_runtime(self) -> np.ndarray:
        from rtsearch.rl.policies import deterministic_actions
        out, self._state = deterministic_actions(self.runtime_module, self._runtime_obs(), -1.0, 1.0, self._state)
        return paper_reward.keep_fraction(self.width, out.reshape(self.num_envs, -1)[:, 0])

    # stats --------------------------------------------------------------------------------
    def pop_stats(self) -> dict:
        """Means over the inputs whose episodes ended since the last call ("overflowed": the share whose activations
        overflowed), and the running mean's state."""
        return {**self.tally.pop(), "mean_state": self.mean.state()}
