"""The per-input oracle bound of rtsearch.studies.robust: the best choice of width per input within a budget."""
import itertools

import numpy as np
import pytest

from rtsearch.studies.robust import oracle_accuracy


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


def test_the_cascade_re_runs_the_least_confident_within_the_budget():
    from rtsearch.rl.ladder import best_cascade
    rng = np.random.default_rng(0)
    n = 200
    confidence = rng.random(n)
    cheap_right = confidence > 0.3            # the cheap width errs exactly on its least confident inputs
    split = {"correct": cheap_right, "confidence": confidence}
    wide = {"correct": np.ones(n, bool), "confidence": np.ones(n)}
    levels = [{"macs_ratio": 0.02, "val": split, "test": split}, {"macs_ratio": 0.2, "val": wide, "test": wide}]
    best = best_cascade(levels, 0.08)         # room to re-run (0.08 - 0.02) / 0.2 = 30 % of the inputs
    assert best["val_macs_ratio"] <= 0.08 + 1e-12
    assert best["val_accuracy"] == pytest.approx(1.0, abs=0.02)
    assert best_cascade(levels, 0.01) is None  # not even the cheap width fits


def test_the_re_run_env_charges_the_answer_s_ce_and_the_re_run_macs():
    from rtsearch.rl.rerun import RerunVectorEnv
    n, actions = 50, 3
    rng = np.random.default_rng(1)
    ce = rng.random((n, actions)).astype(np.float32)
    extra = np.array([0.0, 0.1, 0.4], np.float32)
    env = RerunVectorEnv({"obs": rng.random((n, 4)).astype(np.float32), "ce": ce, "extra": extra, "beta": 2.0},
                         num_envs=8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8, 4)
    chosen = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    _, reward, terminated, _, _ = env.step(chosen)
    assert terminated.all()                   # one decision per input
    np.testing.assert_allclose(reward, -ce[env._idx, chosen] - 2.0 * extra[chosen], rtol=1e-6)
    _, reward, terminated, _, _ = env.step(chosen)   # NEXT_STEP autoreset: new inputs, no reward
    assert not terminated.any() and not reward.any()
    env.set_world({"beta": 0.5})
    _, reward, _, _, _ = env.step(np.zeros(8, int) + 2)
    np.testing.assert_allclose(reward, -ce[env._idx, 2] - 0.5 * 0.4, rtol=1e-6)


def test_the_re_run_calibration_meets_the_spare_macs():
    from rtsearch.rl.rerun import calibration_shift, features, greedy
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(400, 3))
    extra = np.array([0.0, 0.1, 0.4])
    for spare in (0.0, 0.02, 0.05, 0.2):
        shift = calibration_shift(logits, extra, spare)
        spent = extra[greedy(logits, extra, shift)].mean()
        assert spent <= spare + 1e-9
        assert extra[greedy(logits, extra, shift - 0.01)].mean() > spare or shift == -100.0  # the least shift
    log_probs = np.log(rng.dirichlet(np.ones(10), 5))
    obs = features(log_probs)
    assert obs.shape == (5, 21) and (obs >= 0).all() and (obs <= 1 + 1e-6).all()
    assert (np.diff(obs[:, :10], axis=1) <= 0).all()      # sorted class probabilities, largest first


def test_the_error_reward_charges_a_wrong_answer_one_and_a_right_one_nothing():
    from rtsearch.rl.rerun import charge
    ce = np.array([[0.1, 2.0], [3.0, 0.01]], np.float32)
    right = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(charge(ce, right, "error"), [[0.0, 1.0], [1.0, 0.0]])
    assert charge(ce, right, "ce") is ce
