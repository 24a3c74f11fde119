"""Sweep summaries, from a results folder written by hand (no Ray, no training)."""
import json

import pytest

from conftest import assert_usage_error, run_main
from rtsearch.search import summary as report
from rtsearch.net.metrics import score


def row(i, acc, macs, params, budget, param_budget=1.0, **extra):
    return {"iteration": i, "accuracy": acc, "macs_ratio": macs, "macs_ratio_p95": macs, "params_ratio": params,
            "score": score(acc, macs, params, budget, param_budget), "feasible": macs <= budget + 0.01,
            "seconds": 10.0 * i, **extra}


def make_sweep(root, budgets=(0.5,), env_runners=0):
    folder = root / "results" / "demo"
    state = {"name": "demo", "command": "python -m rtsearch.tune --budget 0.5", "mlflow_experiment_id": "1",
             "sweeps": {f"{b:g}": {"finished": True, "seconds": 123.0, "parent_run_id": f"p{b:g}"} for b in budgets},
             "settings": {"budgets": list(budgets), "param_budget": None, "dataset": "digits", "model": "small",
                          "space_path": "/x/default.yaml", "space": {"lam": "uniform [0, 1]"}, "num_samples": 3,
                          "max_iterations": 3, "search": "tpe", "seed": 0, "num_env_runners": env_runners,
                          "mlflow_uri": "sqlite:////x/mlruns.db", "fixed_ratios": False}}
    report.write_json(str(folder / report.SWEEP_FILE), state)
    return folder


def add_trial(folder, trial_id, budget, started, rows, status, metrics=None, lam=0.5):
    report.write_trial(str(folder), trial_id, {"trial_id": trial_id, "budget": budget, "config": {"lam": lam},
                                               "status": status, "started": started, "attempts": 1})
    for r in rows:
        report.append_row(str(folder), trial_id, r)
    if metrics is not None:
        report.write_json(str(folder / "trials" / trial_id / "metrics.json"), metrics)


def test_summary_ranks_trials_and_counts_iterations_to_best(tmp_path):
    folder = make_sweep(tmp_path)
    phases = {"seconds_runtime": 3.0, "seconds_static": 1.0, "seconds_finetune": 5.0, "seconds_eval": 1.0}
    # a: started first, completed, best 0.90 at iteration 2
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.80, 0.5, 0.9, 0.5, **phases), row(2, 0.90, 0.5, 0.9, 0.5, **phases),
                                      row(3, 0.8995, 0.5, 0.9, 0.5, **phases)], "completed",
              {"accuracy": 0.88, "macs_ratio": 0.49, "macs_ratio_p95": 0.6, "params_ratio": 0.9, "score": 0.88,
               "feasible": True, "iters_to_best": 2, "seconds": 30.0, "stored_bytes": 100, "mlflow_run_id": "r-a"})
    # b: stopped early by ASHA after 1 iteration
    add_trial(folder, "b", 0.5, 2.0, [row(1, 0.70, 0.5, 0.9, 0.5, **phases)], "stopped", lam=0.1)
    # c: started last, best of all (0.95 at iteration 3), over budget on test
    add_trial(folder, "c", 0.5, 3.0, [row(1, 0.85, 0.5, 0.9, 0.5, **phases), row(2, 0.93, 0.5, 0.9, 0.5, **phases),
                                      row(3, 0.95, 0.5, 0.9, 0.5, **phases)], "completed",
              {"accuracy": 0.94, "macs_ratio": 0.6, "macs_ratio_p95": 0.7, "params_ratio": 0.9, "score": 0.74,
               "feasible": False, "iters_to_best": 3, "seconds": 30.0, "stored_bytes": 100, "mlflow_run_id": "r-c"},
              lam=0.9)
    summary = report.write(str(folder))
    sw = summary["sweeps"]["0.5"]
    assert [t["trial_id"] for t in sw["trials"]] == ["c", "a", "b"]
    assert sw["best"]["trial_id"] == "c" and sw["best_feasible"]["trial_id"] == "a"
    assert sw["sweep_iters_to_best"] == 3 + 1 + 3       # a and b in full, then c up to its best
    assert [t["iters_to_best"] for t in sw["trials"]] == [3, 2, 1]
    assert sw["counts"] == {"completed": 2, "stopped": 1, "error": 0, "running": 0}
    assert sw["phase_seconds"] == {"runtime": 21.0, "static": 7.0, "finetune": 35.0, "eval": 7.0}
    stopped = sw["trials"][2]
    assert stopped["split"] == "validation" and stopped["test_score"] is None
    assert summary["pareto"] == [{"budget": 0.5, "trial_id": "a", "accuracy": 0.88, "macs_ratio": 0.49,
                                  "params_ratio": 0.9, "test_score": 0.88, "score": pytest.approx(0.90),
                                  "config": {"lam": 0.5}}]
    md = (folder / "summary.md").read_text()
    for text in ("**Best config**: trial `c`", "iterations to best for the sweep: 7", "| runtime agent | 21.0 |",
                 "stopped early (ASHA)", "| 0.5 | `a` |", "python -m rtsearch.report results/demo"):
        assert text in md, text
    assert json.loads((folder / "summary.json").read_text())["sweeps"]["0.5"]["best"]["trial_id"] == "c"
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_keeps_the_last_row_of_an_iteration_and_skips_a_cut_line(tmp_path):
    folder = make_sweep(tmp_path)
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.5, 0.5, 1, 0.5), row(2, 0.6, 0.5, 1, 0.5), row(2, 0.7, 0.5, 1, 0.5)],
              "running")
    with open(folder / "trials" / "a" / "history.jsonl", "a") as f:
        f.write('{"iteration": 3, "acc')       # a driver killed mid-write
    assert [r["accuracy"] for r in report.read_history(str(folder), "a")] == [0.5, 0.7]


