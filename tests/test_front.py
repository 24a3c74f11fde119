"""The front in one sweep (`rtsearch.tune --front LO:HI`): the non-dominated set, the searched budgets, the
multi-objective sampler fed by the trials' final reports, the refusals, and one tiny sweep end to end."""
import json

import pytest

from conftest import assert_usage_error, kill_9_after_a_trial_ends, ok, tune, tune_refused
from rtsearch.search import front
from test_tune import check_children, history_lines, mlflow_runs


def point(name, accuracy, latency, size, status="completed", budget=0.1, macs=None):
    return {"trial_id": name, "status": status, "val_accuracy": accuracy, "accuracy": accuracy, "latency_ms": latency,
            "stored_bytes": size, "config": {"budget": budget}, "macs_ratio": budget if macs is None else macs,
            "params_ratio": 0.5, "feasible": macs is None or macs <= budget + 0.01}


def test_non_dominated_keeps_exactly_the_points_no_other_beats_on_every_objective():
    pts = [point("a", 0.90, 1.0, 100), point("b", 0.95, 2.0, 100), point("c", 0.89, 1.5, 120),   # c: a beats it
           point("d", 0.95, 2.0, 90), point("e", 0.80, 0.5, 300), point("f", 0.80, 0.5, 300)]    # e, f: equal
    kept = {p["trial_id"] for p in front.non_dominated(pts, ["accuracy", "latency", "bytes"])}
    assert kept == {"a", "d", "e", "f"}          # b: d is as accurate and as fast, and smaller
    # on accuracy and latency alone, b and d tie and both stay; e and f are the fastest
    assert {p["trial_id"] for p in front.non_dominated(pts, ["accuracy", "latency"])} == {"a", "b", "d", "e", "f"}
    # on accuracy and bytes alone, latency counts for nothing: d is the most accurate and the smallest but one ...
    assert {p["trial_id"] for p in front.non_dominated(pts, ["accuracy", "bytes"])} == {"d"}
    pts.append(point("h", 0.5, 9.0, 50))        # ... and a smaller point, however bad, joins it
    assert {p["trial_id"] for p in front.non_dominated(pts, ["accuracy", "bytes"])} == {"d", "h"}


def test_the_front_is_taken_among_completed_trials_with_every_figure_and_each_member_aliased_by_budget():
    trials = [point("a", 0.90, 1.0, 100, budget=0.05), point("b", 0.99, 0.1, 10, status="stopped"),
              point("c", 0.95, 2.0, 200, budget=0.1), point("d", 0.93, None, 10),
              point("e", 0.94, 3.0, 300, budget=0.1), point("g", 0.96, 4.0, 250, budget=0.1)]
    members = front.members(trials, ["accuracy", "latency", "bytes"])
    assert [m["trial_id"] for m in members] == ["g", "c", "a"]      # b stopped, d untimed, e beaten by c
    assert front.aliases(members) == {"g": "front-0_1", "c": "front-0_1-2", "a": "front-0_05"}


def test_a_member_that_misses_its_budget_on_test_is_listed_but_gets_no_alias(tmp_path):
    settings = {"front": {"span": [0.05, 0.1], "grid": [0.05, 0.06, 0.08, 0.1], "objectives": ["accuracy", "latency"]},
                "param_budget": None}
    trials = [point("a", 0.97, 3.0, 100, budget=0.1, macs=0.13), point("b", 0.95, 2.0, 100, budget=0.1),
              point("c", 0.90, 1.0, 100, budget=0.05)]
    summary = front.summarize(str(tmp_path), settings, trials)
    by_id = {m["trial_id"]: m for m in summary["members"]}
    assert list(by_id) == ["a", "b", "c"] and summary["reference"] == []
    assert by_id["a"]["alias"] is None and "MACs 0.130 > 0.1 + 0.01" in by_id["a"]["refused"]
    assert (by_id["b"]["alias"], by_id["c"]["alias"]) == ("front-0_1", "front-0_05")      # b is the first at 0.1
    assert "| not registered: misses its budget on test |" in "\n".join(front.markdown_lines(summary))


