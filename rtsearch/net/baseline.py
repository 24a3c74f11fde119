"""Uniform ratios: the smallest ratio, the same on every layer, that meets a budget.

The fixed-ratio baseline fine-tunes under them; the agents start from them and must beat them.
"""
from __future__ import annotations

from typing import Callable

import torch

from rtsearch.config import Pruning
from rtsearch.net.cost import CostModel
from rtsearch.net.pruning import keep_count


def smallest_ratio(meets: Callable[[float], bool], high: float = 0.999) -> float:
    """Smallest p in [0, high] with meets(p), by bisection (costs only fall as p grows)."""
    if meets(0.0):
        return 0.0
    lo, hi = 0.0, high
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi


def budget_shift(macs_at: Callable[[float], float], budget: float, p_max: float, steps: int = 14,
                 near: float | None = None) -> float:
    """Smallest shift s in [-p_max, p_max], added to every runtime ratio, with macs_at(s) <= budget,
    to the resolution of `steps` halvings of that interval.

    Bisection: MACs fall as the shift grows. The learned allocation keeps its shape (which layers
    and which inputs get more), the shift only moves its level onto the budget. `near` (the previous
    shift; it moves little from one iteration to the next) starts the search from a small bracket
    around it: about 10 walks of the network instead of 15, to the same resolution."""
    resolution = 2 * p_max / 2 ** steps
    if near is None:
        if macs_at(-p_max) <= budget:
            return -p_max
        lo, hi = -p_max, p_max
    else:
        lo, hi = _bracket(macs_at, budget, min(max(near, -p_max), p_max), p_max)
    while hi - lo > resolution:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if macs_at(mid) <= budget else (mid, hi)
    return hi


def _bracket(macs_at: Callable[[float], float], budget: float, point: float, p_max: float,
             step: float = 0.02) -> tuple[float, float]:
    """(lo, hi) with macs_at(lo) > budget >= macs_at(hi) around `point`, stepping away from it with
    doubling steps; lo = -p_max where even that meets the budget, hi = p_max (unchecked) where
    nothing does."""
    if macs_at(point) <= budget:            # the answer is at or below `point`
        hi = point
        while hi > -p_max:
            lo = max(hi - step, -p_max)
            if macs_at(lo) > budget:
                return lo, hi
            hi, step = lo, step * 2
        return -p_max, -p_max
    lo = point
    while lo < p_max:
        hi = min(lo + step, p_max)
        if hi == p_max or macs_at(hi) <= budget:
            return lo, hi
        lo, step = hi, step * 2
    return p_max, p_max


def rounded(kept: torch.Tensor, widths: torch.Tensor, multiple: int) -> torch.Tensor:
    """Each keep count to the nearest multiple of `multiple` (halves up), at least it, at most the layer's width."""
    return torch.minimum(widths, torch.clamp((kept + multiple // 2) // multiple * multiple, min=multiple))


def rounded_keep_counts(cost: CostModel, budget: float, multiple: int) -> torch.Tensor:
    """Static keep counts that are multiples of `multiple` (at least it, at most the layer's width): the smallest
    uniform ratio whose keep counts, each rounded to the nearest multiple, meet the MACs budget (rounding keeps the
    counts monotone in the ratio, so bisection holds). A UsageError where even `multiple` channels on every layer
    cost more than the budget."""
    from rtsearch.errors import UsageError

    def counts(p: float) -> torch.Tensor:
        return rounded(keep_count(torch.tensor(p), cost.widths), cost.widths, multiple)

    def meets(p: float) -> bool:
        kept = counts(p)
        return float(cost.macs_ratio(kept[None, :], kept)[0]) <= budget

    if not meets(1.0):
        raise UsageError(f"--round-to {multiple}: {multiple} channels on every layer already cost more than the MACs "
                         f"budget {budget:g}; pass a smaller multiple or a larger --budget")
    return counts(smallest_ratio(meets))


def macs_ratio_of(cost: CostModel, static_p: float, runtime_p: float) -> float:
    """MACs ratio of uniform static and runtime ratios on every layer."""
    static_kept = keep_count(torch.tensor(static_p), cost.widths)
    runtime_kept = keep_count(torch.tensor(runtime_p), static_kept)
    return float(cost.macs_ratio(runtime_kept[None, :], static_kept)[0])


def params_ratio_of(cost: CostModel, static_p: float) -> float:
    return cost.params_ratio(keep_count(torch.tensor(static_p), cost.widths))


def uniform_ratios(cost: CostModel, budget: float, pruning: Pruning) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-ratio baseline: one uniform p meeting the MACs budget -> (static ratios, runtime ratios).

    Where both kinds of `pruning` are on, the same p applies statically and at runtime."""
    static_on, runtime_on = pruning.static, pruning.runtime
    p = smallest_ratio(lambda q: macs_ratio_of(cost, q if static_on else 0.0, q if runtime_on else 0.0) <= budget)
    layers = cost.num_layers
    return torch.full((layers,), p if static_on else 0.0), torch.full((layers,), p if runtime_on else 0.0)


def agent_start(cost: CostModel, budget: float, param_budget: float, pruning: Pruning) -> tuple[float, float]:
    """Where the agents start: (static p meeting the parameter budget, runtime p meeting the MACs budget).

    A model without runtime pruning has to meet the MACs budget with its static ratio alone."""
    static_p = 0.0
    if pruning.static:
        static_p = smallest_ratio(lambda q: params_ratio_of(cost, q) <= param_budget)
    if not pruning.runtime:
        return max(static_p, smallest_ratio(lambda q: macs_ratio_of(cost, q, 0.0) <= budget)), 0.0
    return static_p, smallest_ratio(lambda q: macs_ratio_of(cost, static_p, q) <= budget)
