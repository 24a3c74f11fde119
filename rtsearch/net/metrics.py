"""Score, feasibility and iterations-to-best exactly as docs/method.md §2 "Definitions"."""
from __future__ import annotations

SCORE_PENALTY = 2.0      # fixed, never the searched reward weights
FEASIBLE_SLACK = 0.01
BEST_TOLERANCE = 0.001


def overshoot(ratio: float, budget: float) -> float:
    return max(0.0, ratio - budget)


def score(accuracy: float, macs_ratio: float, params_ratio: float, budget: float, param_budget: float) -> float:
    return (accuracy - SCORE_PENALTY * overshoot(macs_ratio, budget)
            - SCORE_PENALTY * overshoot(params_ratio, param_budget))


def feasible(macs_ratio: float, params_ratio: float, budget: float, param_budget: float) -> bool:
    return overshoot(macs_ratio, budget) <= FEASIBLE_SLACK and overshoot(params_ratio, param_budget) <= FEASIBLE_SLACK


def iters_to_best(scores: list[float]) -> int:
    """First iteration (1-based) whose score is within 0.001 of the run's best."""
    if not scores:
        return 0
    best = max(scores)
    return next(i + 1 for i, s in enumerate(scores) if s >= best - BEST_TOLERANCE)


def sweep_iters_to_best(trials: list[list[float]]) -> int:
    """Iterations spent by all trials, in the order they ran, until the best trial reached its best.

    `trials` holds each trial's per-iteration scores, in the order the trials ran; every trial
    before the best one counts in full, the best one up to its own iterations-to-best.
    """
    if not trials:
        return 0
    best_index = max(range(len(trials)), key=lambda i: max(trials[i], default=float("-inf")))
    return sum(len(s) for s in trials[:best_index]) + iters_to_best(trials[best_index])
