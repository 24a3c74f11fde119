"""A sweep's progress lines and its one wall clock, from a results folder written by hand (no Ray run, no
training): what `rtsearch.tune` prints as trials finish, and the labelled wall time of the closing lines and
summary.md."""
import pickle
import types

import pytest

from rtsearch.search import recorder, summary as report
from rtsearch.search.recorder import Recorder, duration, time_left

NOW = 1_000_000.0


def row(i, score):
    return {"iteration": i, "accuracy": score, "macs_ratio": 0.5, "macs_ratio_p95": 0.5, "params_ratio": 0.9,
            "score": score, "feasible": True, "seconds": 5.0 * i}


def make_sweep(root, **settings):
    folder = root / "results" / "demo"
    state = {"name": "demo", "command": "python -m rtsearch.tune --budget 0.5", "mlflow_experiment_id": None,
             "sweeps": {"0.5": {"finished": True, "seconds": 33.0}},
             "settings": {"budgets": [0.5], "param_budget": None, "dataset": "digits", "model": "small",
                          "space_path": "/x/default.yaml", "space": {"lam": "uniform [0, 1]"}, "num_samples": 3,
                          "max_iterations": 2, "search": "tpe", "seed": 0, "num_env_runners": 0,
                          "mlflow_uri": "sqlite:////x/mlruns.db", "fixed_ratios": False, **settings}}
    report.write_json(str(folder / report.SWEEP_FILE), state)
    return folder, state


def add_trial(folder, trial_id, status, scores):
    report.write_trial(str(folder), trial_id, {"trial_id": trial_id, "budget": 0.5, "config": {"lam": 0.5},
                                               "status": status, "started": 1.0, "attempts": 1})
    for i, s in enumerate(scores, 1):
        report.append_row(str(folder), trial_id, row(i, s))
    return report.read_trial(str(folder), trial_id)


@pytest.fixture
def frozen(monkeypatch):
    """The recorder's clock stopped at NOW, the sweep started 3m12s before it."""
    monkeypatch.setattr(recorder, "time", types.SimpleNamespace(time=lambda: NOW))
    monkeypatch.setattr(recorder, "progress", types.SimpleNamespace(started=NOW - 192, later_trials=0))


def test_durations_read_as_a_user_reads_them():
    assert [duration(s) for s in (0, 45, 192, 3600 + 4 * 60 + 10)] == ["0s", "45s", "3m12s", "1h04m"]


def test_time_left_is_the_mean_trial_over_the_trials_running_at_once():
    assert time_left([], 5, 2) == "time left: estimating..."        # no trial has finished yet
    assert time_left([100.0, 140.0], 4, 1) == "about 8m left"           # 120 s x 4 trials, one at a time
    assert time_left([100.0, 140.0], 4, 2) == "about 4m left"           # two at a time: half
    assert time_left([30.0], 1, 4) == "about 30s left"                  # never more at once than trials left
    assert time_left([3000.0], 2, 1) == "about 1h40m left"
    assert time_left([30.0], 0, 2) == "no trial left"


def test_a_finished_trial_prints_its_rank_score_best_so_far_and_clock(tmp_path, frozen):
    folder, _ = make_sweep(tmp_path)
    rec = Recorder(str(folder), 0.5, 3, 2, 2, None, "budget 0.5", None)
    rec._peak = 2                                            # two trials have run at once
    add_trial(folder, "a", "completed", [0.80, 0.90])
    rec._seconds.append(100.0)
    b = add_trial(folder, "b", "stopped", [0.95])            # the higher score, but stopped early by ASHA
    line = rec.finished_line(b, {"status": "stopped", "ended": NOW})
    # the completed trial leads, as the summary's choice of the best takes completed trials first; one trial of
    # 100 s is left: about 2m, in minutes
    assert line == ("trial 2 of 3 finished: b score 0.9500 (val), stopped early by ASHA after 1/2 iterations · "
                    "best so far 0.9000 (trial a) · elapsed 3m12s · about 2m left"), line
    c = add_trial(folder, "c", "error", [])
    line = rec.finished_line(c, {"status": "error", "ended": NOW, "attempts_failed": 3, "error": "ValueError: x",
                                 "error_file": "/e.txt"})
    assert line == ("trial 3 of 3 finished: c failed for good after 3 attempt(s): ValueError: x (traceback: /e.txt) "
                    "· best so far 0.9000 (trial a) · elapsed 3m12s · no trial left"), line


