"""The deployed model of a run: its skip-path network (rtsearch.net.fast) driven by its runtime policy.

`load(path)` reads a run's checkpoint.pt (with the agents in agents/ beside it) or best.pt (agents_best/)
and returns a `Deployed`: the `SkipNet` under the run's static ratios and, for runs with a runtime
part, the runtime agent's greedy policy plus the calibration shift the run deployed, or the fixed
runtime ratios of a uniform baseline run. Its cost at inference is part of the deployed latency.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rtsearch.errors import UsageError
from rtsearch.net import checkpoint
from rtsearch.net.baseline import uniform_ratios
from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.fast import FastPolicy, SkipNet
from rtsearch.net.models import GatedNet
from rtsearch.rl.observations import MacsMeter, layer_descriptors, observation_of
from rtsearch.rl.policies import deterministic_actions


class DeployedPolicy:
    """The runtime agent's greedy policy on the skip path: (t, importance, kept) -> ratio.

    It observes exactly as `policies.runtime_policy` does on the masked network: the importances
    padded with the statically removed channels' zeros, the MACs each layer cost charged as the
    walk passes it (fractions of the original dense model), and the LSTM state across layers."""

    def __init__(self, module, net: GatedNet, static_ratios, budget: float, p_max: float, shift: float = 0.0):
        cost = CostModel(net)
        self.module, self.budget, self.p_max, self.shift = module, float(budget), float(p_max), float(shift)
        self.stateful = module.is_stateful()
        self.actor = None if self.stateful else actor_network(module)
        meter = MacsMeter(net, cost)
        self.dense_macs = meter.dense_macs
        # each layer's MACs terms as plain numbers: charging one costs microseconds, not tensor ops
        self.parts = [[(term.in_ref, term.in_full, term.out_ref, term.out_full, term.factor) for term in part.terms]
                      for part in meter.parts]
        self.descriptors = layer_descriptors(net, cost)
        self.widths = [int(w) for w in cost.widths]
        self.static_kept = [int(k) for k in static_kept_for(cost.widths, static_ratios)]
        self._macs, self._charged, self._state = 0.0, 0, None

    def _count(self, ref, full: int, kept: list) -> int:
        if ref is None:
            return full
        kind, t = ref
        return (kept[t] if t < len(kept) else self.widths[t]) if kind == "runtime" else self.static_kept[t]

    def _charge(self, t: int, kept: list) -> float:
        """MACs layer t cost (fraction of dense), as `MacsMeter.spent` counts them."""
        return sum(self._count(i, fi, kept) * self._count(o, fo, kept) * f for i, fi, o, fo, f in self.parts[t]) \
            / self.dense_macs

    def _greedy(self, obs: torch.Tensor) -> float:
        """The agent's deterministic action, mapped into [0, p_max] as `deterministic_actions` maps it;
        a feed-forward module is called directly, skipping RLlib's per-call bookkeeping."""
        if self.stateful:
            actions, self._state = deterministic_actions(self.module, obs.numpy(), 0.0, self.p_max, self._state)
            return float(actions.reshape(-1)[0])
        with torch.no_grad():
            inputs = self.actor(obs) if self.actor is not None else \
                self.module._forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        mean = inputs.reshape(-1)[:1].numpy()       # a diagonal Gaussian: means first, then log stds
        low, high = np.float32(0.0), np.float32(self.p_max)
        return float(np.clip(low + (mean + 1.0) * (high - low) / 2.0, low, high)[0])

    def __call__(self, t: int, importance: torch.Tensor, kept: list) -> torch.Tensor:
        if t == 0:
            self._macs, self._charged, self._state = 0.0, 0, None
        while self._charged < t:                    # charge the layers walked since the last call
            self._macs += self._charge(self._charged, kept)
            self._charged += 1
        pad = self.widths[t] - importance.shape[1]  # the env sees zeros where static channels were
        if pad:
            importance = torch.cat([importance, importance.new_zeros(importance.shape[0], pad)], dim=1)
        ratio = self._greedy(observation_of(importance, t, self.descriptors, self._macs, self.budget))
        # float32 arithmetic, as the masked path adds the shift to a float32 tensor
        return float(np.clip(np.float32(ratio) + np.float32(self.shift), np.float32(0.0), np.float32(self.p_max)))


