"""The ladder's re-run choice: the threshold cascade within a budget (rtsearch.methods.ladder.best_cascade) and the
re-run agent's env, calibration and reward (rtsearch.rl.rerun). The per-input oracle bound of experiments.robust is
tested in test_robust_study.py."""
import numpy as np
import pytest


def test_the_cascade_re_runs_the_least_confident_within_the_budget():
    from rtsearch.methods.ladder import best_cascade
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
    from rtsearch.rl.rerun import calibration_shift, greedy
    from rtsearch.rl.rerun_features import features
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
