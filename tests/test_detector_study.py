"""The detector study: a score in place of the confidence reaches the cascade's search, and the label oracle
re-runs the cheap rung's errors first."""
import numpy as np
import pytest

from experiments.detector import error_auc, main, oracle_scores, with_scores
from rtsearch.methods.ladder import best_cascade

pytestmark = pytest.mark.study


def levels_with_confident_errors(n: int = 400) -> list[dict]:
    """A cheap rung that errs on a tenth of the inputs, half of them with high confidence, and a dearer rung
    that is always right."""
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, n)
    correct = np.ones(n, bool)
    correct[:n // 20] = False                                  # confident errors: confidence as the rest
    correct[n // 20:n // 10] = False
    confidence[n // 20:n // 10] = rng.uniform(0.1, 0.2, n // 20)   # unsure errors
    cheap = {"correct": correct, "confidence": confidence}
    wide = {"correct": np.ones(n, bool), "confidence": np.ones(n)}
    return [{"macs_ratio": 0.02, "val": cheap, "test": cheap}, {"macs_ratio": 0.2, "val": wide, "test": wide}]


def test_the_oracle_re_runs_every_error_the_confidence_misses():
    levels = levels_with_confident_errors()
    by_confidence = best_cascade(levels, 0.02 + 0.2 * 0.1)        # room to re-run a tenth of the inputs
    by_oracle = best_cascade(with_scores(levels, {i: oracle_scores(lv) for i, lv in enumerate(levels)}), 0.04)
    assert 0.95 <= by_confidence["accuracy"] < 0.99                # most confident errors stay
    assert by_oracle["accuracy"] == 1.0
    assert by_oracle["macs_ratio"] <= 0.04 + 1e-12
    assert error_auc(levels[0], oracle_scores(levels[0])["test"]) == 1.0
    assert error_auc(levels[0], levels[0]["test"]["confidence"]) < 0.8


def test_no_finished_ladder_run_is_refused_in_one_line(tmp_path, capsys):
    assert main(["--runs", str(tmp_path / "ladder-{budget}-s{seed}"), "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished ladder run" in err and "--runs" in err


def test_malformed_seeds_are_refused(capsys):
    assert main(["--seeds", "zero"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_a_second_opinion_pays_for_both_cheap_passes_and_catches_what_they_disagree_on():
    from experiments.detector import two_opinions
    rng = np.random.default_rng(1)
    n, k = 600, 3

    def level(macs: float, right: np.ndarray, answer_if_wrong: int) -> dict:
        y = np.zeros(n, int)
        pred = np.where(right, 0, answer_if_wrong)
        log_probs = np.log(np.full((n, k), 0.1))
        log_probs[np.arange(n), pred] = np.log(0.8)           # every pass equally sure: the confidence says nothing
        split = {"log_probs": log_probs, "correct": right, "confidence": np.full(n, 0.8), "labels": y}
        return {"macs_ratio": macs, "train": split, "val": split, "test": split}
    wrong = rng.random(n) < 0.2
    levels = [level(0.01, ~wrong | (rng.random(n) < 0.5), 2),    # a: right where b is, and on half of b's errors
              level(0.02, ~wrong, 1),                             # b errs on a fifth of the inputs
              level(0.2, np.ones(n, bool), 0)]
    found, pair = two_opinions(levels, 0.03 + 0.2 * 0.25, seed=0)
    assert pair["macs_ratio"] == 0.03 and found["cheap_macs"] == 0.03   # both cheap passes paid
    assert found["accuracy"] > 0.9                                         # the disagreements were re-run
    assert best_cascade(levels[1:], 0.03 + 0.2 * 0.25)["accuracy"] < 0.85   # b's confidence alone tells nothing
