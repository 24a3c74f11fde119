"""What the agents observe and what each layer costs (the MACs charged as they are spent).

- `MacsMeter` splits the exact MACs count (rtsearch.net.cost) into one part per prunable layer;
- `layer_descriptors` describes each prunable layer (position, shape, share of MACs and parameters);
- `runtime_observation` / `static_observation` build the runtime and static agents' observations.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from rtsearch.net.cost import CostModel
from rtsearch.net.models import GatedNet, Walk, probe

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
    with torch.no_grad():
        r = current_importance(walk)
    return observation_of(r, walk.t, descriptors, macs_so_far, budget).numpy()


def observation_of(r: torch.Tensor, t: int, descriptors: np.ndarray, macs_so_far, budget: float) -> torch.Tensor:
    """`runtime_observation` as a CPU tensor, from layer t's importances on its static keep set, (B, C_t).
    The channel order does not matter (the summary sorts), so the reordered skip path observes the same."""
    with torch.no_grad():
        summary = importance_summary(r).cpu().double()
        top = torch.log1p(r.amax(dim=1).clamp(min=0)).cpu().double()
    B = r.shape[0]
    macs = torch.as_tensor(np.asarray(macs_so_far, dtype=np.float64)).expand(B)
    desc = torch.from_numpy(np.asarray(descriptors[t], dtype=np.float32)).double().expand(B, -1)
    slack = macs - budget * float(descriptors[t, -1])
    obs = torch.cat([desc, macs[:, None], torch.full((B, 1), float(budget), dtype=torch.float64), slack[:, None],
                     summary, top[:, None]], dim=1).float()
    return obs.clamp(-OBS_BOUND, OBS_BOUND)


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
