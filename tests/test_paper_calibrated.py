"""experiments.paper_calibrated's page from made-up figures (no deployed model loaded): its table, its reading per
budget, what it lists as missing, its refusals."""
import pytest

from experiments import paper_calibrated as calibrated

pytestmark = pytest.mark.study


def row(seed, trained, after, uniform, macs_after=0.255, budget=0.255, model="small"):
    figures = lambda acc, macs: {"accuracy": acc, "macs_ratio": macs}      # noqa: E731
    return {"model": model, "budget": budget, "seed": seed, "run": f"runs/p/paper-{budget:g}-s{seed}",
            "metrics": figures(trained, 0.22), "shift": 0.05, "trained": figures(trained, 0.22),
            "val": figures(after, 0.2549), "test": figures(after, macs_after), "seconds": 3.0,
            "uniform at the budget": uniform, "Torch-Pruning L1 at the budget": None}


def test_the_page_reads_each_budget_against_the_run_as_trained_and_its_peers():
    rows = [row(0, 0.95, 0.85, 0.97), row(1, 0.94, 0.86, 0.96), row(2, 0.95, 0.84, 0.97, macs_after=0.27),
            {"model": "small", "budget": 0.15, "seed": 0, "run": "runs/p/paper-0.15-s0", "metrics": None}]
    page = calibrated.page(rows, "python -m experiments.paper_calibrated")
    assert ("| small | 0.255 | 0 | `runs/p/paper-0.255-s0` | +0.0500 | 0.2549 | 0.2200 → 0.2550 | 0.9500 → 0.8500 | "
            "yes | 0.9700 |  |") in page
    assert "| small | 0.15 | 0 | `runs/p/paper-0.15-s0` | missing |" in page
    line = [x for x in page.splitlines() if x.startswith("- small, budget 0.255: ")][0]
    assert "test MACs 0.2550 to 0.2700 (2 of 3 within 0.01 of the budget), accuracy 0.8500 ± 0.0100" in line
    assert "-0.0967 against as trained (0.9467 ± 0.0058; lower beyond" in line
    assert "against uniform at the budget (0.9667 ± 0.0058; lower beyond" in line
    assert "Torch-Pruning L1" not in line                   # no peer run there: no comparison
    assert "- small, budget 0.15" not in page               # one seed or none: no reading


@pytest.mark.parametrize("text", ["resnet56:runs/x", "small", "small:", ","])
def test_a_runs_list_that_names_no_backbone_and_folder_is_refused_with_exit_2(text, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        calibrated.main(["--runs", text, "--out", str(tmp_path / "page.md")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "--runs" in err[0] and not (tmp_path / "page.md").exists()


def test_a_folder_that_does_not_exist_is_refused_before_any_model_is_loaded(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        calibrated.main(["--runs", f"small:{tmp_path / 'none'}", "--out", str(tmp_path / "page.md")])
    assert stop.value.code == 2 and "no such folder" in capsys.readouterr().err