def test_a_front_on_accuracy_and_bytes_needs_no_timing_and_still_plots(tmp_path):
    settings = {"front": {"span": [0.05, 0.1], "grid": [0.05, 0.1], "objectives": ["accuracy", "bytes"]},
                "param_budget": None}
    trials = [point("a", 0.97, None, 200, budget=0.1), point("b", 0.95, 2.0, 100, budget=0.05),
              point("c", 0.94, 1.0, 150, budget=0.05)]
    summary = front.summarize(str(tmp_path), settings, trials)
    assert [m["trial_id"] for m in summary["members"]] == ["a", "b"]       # c: b is more accurate and smaller
    front.plot(summary, trials, "x", str(tmp_path / "front.png"))
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_the_searched_budgets_are_readable_values_that_share_the_ladders_rungs():
    from rtsearch.methods.ladder import rung_budgets
    grid = front.budget_grid(0.03, 0.3)
    assert grid == [0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3]
    rungs = [set(rung_budgets(b)) for b in grid]
    assert len(set().union(*rungs)) < 0.5 * sum(len(r) for r in rungs)    # most rungs serve several budgets
    from rtsearch.bench_pareto import KINDS
    bench = KINDS[front.REFERENCE_KIND][1]
    assert front.reference_budgets(0.03, 0.3, bench) == [0.03, 0.05, 0.08, 0.15, 0.3]
    assert front.reference_budgets(0.04, 0.2, bench) == [0.03, 0.05, 0.08, 0.15, 0.3]     # spans the front's ends


def test_the_multi_objective_sampler_reads_each_objective_from_a_trials_final_report():
    from ray import tune

    from rtsearch.search.driver import make_searcher
    searcher = make_searcher("tpe", 0, 4, objectives=["accuracy", "latency", "bytes"])
    assert searcher.set_search_properties(None, None, {"budget": tune.choice([0.05, 0.1]),
                                                       "lr_rerun": tune.loguniform(1e-4, 1e-3)})
    config = searcher.suggest("t1")
    assert config["budget"] in (0.05, 0.1)
    searcher.on_trial_complete("t1", {"accuracy": 0.9, "macs_ratio": 0.1, "params_ratio": 0.3, "score": 0.9})
    study = searcher._ot_study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.trials[0].values == [0.9, 0.1, 0.3]


@pytest.mark.parametrize("args, words", [
    (["--front", "0.03:0.3", "--budget", "0.5"], ["--budget or --front", "not both"]),
    (["--front", "0.03:0.3", "--budget-range", "0.1:0.2", "--method", "both"], ["--front", "--budget-range"]),
    (["--front", "0.3:0.03"], ["--front 0.3:0.03", "inverted"]),
    (["--front", "0.03"], ["--front", "LO:HI"]),
    (["--front", "0:0.3"], ["--front 0:0.3", "(0, 1]"]),
    (["--front", "0.031:0.032"], ["--front 0.031:0.032", "widen"]),
    (["--front", "0.03:0.3", "--objectives", "accuracy,speed"], ["unknown objective 'speed'", "latency"]),
    (["--front", "0.03:0.3", "--objectives", "latency,bytes"], ["--objectives", "accuracy"]),
    (["--front", "0.03:0.3", "--objectives", "accuracy"], ["--objectives", "a cost"]),
    (["--front", "0.03:0.3", "--objectives", "accuracy,bytes,bytes"], ["twice"]),
    (["--budget", "0.5", "--objectives", "accuracy,latency"], ["--objectives", "--front LO:HI"]),
])
def test_bad_front_flags_exit_2_with_one_line(args, words, tmp_path, monkeypatch):
    assert_usage_error(tune_refused(monkeypatch, tmp_path, None, *args), *words)
    assert not (tmp_path / "runs").exists()


def beaten(p, q) -> bool:
    """q at least as good as p on validation accuracy, latency and bytes, and better on one."""
    ge = (q["val_accuracy"] >= p["val_accuracy"] and q["latency_ms"] <= p["latency_ms"]
          and q["stored_bytes"] <= p["stored_bytes"])
    gt = (q["val_accuracy"] > p["val_accuracy"] or q["latency_ms"] < p["latency_ms"]
          or q["stored_bytes"] < p["stored_bytes"])
    return ge and gt


