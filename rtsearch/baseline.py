"""Fixed-ratio pruning: uniform ratios chosen so the MACs ratio meets the budget.

Usable before the agents exist, and the baseline they must beat.
"""
from __future__ import annotations

import torch

from rtsearch.cost import CostModel
from rtsearch.pruning import keep_count


def uniform_cost(cost: CostModel, p: float, method: str) -> float:
    """MACs ratio of uniform ratio p on every layer, for one method."""
    widths = cost.widths
    static_p = p if method in ("static-only", "both") else 0.0
    runtime_p = p if method in ("runtime-only", "both") else 0.0
    static_kept = keep_count(torch.tensor(static_p), widths)
    runtime_kept = keep_count(torch.tensor(runtime_p), static_kept)
    return float(cost.macs_ratio(runtime_kept[None, :], static_kept)[0])


def uniform_ratios(cost: CostModel, budget: float, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest uniform ratio whose MACs ratio is within the budget -> (static ratios, runtime ratios)."""
    lo, hi = 0.0, 0.999
    if uniform_cost(cost, lo, method) > budget:
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if uniform_cost(cost, mid, method) <= budget else (mid, hi)
        p = hi
    else:
        p = lo
    layers = cost.num_layers
    static = torch.full((layers,), p if method in ("static-only", "both") else 0.0)
    runtime = torch.full((layers,), p if method in ("runtime-only", "both") else 0.0)
    return static, runtime