def test_before_any_trial_finishes_the_time_left_is_being_estimated(tmp_path, frozen, capsys):
    folder, _ = make_sweep(tmp_path)
    rec = Recorder(str(folder), 0.5, 3, 2, 2, None, "budget 0.5", None)
    trial = types.SimpleNamespace(trial_id="a", config={"lam": 0.5, "settings": {}}, status="RUNNING")
    rec.on_trial_start(0, [trial], trial)
    assert capsys.readouterr().out == ("[budget 0.5] trial a started (1 running, 0/3 done): lam=0.5 · elapsed 3m12s · "
                                       "time left: estimating...\n")


def test_the_budgets_after_this_one_count_in_the_time_left(tmp_path, frozen):
    folder, _ = make_sweep(tmp_path)
    recorder.progress.later_trials = 3
    rec = Recorder(str(folder), 0.5, 1, 2, 2, None, "budget 0.5", None)
    rec._seconds.append(60.0)
    a = add_trial(folder, "a", "completed", [0.9])
    assert rec.finished_line(a, {"status": "completed", "ended": NOW}).endswith("elapsed 3m12s · about 3m left")


def test_a_restored_recorder_forgets_what_an_earlier_run_saw(tmp_path):
    """Tune pickles its callbacks with the experiment; --resume brings that Recorder back, in a new run whose
    trials, durations and clock are its own."""
    folder, _ = make_sweep(tmp_path)
    rec = Recorder(str(folder), 0.5, 3, 2, 2, None, "budget 0.5", None)
    rec._began["a"], rec._seconds, rec._peak, rec._pending["a"] = 1.0, [5.0], 4, {"status": "completed"}
    back = pickle.loads(pickle.dumps(rec))
    assert (back._began, back._seconds, back._peak, back._pending) == ({}, [], 1, {})
    assert (back.results_dir, back.total, back.tag) == (rec.results_dir, 3, "budget 0.5")


@pytest.mark.parametrize("settings, resumed, label", [
    ({}, False, "wall time, whole sweep incl. dense pre-training and baseline: 174 s"),
    ({"fixed_ratios": True}, False, "wall time, whole sweep incl. dense pre-training: 174 s"),
    ({}, True, "wall time, this --resume run incl. dense pre-training and baseline: 174 s (earlier runs not counted)"),
])
def test_one_labelled_wall_clock_in_the_closing_lines_and_the_summary(tmp_path, settings, resumed, label):
    folder, state = make_sweep(tmp_path, **settings)
    add_trial(folder, "a", "completed", [0.9])
    state["wall"] = {"seconds": 174.2, "resumed": resumed}
    report.write_json(str(folder / report.SWEEP_FILE), state)
    summary = report.write(str(folder))
    md = (folder / "summary.md").read_text()
    closing = report.closing_lines(summary, str(folder), None, 174.2)
    assert closing.splitlines()[0] == f"sweep 'demo' done; {label}"
    assert f"\n{label}\n" in md
    assert "Wall time" not in md and " 33 s" not in md          # the budget's Tune time is no second wall clock
    assert "trial-seconds, summed over trials: 5 s" in md


def test_a_summary_without_a_stored_clock_names_no_wall_time(tmp_path):
    """An older sweep, or one whose driver is still running: no wall time rather than a wrong one."""
    folder, _ = make_sweep(tmp_path)
    add_trial(folder, "a", "completed", [0.9])
    report.write(str(folder))
    assert "wall time" not in (folder / "summary.md").read_text()
