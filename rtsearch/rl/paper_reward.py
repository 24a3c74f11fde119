"""The rewards of the paper's two agents (`--method paper`), their running mean and their budgets, as formulas.

Both agents are rewarded once per input, at the last layer: -CE(x) / m plus a budget term, m a running mean of the
batch cross-entropy (`RunningMean`). The runtime agent's budget term is a soft wall on the input's MACs c against the
cap (`budget_term`); the static agent's is the same exponential penalty on its parameters when over, nothing under.
Under its cap, `under` "bonus" is the paper's (the runtime agent paid UNDER_SLOPE per unit left, the static agent
nothing); "target" charges both agents the wall's slope at the cap, scale / T, per unit left (`under_slope`), so the
cap is a target rather than a ceiling (`--paper-under target`, not the paper's).
The caps are the MACs and parameters of the network at one uniform width (`uniform_width`), the width this
project's MACs budget allows: so the runtime cap equals the budget. An ablation swaps the runtime reward for
--method both's Lagrangian (`lagrangian_reward`, its multiplier moved by `dual_ascent`).
"""
from __future__ import annotations

import numpy as np
import torch

from rtsearch.net.cost import CostModel

UNDER_SLOPE = 0.1       # the runtime reward's bonus per unit of MACs left under the cap
WARM_STEPS = 200        # batches averaged plainly before the running mean decays


class RunningMean:
    """m: the plain mean of the first WARM_STEPS batch means, then m <- decay m + (1 - decay) value."""

    def __init__(self, decay: float, value: float | None = None, steps: int = 0):
        self.decay, self.value, self.steps = float(decay), value, int(steps)

    def update(self, batch_mean: float) -> float:
        self.steps += 1
        if self.value is None:
            self.value = float(batch_mean)
        elif self.steps <= WARM_STEPS:
            self.value += (float(batch_mean) - self.value) / self.steps
        else:
            self.value = self.decay * self.value + (1.0 - self.decay) * float(batch_mean)
        return self.value

    def state(self) -> dict:
        return {"decay": self.decay, "value": self.value, "steps": self.steps}


def over_penalty(cost: np.ndarray, cap: float, scale: float, temperature: float) -> np.ndarray:
    """-scale (exp((cost - cap) / T) - 1) where cost exceeds cap, else 0."""
    cost = np.asarray(cost, dtype=np.float64)
    over = cost > cap
    return np.where(over, -scale * np.expm1(np.minimum((cost - cap) / temperature, 50.0)), 0.0)


def under_slope(role: str, under: str, scale: float, temperature: float) -> float:
    """The reward per unit of cost left under the cap: the paper's UNDER_SLOPE (runtime) or 0 (static) under
    "bonus"; -scale / T, the wall's slope at the cap, under "target"."""
    if under == "target":
        return -scale / temperature
    return UNDER_SLOPE if role == "runtime" else 0.0


def budget_term(macs: np.ndarray, cap: float, scale: float, temperature: float, under: str = "bonus",
                role: str = "runtime") -> np.ndarray:
    """An agent's budget term on its cost (the runtime agent's b on its MACs, `role` "static" on its parameters):
    the exponential penalty over the cap, `under_slope` (cap - cost) under it."""
    macs = np.asarray(macs, dtype=np.float64)
    slope = under_slope(role, under, scale, temperature)
    return np.where(macs > cap, over_penalty(macs, cap, scale, temperature), slope * (cap - macs))


def budget_slope(macs: float, cap: float, scale: float, temperature: float, under: str = "bonus") -> float:
    """db/dc at c = macs: -(scale / T) exp((c - cap) / T) over the cap, minus the under-cap slope under it."""
    if macs > cap:
        return -scale / temperature * float(np.exp(min((macs - cap) / temperature, 50.0)))
    return -under_slope("runtime", under, scale, temperature)


