"""The deployed model of a run: its skip-path network (rtsearch.net.fast) driven by its runtime policy.

`load(path)` reads a run's checkpoint.pt (with the agents in agents/ beside it) or best.pt (agents_best/)
and returns a `DeployedRun`: the `SkipNet` under the run's static ratios and, for runs with a runtime
part, the runtime agent's greedy policy plus the calibration shift the run deployed, or the fixed
runtime ratios of a uniform baseline run. Its cost at inference is part of the deployed latency.
`DeployedRun.model()` is the same as one picklable `DeployedModel`; every run writes it as deployed.pt.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from rtsearch.config import Pruning
from rtsearch.errors import UsageError
from rtsearch.net import checkpoint
from rtsearch.net.baseline import uniform_ratios
from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.surgery import prune_static
from rtsearch.net.fast import FastPolicy, SkipNet
from rtsearch.net.models import GatedNet
from rtsearch.rl import budgets
from rtsearch.rl.actor import actor_network
from rtsearch.rl.observations import (EPS, K_BINS, OBS_BOUND, MacsMeter, current_importance, layer_descriptors,
                                      observation_of)
from rtsearch.storage import replacing


class DeployedPolicy:
    """The runtime agent's greedy policy on the skip path: (t, importance, kept) -> ratio.

    It observes exactly as `policies.runtime_policy` does on the masked network: the importances
    padded with the statically removed channels' zeros, the MACs each layer cost charged as the
    walk passes it (fractions of the original dense model), and the LSTM state across layers."""

    def __init__(self, module, net: GatedNet, static_ratios, budget: float, p_max: float, shift: float = 0.0):
        cost = CostModel(net)
        self.module, self.budget, self.p_max, self.shift = module, float(budget), float(p_max), float(shift)
        self.stateful = module.is_stateful()
        actor = None if self.stateful else actor_network(module)
        meter = MacsMeter(net, cost)
        self.dense_macs = meter.dense_macs
        # each layer's MACs terms as plain numbers: charging one costs microseconds, not tensor ops
        self.parts = [[(term.in_ref, term.in_full, term.out_ref, term.out_full, term.factor) for term in part.terms]
                      for part in meter.parts]
        self.descriptors = layer_descriptors(net, cost)
        self.widths = [int(w) for w in cost.widths]
        self.static_kept = [int(k) for k in static_kept_for(cost.widths, static_ratios)]
        self.lean = LeanActor(actor, self.descriptors, self.widths, self.budget) if LeanActor.fits(actor) else None
        self._macs, self._charged, self._state = 0.0, 0, None

    def portable(self) -> "DeployedPolicy":
        """A copy without the RLlib module where the agent runs as a `LeanActor` (it then pickles and
        loads without RLlib); an LSTM agent keeps its module."""
        copy_ = copy.copy(self)
        if self.lean is not None:
            copy_.module = None
        return copy_

    def _count(self, ref, full: int, kept: list) -> int:
        if ref is None:
            return full
        kind, t = ref
        return (kept[t] if t < len(kept) else self.widths[t]) if kind == "runtime" else self.static_kept[t]

    def charge(self, t: int, kept: list):
        """MACs layer t cost (fraction of dense), as `MacsMeter.spent` counts them; `kept` holds the channels
        computed at the layers walked so far: ints for one input, (B,) count tensors for a batch."""
        return sum(self._count(i, fi, kept) * self._count(o, fo, kept) * f for i, fi, o, fo, f in self.parts[t]) \
            / self.dense_macs

    def _greedy(self, t: int, importance: torch.Tensor) -> float:
        """The agent's deterministic action (a Gaussian's mean), mapped into [0, p_max] as
        `deterministic_actions` maps it. A feed-forward agent runs as a `LeanActor`; an LSTM one
        through RLlib with the observation the env builds."""
        if self.lean is not None:
            mean = np.float32(self.lean(t, importance, self._macs))
        else:
            pad = self.widths[t] - importance.shape[1]  # the env sees zeros where static channels were
            if pad:
                importance = torch.cat([importance, importance.new_zeros(importance.shape[0], pad)], dim=1)
            obs = observation_of(importance, t, self.descriptors, self._macs, self.budget).numpy()
            from rtsearch.rl.policies import deterministic_actions     # RLlib only for an LSTM agent
            actions, self._state = deterministic_actions(self.module, obs, 0.0, self.p_max, self._state)
            return float(actions.reshape(-1)[0])
        low, high = np.float32(0.0), np.float32(self.p_max)
        return float(np.clip(low + (mean + np.float32(1.0)) * (high - low) / np.float32(2.0), low, high))

    def __call__(self, t: int, importance: torch.Tensor, kept: list) -> float:
        if t == 0:
            self._macs, self._charged, self._state = 0.0, 0, None
        while self._charged < t:                    # charge the layers walked since the last call
            self._macs += self.charge(self._charged, kept)
            self._charged += 1
        ratio = self._greedy(t, importance)
        # float32 arithmetic, as the masked path adds the shift to a float32 tensor
        return float(np.clip(np.float32(ratio) + np.float32(self.shift), np.float32(0.0), np.float32(self.p_max)))


class LeanActor:
    """A feed-forward agent's mean action at one layer, in a dozen tensor ops instead of about fifty.

    The observation is linear in its parts until the first activation, so the first layer's product
    with the layer's descriptor and the budget is precomputed per layer, the importance summary (a
    sorted, max-normalised, linearly resampled vector) is one product with a fixed resampling matrix,
    and only the mean of the first action is computed. It equals the module's output on the env's
    observation to float rounding."""

    @staticmethod
    def fits(actor) -> bool:
        """Linear layers with tanh or ReLU between them, as RLlib's default MLP builds them."""
        if actor is None:
            return False
        layers = [type(m) for m in actor.modules() if not list(m.children())]
        return layers[0::2] == [torch.nn.Linear] * len(layers[0::2]) and len(layers) % 2 == 1 \
            and all(a in (torch.nn.Tanh, torch.nn.ReLU) for a in layers[1::2])

    def __init__(self, actor: torch.nn.Module, descriptors, widths: list, budget: float):
        layers = [m for m in actor.modules() if not list(m.children())]
        linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
        self.activations = [type(m) for m in layers if not isinstance(m, torch.nn.Linear)]
        first = linears[0].weight.detach()
        d = descriptors.shape[1]
        desc = torch.from_numpy(np.clip(descriptors, -OBS_BOUND, OBS_BOUND)).float()
        budget_c = float(np.clip(budget, -OBS_BOUND, OBS_BOUND))
        self.const = [linears[0].bias.detach() + first[:, :d] @ desc[t] + first[:, d + 1] * budget_c
                      for t in range(len(widths))]
        self.w_extra = first[:, [d, d + 2, first.shape[1] - 1]].contiguous()     # MACs so far, slack, top
        self.w_summary = first[:, d + 3:d + 3 + K_BINS].contiguous()
        self.resample = [resampling_matrix(w, K_BINS) for w in widths]
        self.cum = [float(c) for c in descriptors[:, -1]]
        self.budget = float(budget)
        self.rest = [(m.weight.detach(), m.bias.detach()) for m in linears[1:]]
        last_w, last_b = self.rest[-1]
        self.rest[-1] = (last_w[:1], last_b[:1])     # the first action's mean only

    def __call__(self, t: int, importance: torch.Tensor, macs: float) -> float:
        with torch.no_grad():
            where = self.w_summary.device       # the agent runs where its tensors are (`to`)
            ordered = importance[0].float().to(where).sort(descending=True).values
            top = ordered[0]
            summary = (ordered / (top + EPS)) @ self.resample[t][:len(ordered)]
            clip = lambda v: min(max(v, -OBS_BOUND), OBS_BOUND)     # noqa: E731
            extra = torch.tensor([clip(macs), clip(macs - self.budget * self.cum[t]),
                                  clip(math.log1p(max(float(top), 0.0)))], device=where)
            h = torch.addmv(torch.addmv(self.const[t], self.w_summary, summary.clamp(-OBS_BOUND, OBS_BOUND)),
                            self.w_extra, extra)
            for activation, (w, b) in zip(self.activations, self.rest):
                h = F.linear(torch.tanh(h) if activation is torch.nn.Tanh else F.relu(h), w, b)
            return float(h[0])


    def applied(self, fn) -> "LeanActor":
        """A copy with `fn` applied to every tensor, as `Module._apply` applies it (`.to(device)` and friends)."""
        moved = copy.copy(self)
        moved.const, moved.resample = [fn(c) for c in self.const], [fn(m) for m in self.resample]
        moved.w_extra, moved.w_summary = fn(self.w_extra), fn(self.w_summary)
        moved.rest = [(fn(w), fn(b)) for w, b in self.rest]
        return moved