def actor_network(module) -> Optional[torch.nn.Module]:
    """The plain torch layers from observation to action-distribution inputs of a feed-forward PPO
    module (its actor encoder, shared or separate, then its pi head), or None if it is built otherwise."""
    encoder = getattr(module.encoder, "actor_encoder", None) or getattr(module.encoder, "encoder", None)
    try:
        return torch.nn.Sequential(encoder.net.mlp, module.pi.net.mlp)
    except AttributeError:
        return None


def fixed_runtime(ratios) -> FastPolicy:
    """A uniform baseline's runtime ratios, one per layer."""
    ratios = [float(r) for r in ratios]

    def policy(t, importance, kept):
        return ratios[t]

    policy.observes_importance = False
    return policy


@dataclass
class Deployed:
    net: GatedNet                   # the masked network, the reference
    static_ratios: list
    skip: SkipNet
    policy: Optional[FastPolicy]    # None: no runtime pruning
    config: dict

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x, self.policy)


def runtime_module(agents_dir: str):
    """The runtime agent's RLModule from an RLlib checkpoint folder written by a run."""
    from ray.rllib.core.rl_module.rl_module import RLModule
    path = os.path.join(os.path.abspath(agents_dir), "runtime", "learner_group", "learner", "rl_module",
                        "default_policy")
    if not os.path.isdir(path):
        raise UsageError(f"no runtime agent in {agents_dir}: pass the checkpoint.pt or best.pt of a run, "
                         f"with the agents folder the run wrote beside it")
    module = RLModule.from_checkpoint(path)
    return module.eval()


def untrained_module(num_layers: int, p_max: float, lstm: bool = False):
    """A runtime agent's RLModule as training builds it, before any training: what a deployed policy
    costs at inference does not depend on its weights (rtsearch.bench --latency on synthetic networks)."""
    from gymnasium import spaces
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rtsearch.rl.agents import agent_model_config
    from rtsearch.rl.observations import OBS_BOUND, RUNTIME_OBS_DIM
    spec = RLModuleSpec(module_class=DefaultPPOTorchRLModule,
                        observation_space=spaces.Box(-OBS_BOUND, OBS_BOUND, (RUNTIME_OBS_DIM,), "float32"),
                        action_space=spaces.Box(0.0, p_max, (1,), "float32"),
                        model_config=agent_model_config(lstm, num_layers))
    return spec.build().eval()


def load(path: str) -> Deployed:
    """The deployed model of a run's checkpoint.pt or best.pt (exit-2 UsageError if it is not one)."""
    state = checkpoint.load(path)
    net = checkpoint.network_of(state, path).eval()
    ratios = state.get("static_ratios") or [0.0] * net.num_layers
    if len(ratios) != net.num_layers:
        raise UsageError(f"checkpoint {path} has {len(ratios)} static ratios for {net.num_layers} layers: "
                         f"pass the checkpoint.pt a run wrote")
    config = state.get("config") or {}
    run_state = state.get("run_state") or {}
    policy, method = None, config.get("method", "both")
    if config.get("fixed_ratios"):    # a uniform baseline: its ratios follow from the budget
        runtime = uniform_ratios(CostModel(net, predictors=method != "static-only"), config["budget"], method)[1]
        policy = fixed_runtime(runtime) if float(runtime.max()) > 0 else None
    elif config and method != "static-only":
        agents = "agents_best" if os.path.basename(path) == "best.pt" else "agents"
        module = runtime_module(os.path.join(os.path.dirname(os.path.abspath(path)), agents))
        policy = DeployedPolicy(module, net, ratios, config["budget"], config["p_max"],
                                run_state.get("runtime_shift", 0.0))
    return Deployed(net, [float(r) for r in ratios], SkipNet(net, ratios), policy, config)
