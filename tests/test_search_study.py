"""The study behind results/search.md (experiments.search_sweeps): what a sweep that started from its space's
defaults adds over that first trial, and at what cost, read from made-up summaries."""
import json

import pytest

from experiments import search_sweeps

pytestmark = pytest.mark.study


def summary(seed: int, accuracies: list[float], best: int, seconds: list[float], defaults_first: bool = True) -> dict:
    trials = [{"trial_id": f"t{i}", "started": 100.0 + 10 * i, "seconds": s, "accuracy": a, "status": "completed",
               "config": {"lr_rerun": 0.001 * (i + 1), "entropy_rerun": 0.01}}
              for i, (a, s) in enumerate(zip(accuracies, seconds))]
    trials.reverse()                            # listed in any order: the first to start is the default trial
    return {"command": f"python -m rtsearch.tune --method ladder --budget 0.08 --seed {seed}", "cpus_per_trial": 1,
            "settings": {"seed": seed, "defaults_first": defaults_first},
            "sweeps": {"0.08": {"trials": trials, "best": {"trial_id": f"t{best}", "accuracy": accuracies[best]},
                                "wall_seconds": 400.0, "sweep_iters_to_best": 12, "iterations": 50}}}


def test_the_gain_is_the_chosen_trial_minus_the_first_and_the_cost_every_trials_cpu_seconds():
    got = search_sweeps.over_defaults(summary(0, [0.95, 0.96, 0.94], 1, [100.0, 50.0, 50.0]))
    assert got["gain"] == pytest.approx(0.01) and got["default_id"] == "t0"
    assert got["cpu_seconds"] == 200.0 and got["default_cpu_seconds"] == 100.0
    assert got["to_best"] == pytest.approx(10 + 50)                 # from the first start to the chosen trial's end
    assert search_sweeps.over_defaults(summary(0, [0.95], 0, [1.0], defaults_first=False)) is None


def test_the_section_lists_each_seed_and_counts_better_equal_and_worse(tmp_path, monkeypatch):
    monkeypatch.setattr(search_sweeps, "SWEEPS", str(tmp_path))
    for seed, (accuracies, best) in enumerate([([0.95, 0.96], 1), ([0.95, 0.94], 0), ([0.95, 0.94], 1)]):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "summary.json").write_text(json.dumps(summary(seed, accuracies, best, [100.0, 100.0])))
    text = "\n".join(search_sweeps.defaults_section(["s0", "s1", "s2", "missing"]))
    assert "| `s1` | 1 | entropy_rerun, lr_rerun | 0.9500 | 0.9500 (the default trial) | +0.0000 | 200 | 100 | 2.0 |" \
        in text
    assert "+0.0100, +0.0000, -0.0100 of test accuracy (mean +0.0000), better in 1, equal in 1 and worse in 1" in text
    assert "2.0 times the CPU-seconds" in text


def test_the_sweeps_search_the_named_methods_space_with_its_own_parameter_budget_unless_one_is_given():
    from types import SimpleNamespace
    args = SimpleNamespace(dataset="mnist5k", model="small", method="ladder", budget=0.08, param_budget=0,
                           num_samples=24, max_iterations=40, prefix="search-ladder")
    got = search_sweeps.tune_args(args, "random", 2)
    assert got[got.index("--method") + 1] == "ladder" and "--param-budget" not in got
    assert got[got.index("--name") + 1] == "search-ladder-random-s2" and got[got.index("--seed") + 1] == "2"
    args.param_budget = 0.8
    assert search_sweeps.tune_args(args, "tpe", 0)[8:10] == ["--param-budget", "0.8"]
    assert search_sweeps.space_file("ladder") == "search_spaces/ladder.yaml"
    assert search_sweeps.produced_by(["--method", "ladder", "--report-only"]) == ["--method", "ladder"]