def resampling_matrix(channels: int, bins: int) -> torch.Tensor:
    """(channels, bins): x @ M resamples a length-`channels` vector to `bins` points linearly with aligned
    corners (F.interpolate(..., mode="linear", align_corners=True)); one channel is repeated."""
    m = torch.zeros(channels, bins)
    if channels == 1:
        m[0] = 1.0
        return m
    for j in range(bins):
        pos = j * (channels - 1) / (bins - 1)
        i = min(int(math.floor(pos)), channels - 2)
        w = pos - i
        m[i, j] += 1.0 - w
        m[i + 1, j] += w
    return m


class FixedRatios:
    """A uniform baseline's runtime ratios, one per layer; it never looks at the importances."""
    observes_importance = False

    def __init__(self, ratios):
        self.ratios = [float(r) for r in ratios]

    def __call__(self, t: int, importance, kept) -> float:
        return self.ratios[t]


class DeployedModel(torch.nn.Module):
    """A run's deployed model as one picklable module: forward(x) -> logits (B, classes), the skip path
    under the run's runtime policy (one input at a time; a whole batch at once without runtime pruning).
    A feed-forward agent travels as plain tensors (`LeanActor`), so loading it needs no RLlib."""

    def __init__(self, skip: SkipNet, policy: Optional[FastPolicy], input_shape, masked: GatedNet):
        super().__init__()
        # `masked`: the same network in masked form, statically pruned (model.pt): `TraceableModel`
        self.skip, self.masked, self.input_shape = skip, masked.eval(), tuple(input_shape)
        self.policy = policy.portable() if isinstance(policy, DeployedPolicy) else policy

    def _apply(self, fn, recurse=True):
        """`.to(device)` and friends move the runtime agent too: a `LeanActor` is plain tensors, not a module."""
        super()._apply(fn, recurse)
        if isinstance(self.policy, DeployedPolicy) and self.policy.lean is not None:
            self.policy = copy.copy(self.policy)
            self.policy.lean = self.policy.lean.applied(fn)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One input: the skip path. A batch: the masked network with the policy run batched, faster than
        the skip path input by input on CPU (docs/why.md; an LSTM agent, which cannot run batched here, takes
        the skip path)."""
        lstm = isinstance(self.policy, DeployedPolicy) and self.policy.lean is None
        if x.shape[0] == 1 or self.policy is None or lstm:
            return self.skip(x, self.policy)
        with torch.no_grad():
            return masked_forward(self.masked, self.policy, x)

    def compiled(self) -> torch.jit.ScriptModule | None:
        """The same model as one TorchScript graph (rtsearch.deploy.compiled): without runtime policy, the skip-path
        network (its shapes are fixed); with fixed ratios or a feed-forward agent, the masked form with the policy
        run batched inside the graph (`TraceableModel`: every kept channel computed, the runtime choices
        applied as masks); None for an LSTM agent. On the device where the model lives."""
        from rtsearch.deploy import compiled
        if self.policy is None:
            return compiled.network(self.skip, self.input_shape)
        try:
            masked = TraceableModel(self)
        except ValueError:          # an LSTM agent: no fixed-shape form
            return None
        example = torch.zeros(2, *self.input_shape, device=compiled.device_of(self.skip))
        return compiled.frozen(compiled.traced(masked, example))


@dataclass
class DeployedRun:
    net: GatedNet                   # the masked network, the reference
    static_ratios: list
    skip: SkipNet
    policy: Optional[FastPolicy]    # None: no runtime pruning
    config: dict

    def model(self) -> DeployedModel:
        return DeployedModel(self.skip, self.policy, self.net.input_shape, prune_static(self.net, self.static_ratios))

    def masked_policy(self, shift: float | None = None):
        """The same policy on the masked network (a Walk policy), as the training loop evaluated it
        (`shift` replaces the calibration shift: rtsearch.export --budget bisects it)."""
        from rtsearch.net.supervised import fixed_policy
        policy = self.policy
        if policy is None:
            return fixed_policy([0.0] * self.net.num_layers)
        if not isinstance(policy, DeployedPolicy):
            return fixed_policy([float(policy(t, None, [])) for t in range(self.net.num_layers)])
        from rtsearch.rl.policies import runtime_policy
        cost = CostModel(self.net)
        agent = runtime_policy(policy.module, self.net, cost, policy.descriptors, policy.budget, policy.p_max)
        shift = policy.shift if shift is None else shift
        return lambda walk: (agent(walk) + shift).clamp(0.0, policy.p_max)


def write_model(checkpoint_path: str, out: str) -> None:
    """Write the deployed model of a run's checkpoint (`load`) to `out`, for torch.load(out, weights_only=False)."""
    model = load(checkpoint_path).model()
    with replacing(out) as tmp:
        torch.save(model, tmp)


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


