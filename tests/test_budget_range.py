"""One runtime agent for a range of budgets (`--budget-range`), chosen at export time (`--budget`)."""
import json

import pytest
import torch

from conftest import assert_usage_error, check_deployed_model_scores_as_the_run, run_main
from rtsearch import data
from rtsearch.config import EXPLORE_STD, RANGE_EXPLORE_STD, RunConfig
from rtsearch.rl import budgets


@pytest.mark.parametrize("args, words", [
    (["--budget-range", "0:0.5"], ["--budget-range", "(0, 1]"]),
    (["--budget-range", "0.1:1.5"], ["--budget-range", "(0, 1]"]),
    (["--budget-range", "0.5:0.1"], ["--budget-range", "inverted"]),
    (["--budget-range", "0.2"], ["--budget-range", "LO:HI"]),
    (["--budget-range", "0.1:0.5", "--budget", "0.3"], ["--budget-range", "not both"]),
    (["--budget-range", "0.1:0.5", "--fixed-ratios", "--method", "both"], ["--budget-range", "--fixed-ratios"]),
    (["--budget-range", "0.1:0.5"], ["--budget-range", "default method, ladder", "--method both"]),
])
def test_bad_ranges_exit_2_with_one_line(args, words):
    assert_usage_error(run_main("rtsearch.train", "--dataset", "digits", *args), *words)


def test_evaluation_budgets_and_interpolation():
    points = budgets.evaluation_budgets(0.05, 0.5)
    assert points[0] == pytest.approx(0.05) and points[-1] == pytest.approx(0.5) and len(points) == budgets.POINTS
    assert points[1] / points[0] == pytest.approx(points[2] / points[1])        # geometric
    assert budgets.at(points[1], points, [0, 1, 2, 3]) == pytest.approx(1.0)
    assert budgets.at(0.01, points, [0, 1, 2, 3]) == 0.0 and budgets.at(1.0, points, [0, 1, 2, 3]) == 3.0


def test_a_range_run_explores_less_around_its_drawn_budgets_unless_told():
    assert RunConfig(budget_range=[0.05, 0.5]).explore_std == RANGE_EXPLORE_STD < EXPLORE_STD
    assert RunConfig(budget=0.08).explore_std == EXPLORE_STD
    assert RunConfig(budget_range=[0.05, 0.5], explore_std=0.2).explore_std == 0.2


@pytest.fixture(scope="module")
def range_run(tmp_path_factory):
    """One range run, shared by the product's checks and the studies' (experiments/) measurements of it."""
    out = tmp_path_factory.mktemp("range") / "run"
    assert run_main("rtsearch.train", "--dataset", "digits", "--budget-range", "0.2:0.6", "--method", "both",
                    "--iterations", "2",
                    "--out", str(out)).returncode == 0
    return out


def export_at(run, budget: str, model_path) -> dict:
    """`rtsearch.export --budget` of the run's best.pt: the printed test accuracy and MACs ratio."""
    result = run_main("rtsearch.export", "--checkpoint", str(run / "best.pt"), "--budget", budget,
                      "--out", str(model_path))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    printed = {k: float(line.split(k + " ")[1].split(",")[0].split(" ")[0]) for k in ("test accuracy", "MACs ratio")}
    assert abs(printed["MACs ratio"] - float(budget)) <= 0.01, line
    return printed


@pytest.mark.slow
def test_one_model_serves_every_budget_in_its_range(range_run, tmp_path):
    out = range_run
    metrics = json.loads((out / "metrics.json").read_text())
    curve = metrics["curve"]
    assert metrics["config"]["finetune"] == "sandwich"     # a range run fine-tunes over its ends by default
    assert metrics["config"]["explore_std"] == RANGE_EXPLORE_STD
    assert [p["budget"] for p in curve] == pytest.approx(budgets.evaluation_budgets(0.2, 0.6))
    for point in curve:        # test MACs on each budget, one calibration shift per budget
        assert abs(point["macs_ratio"] - point["budget"]) <= 0.01, curve
    assert metrics["curve_score"] == pytest.approx(sum(p["score"] for p in curve) / len(curve))
    assert len(set(metrics["shifts"])) == len(curve) and len(metrics["betas"]) == len(curve)
    assert metrics["macs_ratio"] == pytest.approx(curve[-1]["macs_ratio"])   # top level: the range's top
    check_deployed_model_scores_as_the_run(out)
    # any budget in the range at export, no retraining: on budget, and the file predicts what was printed
    model_path = tmp_path / "at-0.3.pt"
    printed = export_at(out, "0.3", model_path)
    model = torch.load(model_path, weights_only=False)
    x, y = data.load("digits", 0).test
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy == pytest.approx(printed["test accuracy"], abs=1e-3)
    for budget in ("0.7", "0.1"):          # outside the trained range
        assert_usage_error(run_main("rtsearch.export", "--checkpoint", str(out / "best.pt"), "--budget", budget,
                                    "--out", str(tmp_path / "x.pt")), "--budget", "outside the range 0.2:0.6")
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.study
def test_the_studies_measure_a_range_run_at_a_budget_in_its_range(range_run, tmp_path):
    from experiments import allocation, robust
    out = range_run
    printed = export_at(out, "0.3", tmp_path / "at-0.3.pt")
    # the same network without its agents (uniform) and the per-input oracle bound (experiments.robust)
    measured = robust.measure(str(out / "best.pt"), 0.3)
    assert measured["learned"]["accuracy"] == pytest.approx(printed["test accuracy"], abs=1e-3)
    assert measured["uniform"]["macs_ratio"] <= 0.3 and measured["oracle"]["macs_ratio"] <= 0.3 + 1e-9
    within = [level["accuracy"] for level in measured["oracle"]["levels"] if level["macs_ratio"] <= 0.3]
    assert measured["oracle"]["accuracy"] >= max(within)      # it may choose one level for every input
    # random per-layer allocations on the same network (experiments.allocation): each within the budget
    searched = allocation.search(str(out / "best.pt"), 0.3, samples=2)
    assert searched["uniform"]["test"]["accuracy"] == pytest.approx(measured["uniform"]["accuracy"])
    assert len(searched["val_accuracies"]) == 2
    assert searched["best"]["val"]["accuracy"] == max(searched["val_accuracies"])
    assert searched["best"]["test"]["macs_ratio"] <= 0.3 + 1e-9