def test_a_retried_iteration_replaces_its_row_and_every_later_one(tmp_path):
    # Tune retried the trial from a checkpoint older than the rows the driver already wrote (its node died first)
    folder = make_sweep(tmp_path)
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.5, 0.5, 1, 0.5), row(2, 0.6, 0.5, 1, 0.5), row(1, 0.8, 0.5, 1, 0.5)],
              "running")
    lines = (folder / "trials" / "a" / "history.jsonl").read_text().splitlines()
    assert [(json.loads(line)["iteration"], json.loads(line)["accuracy"]) for line in lines] == [(1, 0.8)]
    report.append_row(str(folder), "a", row(2, 0.9, 0.5, 1, 0.5))
    assert [r["accuracy"] for r in report.read_history(str(folder), "a")] == [0.8, 0.9]


def test_lost_trials_are_left_out(tmp_path):
    folder = make_sweep(tmp_path)
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.5, 0.5, 1, 0.5)], "stopped")
    add_trial(folder, "ghost", 0.5, 2.0, [], "running")
    assert report.reconcile(str(folder), 0.5, {"a"}) == 1
    assert [t["trial_id"] for t in report.summarize(str(folder))["sweeps"]["0.5"]["trials"]] == ["a"]


def test_pareto_over_budgets_and_cli_regenerates(tmp_path):
    folder = make_sweep(tmp_path, budgets=(0.3, 0.5), env_runners=2)
    for b, acc in ((0.3, 0.8), (0.5, 0.9)):
        add_trial(folder, f"t{b}", b, b, [row(1, acc, b - 0.01, 1.0, b, seconds_runtime=2.0)], "completed",
                  {"accuracy": acc, "macs_ratio": b - 0.01, "macs_ratio_p95": b, "params_ratio": 1.0, "score": acc,
                   "feasible": True, "iters_to_best": 1, "seconds": 10.0, "stored_bytes": 1})
    result = run_main("rtsearch.report", str(folder))      # in this process: a fresh interpreter adds only start-up
    assert result.returncode == 0, result.stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert [(p["budget"], p["trial_id"]) for p in summary["pareto"]] == [(0.3, "t0.3"), (0.5, "t0.5")]
    assert summary["sweeps"]["0.3"]["phase_cpu_seconds"] == {"runtime": 6.0}     # 1 + 2 env runners
    assert "| 0.3 | `t0.3` |" in (folder / "summary.md").read_text()


def test_report_cli_rejects_a_folder_without_a_sweep(tmp_path):
    assert_usage_error(run_main("rtsearch.report", str(tmp_path)), "sweep.json", "rtsearch.tune")
    assert_usage_error(run_main("rtsearch.report", str(tmp_path / "nope")), "not a folder")


