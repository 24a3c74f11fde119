"""The two RL environments of DESIGN §1 and §2.

- `RuntimeVectorEnv`: a natively batched `gymnasium.vector.VectorEnv`; each sub-env is one input
  image, one step is one prunable layer for the whole batch (one network forward, `Walk.step`).
  The runtime agent picks one runtime pruning ratio per input and layer.
- `StaticLayerEnv`: one episode walks the L prunable layers once; the static agent picks one
  static pruning ratio per layer and is rewarded at the end by the accuracy the network reaches on
  a held-out batch under the current runtime policy, minus the parameter-budget penalty.

Both read their network from a *world* payload, set at construction (`env_config["world"]`) and
later with `set_world(payload)`:
    {"model": net.config(), "state_dict": net.state_dict(), "static_ratios": [L floats],
     "beta_f": float, "runtime_module": RLModule | None (static env only)}
"""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from rtsearch.cost import CostModel, static_kept_for
from rtsearch.models import GatedNet, Walk, probe

K_BINS = 16
EPS = 1e-8
OBS_BOUND = 10.0  # observations are clipped into [-OBS_BOUND, OBS_BOUND]; real values stay well inside

# Columns of a layer descriptor (`layer_descriptors`).
DESCRIPTOR_FIELDS = ("position", "c_in", "c_out", "kernel", "stride", "fmap", "macs_share", "params_share",
                     "cum_macs_share")
DESCRIPTOR_DIM = len(DESCRIPTOR_FIELDS)
RUNTIME_OBS_DIM = DESCRIPTOR_DIM + 3 + K_BINS + 1
STATIC_OBS_DIM = DESCRIPTOR_DIM + 3


# --------------------------------------------------------------------------------------------
# Per-layer MACs accounting, consistent with CostModel.macs
# --------------------------------------------------------------------------------------------