def mean_budget_term(macs: np.ndarray, cap: float, scale: float, temperature: float,
                     under: str = "bonus") -> np.ndarray:
    """`--paper-budget mean`: the same b on the batch's mean MACs c̄, each input charged its first-order share,
    b(c̄) + b'(c̄) (c - c̄): the batch's terms sum to B b(c̄), and an input pays for what it adds to the mean at the
    mean's price (as --method both prices an input's MACs by a multiplier set on the mean)."""
    macs = np.asarray(macs, dtype=np.float64)
    mean = float(macs.mean())
    return float(budget_term(mean, cap, scale, temperature, under)) + budget_slope(
        mean, cap, scale, temperature, under) * (macs - mean)


def runtime_reward(ce: np.ndarray, mean_ce: float, macs: np.ndarray, cap: float, scale: float,
                   temperature: float, form: str = "input", under: str = "bonus") -> np.ndarray:
    """Per input: -CE / m + b(c) (`form` "input", the paper's), or with b on the batch's mean (`form` "mean")."""
    term = budget_term if form == "input" else mean_budget_term
    return -np.asarray(ce, dtype=np.float64) / mean_ce + term(macs, cap, scale, temperature, under)


def lagrangian_reward(ce: np.ndarray, macs: np.ndarray, beta: float) -> np.ndarray:
    """`--paper-reward lagrangian`, per input: -CE - beta c (--method both's runtime reward, summed over the layers
    at discount 1), beta the Lagrange multiplier on the mean MACs ratio c."""
    return -np.asarray(ce, dtype=np.float64) - float(beta) * np.asarray(macs, dtype=np.float64)


def dual_ascent(beta: float, macs: float, budget: float, step: float) -> float:
    """beta <- max(0, beta + step (macs - budget)): the price of MACs rises while the mean is over the budget."""
    return max(0.0, float(beta) + float(step) * (float(macs) - float(budget)))


def static_reward(ce: np.ndarray, mean_ce: float, params: np.ndarray, cap: float, scale: float,
                  temperature: float, under: str = "bonus") -> np.ndarray:
    """Per input: -CE / m plus the exponential penalty when the parameters exceed their cap (under it nothing, the
    paper's; `under` "target": -(scale / T)(cap - p))."""
    return -np.asarray(ce, dtype=np.float64) / mean_ce + budget_term(params, cap, scale, temperature, under, "static")


def keep_fraction(width_budget: float, output) -> np.ndarray:
    """The paper's action: Gaussian mean = budget + decoder output, clamped into [0.1, 1]."""
    return np.clip(width_budget + np.asarray(output, dtype=np.float64), 0.1, 1.0)


def uniform_width(cost: CostModel, budget: float, of: str = "macs") -> float:
    """The keep fraction w in (0, 1] whose uniform (fractional) width meets the budget, a ratio of the dense MACs
    (`of` "macs") or of its parameters ("params"): the paper's budgets are widths, this project's are ratios."""
    def ratio(w: float) -> float:
        macs, params = caps(cost, w)
        return macs if of == "macs" else params

    lo, hi = 0.0, 1.0
    if ratio(hi) <= budget:
        return 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) <= budget else (lo, mid)
    return lo


def caps(cost: CostModel, width: float) -> tuple[float, float]:
    """(MACs cap, parameter cap): the MACs and parameter ratios of the network at uniform width `width`."""
    full = cost.widths.double()
    macs = float(cost.macs_ratio(width * full[None, :], full)[0])
    params = cost.params(width * full) / cost.dense_params
    return macs, params


def params_ratio(cost: CostModel, keep: torch.Tensor) -> np.ndarray:
    """Parameters ratio of each row of static keep fractions (B, L), as ceil(fraction * C) channels stored."""
    from rtsearch.net.pruning import keep_count
    counts = keep_count(1.0 - torch.as_tensor(keep, dtype=torch.float32), cost.widths)
    return np.array([cost.params(row) / cost.dense_params for row in counts])
