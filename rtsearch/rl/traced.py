"""The deployed model in masked form, for the MLflow Model Registry.

MLflow 3 stores a PyTorch model as a torch.export program (pt2) and loads pickled ones only where
MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set. The skip path (rtsearch.rl.deployed.DeployedModel) changes
tensor shapes with each input's keep counts, which a traced program cannot; `TraceableModel` keeps every
shape fixed instead: the statically pruned channels are removed, every remaining channel is computed,
and the runtime policy's choices are applied per input as masks, as the run's evaluation applied them.
Same predictions as deployed.pt (to float rounding), not its speed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rtsearch.net.models import Walk
from rtsearch.net.pruning import EPS
from rtsearch.rl.deployed import DeployedModel, DeployedPolicy, FixedRatios
from rtsearch.rl.observations import OBS_BOUND, current_importance


class TraceableModel(torch.nn.Module):
    """forward(x) -> logits (B, classes) with fixed shapes; a feed-forward runtime agent runs batched."""

    def __init__(self, model: DeployedModel):
        super().__init__()
        policy = model.policy
        if isinstance(policy, DeployedPolicy) and policy.lean is None:
            raise ValueError("an LSTM runtime agent has no traceable form; load deployed.pt with torch.load")
        if not (policy is None or isinstance(policy, (DeployedPolicy, FixedRatios))):
            raise ValueError(f"no traceable form for a {type(policy).__name__} runtime policy")
        self.net, self.policy, self.input_shape = model.masked, policy, model.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        walk = self.net.walk(x)
        macs = x.new_zeros(x.shape[0])
        while not walk.done:
            if walk.t:
                macs = macs + charged(self.policy, walk, walk.t - 1) if isinstance(self.policy, DeployedPolicy) \
                    else macs
            walk.step(self.ratios(walk, macs))
        return walk.logits()

    def ratios(self, walk: Walk, macs: torch.Tensor) -> torch.Tensor:
        B = walk.h.shape[0]
        if self.policy is None:
            return walk.h.new_zeros(B)
        if isinstance(self.policy, FixedRatios):
            return walk.h.new_full((B,), self.policy.ratios[walk.t])
        p = self.policy
        mean = batched_mean(p.lean, walk.t, current_importance(walk), macs)
        low, high = 0.0, p.p_max
        action = (low + (mean + 1.0) * (high - low) / 2.0).clamp(low, high)
        return (action + p.shift).clamp(0.0, p.p_max)


def charged(policy: DeployedPolicy, walk: Walk, layer: int) -> torch.Tensor:
    """(B,) MACs (fraction of dense) each input spent on `layer`, as `DeployedPolicy._charge` counts them."""
    kept = walk.kept

    def count(ref, full):
        if ref is None:
            return full
        kind, t = ref
        if kind != "runtime":
            return policy.static_kept[t]
        return kept[t].to(walk.h.dtype) if t < len(kept) else policy.widths[t]

    total = walk.h.new_zeros(walk.h.shape[0])
    for in_ref, in_full, out_ref, out_full, factor in policy.parts[layer]:
        total = total + count(in_ref, in_full) * count(out_ref, out_full) * factor
    return total / policy.dense_macs


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