def _term_segments(net: GatedNet, cost: CostModel) -> list[int]:
    """For every term of `cost.terms`, the prunable layer (segment) during whose forward it runs.

    Traces one dense forward exactly as CostModel does (same hooks, same order); what runs before
    the first segment (the stem) belongs to layer 0, what runs after the last (the head) to L - 1.
    """
    current = [0]
    trace: list[tuple[int, bool, int, int]] = []

    def enter(t):
        def hook(module, args):
            current[0] = t
        return hook

    def record(module, inputs, output):
        full = (module.in_channels, module.out_channels) if isinstance(module, torch.nn.Conv2d) \
            else (module.in_features, module.out_features)
        trace.append((current[0], getattr(module, "is_predictor", False), *full))

    hooks = [seg.register_forward_pre_hook(enter(t)) for t, seg in enumerate(net.segments)]
    hooks += [m.register_forward_hook(record) for m in net.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    probe(net, hooks)
    if len(trace) != len(cost.terms):  # a static-only cost model drops the predictors
        trace = [entry for entry in trace if not entry[1]]
    if len(trace) != len(cost.terms) or any((e[2], e[3]) != (term.in_full, term.out_full)
                                            for e, term in zip(trace, cost.terms)):
        raise ValueError("cost model does not match the network: build CostModel(net) from this network")
    return [entry[0] for entry in trace]


class MacsMeter:
    """Splits `cost.macs` into one part per prunable layer, so MACs can be charged as they are spent.

    Part t holds every Conv2d / Linear that runs while the walk is at layer t (the stem counts with
    layer 0, the head with layer L - 1). The parts add up to `cost.macs` exactly (integers in float64).
    """

    def __init__(self, net: GatedNet, cost: CostModel):
        self.cost = cost
        self.num_layers = net.num_layers
        self.dense_macs = float(cost.dense_macs)
        self.widths = cost.widths.clone()
        owners = _term_segments(net, cost)
        self.parts = []
        for t in range(self.num_layers):
            part = copy.copy(cost)
            part.terms = [term for term, owner in zip(cost.terms, owners) if owner == t]
            self.parts.append(part)
        dense = self.widths[None, :]
        self.layer_share = np.array([float(p.macs(dense, self.widths)[0]) / self.dense_macs for p in self.parts])
        self.cum_share = np.cumsum(self.layer_share)

    def spent(self, walk: Walk, layer: int | None = None) -> np.ndarray:
        """MACs (fraction of dense) each input spent on `layer` (default: the one the walk has just
        stepped), (B,) float64. Any layer the walk has already stepped may be asked for."""
        t = walk.t - 1 if layer is None else layer
        assert 0 <= t < walk.t, "step the walk past that layer first"
        kept = walk.runtime_kept.cpu()
        if kept.shape[1] < self.num_layers:  # layers not walked yet: not referenced by part t
            rest = self.widths[kept.shape[1]:].to(kept.dtype).expand(kept.shape[0], -1)
            kept = torch.cat([kept, rest], dim=1)
        return (self.parts[t].macs(kept, walk.static_kept.cpu()) / self.dense_macs).numpy()


# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------

def layer_descriptors(net: GatedNet, cost: CostModel) -> np.ndarray:
    """(L, 9) float32, one row per prunable layer t, every column roughly in [0, 1]:

    t/L, C_in/maxC, C_out/maxC, kernel/7, stride/2, H_out/H_in(image), share of the dense MACs of the
    layer's conv, share of the dense parameters of its segment, and the share of the dense MACs
    spent up to and including layer t (stem with layer 0, head with the last; 1.0 at the last layer).
    """
    L = net.num_layers
    sizes: dict[int, int] = {}
    hooks = [g.conv.register_forward_hook(lambda m, i, o, t=t: sizes.__setitem__(t, o.shape[2]))
             for t, g in enumerate(net.gates)]
    probe(net, hooks)
    max_c = max(max(g.conv.in_channels, g.conv.out_channels) for g in net.gates)
    meter = MacsMeter(net, cost)
    rows = []
    for t, (gate, segment) in enumerate(zip(net.gates, net.segments)):
        conv_macs = sum(term.in_full * term.out_full * term.factor for term in cost.terms
                        if term.out_ref == ("runtime", t))
        seg_params = sum(p.numel() for p in segment.parameters())
        rows.append([t / L, gate.conv.in_channels / max_c, gate.conv.out_channels / max_c,
                     gate.conv.kernel_size[0] / 7.0, gate.conv.stride[0] / 2.0, sizes[t] / net.input_shape[1],
                     conv_macs / cost.dense_macs, seg_params / cost.dense_params, meter.cum_share[t]])
    return np.asarray(rows, dtype=np.float32)


def importance_summary(r: torch.Tensor, K: int = K_BINS) -> torch.Tensor:
    """(B, C) importances -> (B, K): sorted descending, divided by the row max, resampled linearly."""
    r = r.detach().float()
    ordered = r.sort(dim=1, descending=True).values
    ordered = ordered / (ordered[:, :1] + EPS)
    if ordered.shape[1] == 1:
        return ordered.expand(-1, K).clone()
    return F.interpolate(ordered[:, None, :], size=K, mode="linear", align_corners=True)[:, 0, :]


def current_importance(walk: Walk) -> torch.Tensor:
    """The same values as `walk.importance()`, without caching them in the walk.

    A policy runs under no_grad (supervised.policy_forward); `walk.importance()` would cache that
    grad-free tensor and `walk.step` would reuse it, so fine-tuning under the agent would never
    train the runtime importance predictors. Recomputing costs one pooled linear map per layer.
    """
    return walk.net.gates[walk.t].runtime_importance(walk.h) * walk.static_keeps[walk.t]


def runtime_observation(walk: Walk, descriptors: np.ndarray, macs_so_far, budget: float) -> np.ndarray:
    """Observation of every input at the walk's current layer, (B, RUNTIME_OBS_DIM) float32:

    the layer's descriptor, the MACs this input spent so far (fraction of dense, layers < t),
    the budget, macs_so_far - budget * (share of the dense MACs up to and including layer t),
    the importance summary (K bins) and log1p of the largest importance.
    """
    t = walk.t
    with torch.no_grad():
        r = current_importance(walk)
        summary = importance_summary(r).cpu().numpy()
        top = torch.log1p(r.amax(dim=1).clamp(min=0)).cpu().numpy()
    B = r.shape[0]
    macs = np.broadcast_to(np.asarray(macs_so_far, dtype=np.float64), (B,))
    desc = np.broadcast_to(descriptors[t], (B, descriptors.shape[1]))
    slack = macs - budget * float(descriptors[t, -1])
    obs = np.concatenate([desc, macs[:, None], np.full((B, 1), budget), slack[:, None], summary, top[:, None]],
                         axis=1).astype(np.float32)
    return np.clip(obs, -OBS_BOUND, OBS_BOUND)


def terminal_runtime_observation(macs_so_far: np.ndarray, budget: float) -> np.ndarray:
    """What a finished input observes (never acted on): zeros but its MACs against the budget."""
    B = len(macs_so_far)
    obs = np.zeros((B, RUNTIME_OBS_DIM), dtype=np.float32)
    obs[:, DESCRIPTOR_DIM] = macs_so_far
    obs[:, DESCRIPTOR_DIM + 1] = budget
    obs[:, DESCRIPTOR_DIM + 2] = macs_so_far - budget
    return np.clip(obs, -OBS_BOUND, OBS_BOUND)


def static_observation(descriptors: np.ndarray, t: int, params_kept: float, param_budget: float,
                       prev_ratio: float) -> np.ndarray:
    """Static agent's observation at layer t (zeros for the descriptor once t == L), (STATIC_OBS_DIM,)."""
    desc = descriptors[t] if t < len(descriptors) else np.zeros(descriptors.shape[1], np.float32)
    obs = np.concatenate([desc, [params_kept, param_budget - params_kept, prev_ratio]]).astype(np.float32)
    return np.clip(obs, -OBS_BOUND, OBS_BOUND)


def _world_network(world: dict) -> GatedNet:
    from rtsearch.checkpoint import network
    net = network({"model": world["model"], "state_dict": world["state_dict"]})
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _train_split(config: dict):
    from rtsearch.data import load
    return load(config.get("dataset", "mnist5k"), int(config.get("seed", 0)), config.get("data_dir")).train


class _Tally:
    """Sums over finished episodes, popped as means."""

    def __init__(self, *keys: str):
        self.keys = keys
        self.clear()

    def clear(self):
        self.count = 0
        self.sums = {k: 0.0 for k in self.keys}
        self.macs_ratios: list[np.ndarray] = []

    def add(self, n: int, **values):
        self.count += n
        for k, v in values.items():
            self.sums[k] += float(np.sum(v))

    def pop(self) -> dict:
        out: dict = {"count": self.count}
        if self.count:
            out.update({k: v / self.count for k, v in self.sums.items()})
        if self.macs_ratios:
            out["macs_ratios"] = np.concatenate(self.macs_ratios)
        self.clear()
        return out


# --------------------------------------------------------------------------------------------
# Runtime agent's env
# --------------------------------------------------------------------------------------------

class RuntimeVectorEnv(gym.vector.VectorEnv):
    """B inputs walk the prunable layers together; sub-env i is input i of the current batch.

    Reward of input x at layer t: -beta_f * (MACs x spent at layer t) / macs_dense, and at the last
    layer also -CE(logits(x), y), so an episode returns -CE - beta_f * macs(x) / macs_dense.
    Every sub-env terminates at the last layer; the step after that ignores its actions, loads a new
    batch and returns first observations with reward 0 (gymnasium's NEXT_STEP autoreset, DESIGN §2).
    A world set with `set_world` takes effect with the next batch, never within an episode.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None, num_envs: int | None = None, **kwargs):
        config = {**dict(config or {}), **kwargs}
        self.num_envs = int(num_envs if num_envs is not None else config.get("num_envs", 1))
        self.budget = float(config.get("budget", 0.5))
        self.p_max = float(config.get("p_max", 0.95))
        self.cost_predictors = bool(config.get("cost_predictors", True))
        self.x, self.y = _train_split(config)
        self._rng = np.random.default_rng(int(config.get("seed", 0)))
        self._pending = None
        self._apply_world(config["world"])
        self.single_observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (RUNTIME_OBS_DIM,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = spaces.Box(0.0, self.p_max, (1,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.tally = _Tally("macs_ratio", "ce", "accuracy", "return")
        self._rllib_tally = _Tally("macs_ratio", "ce", "accuracy", "return")
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
        self.net = _world_network(world)
        self.cost = CostModel(self.net, predictors=self.cost_predictors)
        self.meter = MacsMeter(self.net, self.cost)
        self.descriptors = layer_descriptors(self.net, self.cost)
        ratios = world.get("static_ratios")
        self.static_ratios = torch.as_tensor([0.0] * self.net.num_layers if ratios is None else ratios,
                                             dtype=torch.float32)
        self.beta_f = float(world.get("beta_f", 1.0))

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
                ce = F.cross_entropy(logits, self._y, reduction="none").double().numpy()
                correct = (logits.argmax(1) == self._y).numpy()
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


# --------------------------------------------------------------------------------------------
# Static agent's env
# --------------------------------------------------------------------------------------------

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
        self.x, self.y = _train_split(config)
        self._np_random, _ = gym.utils.seeding.np_random(int(config.get("seed", 0)) + 1)
        self.set_world(config["world"])
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (STATIC_OBS_DIM,), np.float32)
        self.action_space = spaces.Box(0.0, self.p_max, (1,), np.float32)
        self.tally = _Tally("accuracy", "params_ratio", "macs_ratio", "return")
        self._start()

    def set_world(self, payload: dict) -> None:
        """Network and runtime policy used by the rewards of episodes that end from now on."""
        self.net = _world_network(payload)
        self.cost = CostModel(self.net, predictors=self.cost_predictors)
        self.descriptors = layer_descriptors(self.net, self.cost)
        self.runtime_module = payload.get("runtime_module")
        self._policy = None
        if self.runtime_module is not None:
            from rtsearch.agents import runtime_policy
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
        from rtsearch.supervised import fixed_policy, policy_forward
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


def n_layers(world: dict) -> int:
    """Number of prunable layers of a world payload's network."""
    return len(world["model"]["widths"])