@pytest.mark.slow
def test_a_trial_whose_final_checkpoint_the_killed_driver_never_recorded_is_timed_from_its_tune_folder(tmp_path):
    """The newest checkpoint folder holding the finished run's metrics.json, not a later or earlier partial one."""
    from rtsearch import storage
    trial = tmp_path / "trial_x"
    for name, finished in (("checkpoint_000000", False), ("checkpoint_000001", True), ("checkpoint_000002", False)):
        (trial / name).mkdir(parents=True)
        (trial / name / ("metrics.json" if finished else "trial_state.json")).write_text("{}")
    found = storage.latest_checkpoint(str(trial), "metrics.json")
    assert found is not None and found.path.endswith("checkpoint_000001")
    assert storage.latest_checkpoint(str(tmp_path / "absent"), "metrics.json") is None


def test_a_front_sweep_returns_its_front_plots_it_beside_torch_pruning_and_registers_each_member(tmp_path):
    """Digits, uniform ratios (no agents), three trials of one iteration, the sweep killed -9 once a trial has ended
    and resumed: no trial lost or run again, its history and MLflow run as they were; every completed trial is timed,
    the front listed is exactly the non-dominated set of the timed trials, Torch-Pruning L1's runs stand beside it in
    the picture, and every member is registered under the alias of its budget."""
    from mlflow.tracking import MlflowClient
    args = ["--dataset", "digits", "--model", "small", "--method", "both", "--fixed-ratios", "--dense-epochs", "1",
            "--max-iterations", "1", "--num-cpus", "2", "--num-samples", "3", "--param-budget", "1",
            "--front", "0.3:0.5"]
    cache, results = str(tmp_path / "cache"), tmp_path / "runs" / "sweeps" / "front"
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    finished = kill_9_after_a_trial_ends(tmp_path, cache, "front", *args)
    lines_before = {t: history_lines(str(results), t) for t in finished}
    assert not (results / "summary.json").exists()      # killed before its end
    out = ok(tune(tmp_path, cache, "--name", "front", "--resume"))
    assert "resuming sweep 'front'" in out
    summary = json.loads((results / "summary.json").read_text())
    trials = summary["sweeps"]["0.5"]["trials"]
    assert len(trials) == 3 and all(t["status"] == "completed" for t in trials), trials
    by_id = {t["trial_id"]: t for t in trials}
    for trial_id, before in finished.items():      # a trial that had ended is neither lost nor run again
        assert by_id[trial_id]["status"] == before["status"]
        assert by_id[trial_id]["attempts"] == before["attempts"] == 1
        assert history_lines(str(results), trial_id) == lines_before[trial_id]
    parents, children = mlflow_runs(uri, "front")
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    children = children[children["tags.rtsearch.trial_id"].isin(list(by_id))]
    assert sorted(children["tags.rtsearch.trial_id"]) == sorted(by_id)
    check_children(uri, parents, children, str(results))
    assert all(t["config"]["budget"] in (0.3, 0.4, 0.5) and t["latency_ms"] > 0 for t in trials)
    members = summary["front"]["members"]
    ids = {m["trial_id"] for m in members}
    assert members and all(not any(beaten(m, t) for t in trials) for m in members)       # non-dominated ...
    assert all(any(beaten(t, o) for o in trials) for t in trials if t["trial_id"] not in ids)   # ... and all of them
    for t in trials:        # the sampler read the best iteration's validation figures from the final report
        rows = [json.loads(line) for line in open(tmp_path / "runs" / "tune" / "front-b0.5" /
                                                  f"trial_{t['trial_id']}" / "result.json")]
        assert rows[-1]["final"] and rows[-1]["accuracy"] == t["val_accuracy"], rows[-1]
    reference = summary["front"]["reference"]
    assert [r["budget"] for r in reference] == [0.3, 0.5] and all(r["median_ms"] > 0 for r in reference)
    assert (results / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (results / "summary.md").read_text()
    assert "## Front" in md and "![test accuracy against deployed latency" in md
    assert all(f"| `{m['trial_id']}` |" in md.split("## Front")[1] for m in members)
    client = MlflowClient(uri)
    for m in members:
        assert m["refused"] is None, m          # uniform ratios meet their budget exactly: every member registered
        assert m["alias"].startswith(f"front-{m['config']['budget']:g}".replace(".", "_"))
        version = client.get_model_version_by_alias("rtsearch-digits-small-both-fixed", m["alias"])
        assert version.tags["rtsearch.trial_id"] == m["trial_id"]
        assert f"@{m['alias']} (trial {m['trial_id']})" in out