def load(path: str, budget: float | None = None) -> DeployedRun:
    """The deployed model of a run's checkpoint.pt or best.pt (exit-2 UsageError if it is not one), at
    the run's budget, or for a run over a budget range (rtsearch.rl.budgets) at `budget` in that range
    with the calibration shift interpolated from the run's evaluation budgets."""
    state = checkpoint.load(path)
    net = checkpoint.network_of(state, path).eval()
    ratios = state.get("static_ratios") or [0.0] * net.num_layers
    if len(ratios) != net.num_layers:
        raise UsageError(f"checkpoint {path} has {len(ratios)} static ratios for {net.num_layers} layers: "
                         f"pass the checkpoint.pt a run wrote")
    config = state.get("config") or {}
    run_state = state.get("run_state") or {}
    policy, pruning = None, config.get("pruning")
    if config and not pruning:
        raise UsageError(f"checkpoint {path} was written by an older rtsearch (no record of what its method prunes): "
                         f"run it again")
    pruning = Pruning(**pruning) if pruning else None
    budget_range = config.get("budget_range")
    if budget is None or not config:
        budget = config.get("budget")
    elif budget_range:
        budgets.check_within(budget, *budget_range)
    elif abs(budget - config["budget"]) > 1e-9:
        raise UsageError(f"{path} was trained for budget {config['budget']:g} only: pass that budget, or train "
                         f"with --budget-range LO:HI to choose the budget at deploy time")
    shift = run_state.get("runtime_shift", 0.0)
    if budget_range and run_state.get("eval_budgets"):
        shift = budgets.at(budget, run_state["eval_budgets"], run_state["shifts"])
        if run_state.get("bn_stats"):   # those of the nearest evaluation budget (rtsearch.export recomputes them)
            budgets.load_bn_state(net, run_state["bn_stats"][budgets.nearest(budget, run_state["eval_budgets"])])
    if config.get("fixed_ratios"):    # a uniform baseline: its ratios follow from the budget
        runtime = uniform_ratios(CostModel(net, predictors=pruning.predictors_kept), config["budget"], pruning)[1]
        policy = FixedRatios(runtime) if float(runtime.max()) > 0 else None
    elif config and pruning.runtime:
        agents = "agents_best" if os.path.basename(path) == "best.pt" else "agents"
        module = runtime_module(os.path.join(os.path.dirname(os.path.abspath(path)), agents))
        policy = DeployedPolicy(module, net, ratios, budget, config["p_max"], shift)
    return DeployedRun(net, [float(r) for r in ratios], SkipNet(net, ratios), policy, config)