def test_a_tie_on_the_validation_score_goes_to_the_higher_validation_confidence(tmp_path):
    folder = make_sweep(tmp_path)
    test = {"macs_ratio": 0.49, "macs_ratio_p95": 0.5, "params_ratio": 0.9, "feasible": True, "iters_to_best": 1,
            "seconds": 10.0, "stored_bytes": 1}
    # a and b tie on the validation score; b, started later, is more confident where it is right and wins
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.96, 0.5, 0.9, 0.5, correct_confidence=0.90)], "completed",
              {**test, "accuracy": 0.95, "score": 0.95})
    add_trial(folder, "b", 0.5, 2.0, [row(1, 0.80, 0.5, 0.9, 0.5, correct_confidence=0.79),
                                      row(2, 0.96, 0.5, 0.9, 0.5, correct_confidence=0.93)], "completed",
              {**test, "accuracy": 0.97, "score": 0.97})
    add_trial(folder, "c", 0.5, 3.0, [row(1, 0.94, 0.5, 0.9, 0.5, correct_confidence=0.99)], "completed",
              {**test, "accuracy": 0.99, "score": 0.99})
    add_trial(folder, "old", 0.5, 0.5, [row(1, 0.96, 0.5, 0.9, 0.5)], "completed",      # no confidence recorded
              {**test, "accuracy": 0.5, "score": 0.5})
    summary = report.write(str(folder))
    sw = summary["sweeps"]["0.5"]
    assert [t["trial_id"] for t in sw["trials"]] == ["b", "a", "old", "c"]
    assert sw["best"]["trial_id"] == "b" and sw["best"]["tiebreak"] == 0.93
    assert "tied with 2 other trial(s)" in sw["best_chosen_by"]
    assert "0.9300 against 0.9000 (`a`)" in sw["best_chosen_by"]
    assert summary["selection"] == report.SELECTION and "tie" in report.SELECTION
    md = (folder / "summary.md").read_text()
    assert report.SELECTION in md and "Chosen by: highest best validation score (0.9600) among the 4 completed" in md
    # without a tie the summary says so
    for trial_id in ("a", "old"):
        (folder / "trials" / trial_id / "trial.json").unlink()
    assert report.summarize(str(folder))["sweeps"]["0.5"]["best_chosen_by"].endswith(", no tie")


def test_the_best_is_named_by_a_second_look_at_the_top_trials_on_held_out_images(tmp_path):
    folder = make_sweep(tmp_path)

    def completed(trial_id, started, val_acc, held_score):
        add_trial(folder, trial_id, 0.5, started, [row(1, val_acc, 0.5, 0.9, 0.5)], "completed",
                  {"accuracy": 0.9, "macs_ratio": 0.49, "macs_ratio_p95": 0.5, "params_ratio": 0.9, "score": 0.9,
                   "feasible": True, "iters_to_best": 1, "seconds": 10.0, "stored_bytes": 1,
                   "holdout": {"size": 525, "accuracy": held_score, "macs_ratio": 0.5, "score": held_score}})

    completed("a", 1.0, 0.97, 0.940)
    completed("b", 2.0, 0.96, 0.955)       # second on validation, best of the top 3 on held-out images
    completed("c", 3.0, 0.95, 0.950)
    completed("d", 4.0, 0.94, 0.990)       # best held out, but not among the top 3 by validation
    add_trial(folder, "e", 0.5, 5.0, [row(1, 0.99, 0.5, 0.9, 0.5)], "stopped")    # ASHA stopped it: no second look
    sw = report.write(str(folder))["sweeps"]["0.5"]
    assert [t["trial_id"] for t in sw["trials"]] == ["e", "a", "b", "c", "d"]      # the validation order
    assert sw["best"]["trial_id"] == "b" and sw["best_feasible"]["trial_id"] == "b"
    assert sw["best_chosen_by"] == ("highest score on 525 held-out images (0.9550, against 0.9400 (`a`), 0.9500 (`c`)) "
                                    "among the top 3 by validation score of the 4 completed trial(s); it ranked 2 on "
                                    "validation (0.9600)")
    md = (folder / "summary.md").read_text()
    assert "| 3 | `b` | completed | 0.9600 | - | 0.9550 |" in md and "held-out training images" in md
    # a tie held out goes to the better validation rank
    completed("c", 3.0, 0.95, 0.955)
    assert report.summarize(str(folder))["sweeps"]["0.5"]["best"]["trial_id"] == "b"


def test_the_summary_writes_the_mlflow_store_relative_to_the_working_folder(tmp_path):
    folder = make_sweep(tmp_path)
    state = json.loads((folder / report.SWEEP_FILE).read_text())
    state["settings"]["mlflow_uri"] = f"sqlite:///{tmp_path}/mlruns.db"       # what trials use: absolute
    report.write_json(str(folder / report.SWEEP_FILE), state)
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.9, 0.5, 0.9, 0.5)], "stopped")
    summary = report.write(str(folder))
    assert summary["mlflow_uri"] == summary["settings"]["mlflow_uri"] == "sqlite:///mlruns.db"
    written = (folder / "summary.md").read_text() + (folder / "summary.json").read_text()
    assert "`sqlite:///mlruns.db`" in written and f"sqlite:///{tmp_path}" not in written
    lines = report.closing_lines(summary, str(folder), summary["mlflow_uri"], 1.0)
    assert "mlflow ui --backend-store-uri sqlite:///mlruns.db" in lines and str(tmp_path) + "/mlruns" not in lines
    # as the user gave it, when the sweep stored that
    state["settings"]["mlflow_uri_shown"] = "sqlite:///./store/../mlruns.db"
    report.write_json(str(folder / report.SWEEP_FILE), state)
    assert report.summarize(str(folder))["mlflow_uri"] == "sqlite:///./store/../mlruns.db"


