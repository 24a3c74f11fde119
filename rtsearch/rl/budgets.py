"""One runtime agent for a range of MACs budgets (`--budget-range LO:HI`).

Each batch of inputs the agent walks gets its own budget, drawn log-uniformly from the range (tight
budgets are where allocation matters, and a log scale gives them their share); the budget is in
the agent's observation and in its reward's budget term. The budget binds the mean MACs ratio at
each budget, so the Lagrange multiplier beta_f and the calibration shift are kept per budget: on
`POINTS` evaluation budgets spread geometrically over the range, each updated from the validation
MACs at that budget, and interpolated linearly in log-budget in between. The validation score of a
range run is the mean over the evaluation budgets; its test figures are given at each of them.

BatchNorm statistics are kept per evaluation budget too: one network fine-tuned across widths has
running statistics that match none of them (docs/why.md; the BN calibration of universally slimmable
networks). After each fine-tuning round (which
draws a budget from the range for every batch) they are recomputed under the policy at each
evaluation budget; evaluation, the agents' rollouts and the
deployed model use those of the nearest evaluation budget, and `rtsearch.export --budget` recomputes
them at the budget it deploys.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rtsearch.errors import UsageError

POINTS = 4


def parse_range(text: str) -> tuple[float, float]:
    """'LO:HI' -> (lo, hi), 0 < lo < hi <= 1, or a UsageError naming the problem."""
    try:
        lo, hi = (float(part) for part in text.split(":"))
    except ValueError:
        raise UsageError(f"--budget-range must be LO:HI, e.g. 0.05:0.5, got {text!r}") from None
    if not (0.0 < lo <= 1.0 and 0.0 < hi <= 1.0):
        raise UsageError(f"--budget-range {text}: both ends must be in (0, 1]; pass e.g. --budget-range 0.05:0.5")
    if lo >= hi:
        raise UsageError(f"--budget-range {text} is empty or inverted: pass LO:HI with LO < HI, e.g. 0.05:0.5")
    return lo, hi


def evaluation_budgets(lo: float, hi: float, points: int = POINTS) -> list[float]:
    """`points` budgets from lo to hi, evenly spaced in log-budget (both ends included)."""
    return [float(v) for v in np.geomspace(lo, hi, points)]


def draw(lo: float, hi: float, rng: np.random.Generator) -> float:
    """A budget drawn log-uniformly from [lo, hi]."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def at(budget: float, budgets: list[float], values: list[float]) -> float:
    """Value at `budget`, linear in log-budget between the evaluation budgets (held flat outside)."""
    return float(np.interp(math.log(budget), np.log(budgets), values))


def check_within(budget: float, lo: float, hi: float, what: str = "--budget") -> None:
    if not lo - 1e-9 <= budget <= hi + 1e-9:
        raise UsageError(f"{what} {budget:g} is outside the range {lo:g}:{hi:g} the model was trained for: "
                         f"pass a budget in that range, or train with a wider --budget-range")


def nearest(budget: float, budgets: list[float]) -> int:
    """Index of the evaluation budget nearest to `budget` in log-budget."""
    return int(np.argmin(np.abs(np.log(budgets) - math.log(budget))))


def bn_state(net: torch.nn.Module) -> list[dict]:
    """Every BatchNorm's running statistics (copies, on the CPU), in module order."""
    return [{"mean": m.running_mean.detach().cpu().clone(), "var": m.running_var.detach().cpu().clone()}
            for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def load_bn_state(net: torch.nn.Module, state: list[dict]) -> None:
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m, saved in zip(norms, state, strict=True):
        m.running_mean.copy_(saved["mean"])
        m.running_var.copy_(saved["var"])