def masked_forward(net: GatedNet, policy: Optional[FastPolicy], x: torch.Tensor) -> torch.Tensor:
    """A batch through the masked network (statically pruned already), every input with its own runtime
    ratios from `policy` (None, `FixedRatios`, or a feed-forward `DeployedPolicy` run batched)."""
    if isinstance(policy, DeployedPolicy) and policy.lean is None:
        raise ValueError("an LSTM runtime agent does not run batched here: take the skip path, one input at a time")
    walk = net.walk(x)
    macs = x.new_zeros(x.shape[0])
    while not walk.done:
        B = walk.h.shape[0]
        if policy is None:
            ratio = walk.h.new_zeros(B)
        elif isinstance(policy, FixedRatios):
            ratio = walk.h.new_full((B,), policy.ratios[walk.t])
        else:
            if walk.t:
                macs = macs + policy.charge(walk.t - 1, walk.kept)
            mean = batched_mean(policy.lean, walk.t, current_importance(walk), macs)
            action = ((mean + 1.0) * policy.p_max / 2.0).clamp(0.0, policy.p_max)
            ratio = (action + policy.shift).clamp(0.0, policy.p_max)
        walk.step(ratio)
    return walk.logits()


def batched_mean(lean, t: int, importance: torch.Tensor, macs: torch.Tensor) -> torch.Tensor:
    """`LeanActor` on a batch: (B, C_t) importances and (B,) MACs so far -> (B,) mean actions."""
    ordered = importance.float().sort(dim=1, descending=True).values
    top = ordered[:, :1]
    summary = (ordered / (top + EPS)) @ lean.resample[t][:ordered.shape[1]]
    extra = torch.stack([macs, macs - lean.budget * lean.cum[t], torch.log1p(top[:, 0].clamp(min=0))], dim=1)
    h = lean.const[t] + summary.clamp(-OBS_BOUND, OBS_BOUND) @ lean.w_summary.T \
        + extra.clamp(-OBS_BOUND, OBS_BOUND) @ lean.w_extra.T
    for activation, (w, b) in zip(lean.activations, lean.rest):
        h = F.linear(torch.tanh(h) if activation is torch.nn.Tanh else F.relu(h), w, b)
    return h[:, 0]