def test_the_best_trial_is_set_against_the_static_only_baseline(tmp_path):
    """A stored baseline puts one sentence in the summary and the closing lines: its test accuracy and
    the best completed trial's gain over it, called within noise unless it exceeds two binomial standard errors."""
    from rtsearch.search import sweep_baseline as baseline
    folder = make_sweep(tmp_path)
    metrics = {"accuracy": 0.90, "macs_ratio": 0.49, "macs_ratio_p95": 0.6, "params_ratio": 0.9, "score": 0.90,
               "feasible": True, "iters_to_best": 2, "seconds": 30.0, "stored_bytes": 100, "mlflow_run_id": "r-a"}
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.91, 0.5, 0.9, 0.5)], "completed", metrics)
    assert report.write(str(folder))["sweeps"]["0.5"]["baseline"] is None      # none stored: no sentence
    record = {"accuracy": 0.92, "macs_ratio": 0.48, "params_ratio": 0.45, "score": 0.92, "feasible": True,
              "budget": 0.5, "epochs": 5, "test_images": 1000, "seconds": 9.0, "run_dir": "/x",
              "command": "python -m rtsearch.train ..."}
    report.write_json(baseline.path(str(folder), 0.5), record)
    summary = report.write(str(folder))
    assert summary["sweeps"]["0.5"]["best_minus_baseline"] == pytest.approx(-0.02)
    text = ("test accuracy 0.9200 at MACs ratio 0.4800, params ratio 0.4500; best config minus it: -0.0200 test "
            "accuracy, within noise (one seed, 5 fine-tuning epochs each; one standard error of the difference on "
            "1000 test images: 0.0128)")
    assert text in (folder / "summary.md").read_text()
    assert text in report.closing_lines(summary, str(folder), None, 1.0)
    report.write_json(baseline.path(str(folder), 0.5), {**record, "accuracy": 0.85})      # more than 2 errors apart
    assert "+0.0500 test accuracy, better (" in report.markdown(report.summarize(str(folder)))


@pytest.mark.study
def test_baselines_study_reads_the_comparison_back_from_the_sweeps(tmp_path):
    from experiments import baselines_study as study
    from rtsearch.search import sweep_baseline as baseline
    folder = make_sweep(tmp_path)
    metrics = {"accuracy": 0.95, "macs_ratio": 0.49, "macs_ratio_p95": 0.6, "params_ratio": 0.9, "score": 0.95,
               "feasible": True, "iters_to_best": 1, "seconds": 30.0, "stored_bytes": 100, "mlflow_run_id": "r-a"}
    add_trial(folder, "a", 0.5, 1.0, [row(1, 0.95, 0.5, 0.9, 0.5)], "completed", metrics)
    report.write_json(baseline.path(str(folder), 0.5), {
        "accuracy": 0.90, "macs_ratio": 0.48, "params_ratio": 0.45, "score": 0.90, "feasible": True, "budget": 0.5,
        "epochs": 5, "test_images": 1000, "seconds": 9.0, "run_dir": "/x", "command": "python -m rtsearch.train"})
    report.write(str(folder))
    out = tmp_path / "make-run.md"
    assert study.main([str(folder), "--report", str(out)]) == 0
    assert ("| `demo` | both agents | 0.5 | 0 | `a` | 0.9500 | 0.4900 | 0.9000 | 0.4800 | +0.0500 | 0.0117 "
            "| better | 123 s |") in out.read_text()
    assert study.main([str(tmp_path), "--report", str(out)]) == 2       # not a sweep folder


def test_the_parameter_budget_is_named_as_the_sweep_set_it():
    from rtsearch.search.summary import parameter_budget_text
    assert parameter_budget_text({"param_budget": 0.6, "method": "ladder", "space": {}}) == "parameter budget 0.6"
    assert parameter_budget_text({"param_budget": None, "method": "ladder", "space": {"lr_rerun": "..."}}) \
        .startswith("parameter budget 1 (")
    assert parameter_budget_text({"param_budget": None, "method": "ladder", "space": {"param_budget": "..."}}) \
        == "parameter budget searched"
    assert parameter_budget_text({"param_budget": None, "method": "both", "space": {"param_budget": "..."}}) \
        == "parameter budget searched"
