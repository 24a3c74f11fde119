"""The per-input oracle bound of experiments.robust: the best choice of width per input within a budget."""
import itertools

import numpy as np
import pytest

from experiments.robust import oracle_accuracy

pytestmark = pytest.mark.study


def brute_force(correct, level_macs, budget):
    best = (0.0, 0.0)
    for choice in itertools.product(range(len(level_macs)), repeat=correct.shape[1]):
        macs = np.mean([level_macs[c] for c in choice])
        if macs <= budget + 1e-12:
            right = np.mean([correct[c, i] for i, c in enumerate(choice)])
            best = max(best, (right, -macs))
    return best[0], -best[1]


@pytest.mark.parametrize("seed", range(20))
def test_the_oracle_matches_brute_force_on_small_cases(seed):
    rng = np.random.default_rng(seed)
    levels, inputs = 3, 6
    correct = rng.random((levels, inputs)) < 0.5
    level_macs = rng.permutation(np.array([0.02, 0.1, 0.3]))     # levels need not come sorted
    budget = float(rng.uniform(0.02, 0.3))
    accuracy, macs = oracle_accuracy(correct, level_macs, budget)
    expected_accuracy, _ = brute_force(correct, level_macs, budget)
    assert accuracy == pytest.approx(expected_accuracy)
    assert macs.mean() <= budget + 1e-12
    assert set(macs) <= set(level_macs)                       # every input at one of the levels


def test_the_oracle_needs_a_level_within_the_budget():
    with pytest.raises(ValueError, match="cheapest level"):
        oracle_accuracy(np.ones((2, 3), bool), np.array([0.1, 0.2]), 0.05)