class TraceableModel(torch.nn.Module):
    """The deployed model in masked form, for the MLflow Model Registry: forward(x) -> logits (B, classes) with
    fixed shapes; a feed-forward runtime agent runs batched.

    MLflow 3 stores a PyTorch model as a torch.export program (pt2) and loads pickled ones only where
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set. The skip path (`DeployedModel`) changes tensor shapes with each
    input's keep counts, which a traced program cannot; here every shape is fixed instead: the statically pruned
    channels are removed, every remaining channel is computed, and the runtime policy's choices are applied per
    input as masks, as the run's evaluation applied them. Same predictions as deployed.pt (to float rounding), not
    its speed. A ladder run's fixed-shape form is rtsearch.methods.ladder.TraceableLadder."""

    def __init__(self, model: DeployedModel):
        super().__init__()
        policy = model.policy
        if isinstance(policy, DeployedPolicy) and policy.lean is None:
            raise ValueError("an LSTM runtime agent has no traceable form; load deployed.pt with torch.load")
        if not (policy is None or isinstance(policy, (DeployedPolicy, FixedRatios))):
            raise ValueError(f"no traceable form for a {type(policy).__name__} runtime policy")
        self.net, self.policy, self.input_shape = model.masked, policy, model.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_forward(self.net, self.policy, x)
