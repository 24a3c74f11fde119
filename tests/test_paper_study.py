"""The study behind results/paper.md (experiments.paper_study): its refusals, and its page written from made-up
metrics.json files (no training)."""
import json
import os

import numpy as np
import pytest

from experiments import paper_study as study

pytestmark = pytest.mark.study

BUDGET = 0.255
# per kind: accuracy per seed 0, 1, 2, MACs ratio, per-input MACs std, params ratio
MADE_UP = {study.PAPER: ([0.952, 0.948, 0.950], 0.178, 0.0, 1.0),
           study.BOTH: ([0.964, 0.962, 0.966], 0.255, 0.0014, 1.0),
           study.LADDER: ([0.970, 0.972, 0.968], 0.250, 0.2, 0.61),
           study.STATIC: ([0.960, 0.958, 0.962], 0.252, 0.0, 0.45),
           study.UNIFORM: ([0.967, 0.969, 0.965], 0.249, 0.0, 0.4916),
           study.TP_L1: ([0.951, 0.953, 0.949], 0.249, 0.0, 0.4916),
           study.SPENT: ([0.969, 0.966, 0.968], 0.173, 0.0, 0.4087)}


@pytest.mark.parametrize("argv", [["--seeds", "0,x"], ["--seeds", "0,0"], ["--seeds", "-1"], ["--seeds", ""],
                                  ["--budget", "0"], ["--budget", "1.5"], ["--budget", "nan"], ["--budget", "abc"],
                                  ["--jobs", "0"], ["--reuse", "no/such/run"]])
def test_bad_input_is_refused_with_one_line_and_exit_2(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        study.main([*argv, "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "paper.md")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("experiments.paper_study: error: ")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "paper.md").exists()


def test_the_plan_names_every_peer_through_the_real_command_line():
    runs = study.plan("runs/p", [0, 1], BUDGET)
    assert len(runs) == 12 and len({r["out"] for r in runs}) == 12
    assert runs[0]["command"] == ("python -m rtsearch.train --method paper --dataset mnist5k --model small "
                                  "--budget 0.255 --seed 0 --out runs/p/paper-0.255-s0")
    tp = [r for r in runs if r["kind"] == study.TP_L1][0]["args"]
    assert {"--fixed-ratios", "--torch-pruning-l1", "static-only"} <= set(tp)
    learned = [r for r in runs if r["kind"] == study.STATIC][0]["args"]
    assert "static-only" in learned and "--fixed-ratios" not in learned
    assert [r for r in runs if r["kind"] == study.LADDER][0]["args"][:2] == ["--method", "ladder"]
    paper = {"best_iteration": 2, "history": [{"iteration": 1, "macs_ratio": 0.2127}, {"iteration": 2,
                                                                                         "macs_ratio": 0.17781}]}
    assert study.spent_budget(paper) == 0.178          # validation at the best outer epoch, not test


def test_a_recorded_configuration_matches_on_the_fields_both_hold():
    wanted = {"method": "paper", "budget": 0.255, "seed": 0, "new_field": 3}
    assert study.same_run({"method": "paper", "budget": 0.255, "seed": 0, "out": "elsewhere"}, wanted)
    assert not study.same_run({"method": "paper", "budget": 0.255, "seed": 1}, wanted)


def write_run(run: dict, accuracy: float, macs: float, std: float, params: float, wall: str | None) -> None:
    os.makedirs(run["out"], exist_ok=True)
    metrics = {"accuracy": accuracy, "macs_ratio": macs, "macs_ratio_std": std, "params_ratio": params,
               "dense_accuracy": 0.974, "seconds": 100.0, "feasible": True, "best_iteration": 1,
               "history": [{"iteration": 1, "macs_ratio": macs}],
               "config": {"method": run["args"][1], "budget": run["budget"], "seed": run["seed"]}}
    if run["kind"] == study.PAPER:
        metrics["static_params_ratio"] = 0.172
    with open(os.path.join(run["out"], "metrics.json"), "w") as f:
        json.dump(metrics, f)
    if wall == "log":
        with open(os.path.join(run["out"], "train.log"), "w") as f:
            f.write("iter 1/1\ndone; wall time of this run: 550 s. Test accuracy 0.9520\n")
    elif wall == "study":
        with open(os.path.join(run["out"], "study.json"), "w") as f:
            json.dump({"seconds": 61.0}, f)


def test_the_page_holds_every_figure_the_means_the_reading_and_what_is_missing(tmp_path):
    root = str(tmp_path / "runs")
    runs = study.plan(root, [0, 1, 2], BUDGET) + [study.planned(root, study.SPENT, s, 0.173) for s in (0, 1, 2)]
    for run in runs:
        accuracies, macs, std, params = MADE_UP[run["kind"]]
        if run["kind"] == study.TP_L1 and run["seed"] == 2:
            continue                                    # not finished
        write_run(run, accuracies[run["seed"]], macs, std, params,
                  "log" if run["kind"] == study.PAPER else "study" if run["seed"] == 1 else None)
    out = tmp_path / "paper.md"
    study.report(runs, BUDGET, "python -m experiments.paper_study --seeds 0,1,2", str(out))
    page = out.read_text()
    assert "python -m experiments.paper_study --seeds 0,1,2" in page
    assert "| paper | 3 | 0.9500 ± 0.0020 | 0.1780 ± 0.0000 | 0.0000 | 1.0000 ± 0.0000 | 0.1720 ± 0.0000 | " \
           "9 min 10 s |" in page
    assert "| Torch-Pruning L1 at the budget | 2 | 0.9520 ± 0.0014 |" in page
    assert "**Missing (not finished when this page was written):** Torch-Pruning L1 at the budget, seed 2" in page
    assert "| 1 | both | 0.255 | 0.9620 | 0.2550 | 0.0014 | 1.0000 |  | 1 min 1 s † | 100 |" in page
    assert "| 0 | uniform at the MACs paper spent | 0.173 | 0.9690 |" in page
    # paper - both: -0.012, -0.014, -0.016 against a spread of 0.002: more than the seed spread
    assert "- `paper` - `both`, test accuracy per seed (0, 1, 2): -0.012, -0.014, -0.016; mean -0.0140" in page
    assert "less accurate by more than the seed spread" in page
    # paper - Torch-Pruning L1 on the seeds both finished: +0.001, -0.005 against a spread of 0.0028
    assert "Torch-Pruning L1 at the budget, test accuracy per seed (0, 1): +0.001, -0.005; mean -0.0020" in page
    assert "within the seed spread" in page
    assert "within the budget 0.255 on test in 3 of 3 seeds" in page
    assert "dense test accuracy by seed: 0.9740 (seed 0), 0.9740 (seed 1), 0.9740 (seed 2)" in page
    assert "per-input MACs standard deviation per seed is 0.0000, 0.0000, 0.0000" in page
    assert "not a runtime policy" in page and "are in results/paper.md, at budget 0.255 on the same seeds " \
        "(`--ablation`)" in page and "## The ablation" not in page
    assert "- Seed spread: the largest seed-to-seed standard deviation of test accuracy is" in page
    assert "- `both` - uniform at the budget, test accuracy per seed (0, 1, 2): -0.003, -0.007, +0.001" in page
    assert "- `paper` - `ladder`, test accuracy per seed (0, 1, 2): -0.018, -0.024, -0.018; mean -0.0200" in page
    assert "- learned static-only - Torch-Pruning L1 at the budget, test accuracy per seed (0, 1): +0.009, +0.005" \
        in page
    assert "`ladder` stores 0.6100; learned static-only stores 0.4500; Torch-Pruning L1" in page
    assert np.isclose(study.wall_seconds(runs[0]["out"])[0], 550.0)


def test_a_missing_paper_run_leaves_its_spent_peer_unplanned(tmp_path):
    root = str(tmp_path / "runs")
    runs = study.execute_all(study.plan(root, [0], BUDGET)[:1], root, 1, [], train=False)
    assert [r["kind"] for r in runs] == [study.PAPER, study.SPENT] and runs[1]["out"] is None
    study.report(runs, BUDGET, "cmd", str(tmp_path / "paper.md"))
    assert "uniform at the MACs paper spent, seed 0 (planned once its `paper` run finishes)" in \
        (tmp_path / "paper.md").read_text()


def test_the_ablation_swaps_one_setting_per_run_and_gives_a_verdict_per_swap(tmp_path):
    """experiments.paper_ablation: each swapped run is `paper` plus one flag, reuses the study's `paper` folders,
    and its page reads each swap against `paper` seed by seed."""
    from experiments import paper_ablation as ablation
    root = str(tmp_path / "runs")
    runs = ablation.plan(root, [0, 1, 2], BUDGET)
    commands = {r["kind"]: r["command"] for r in runs if r["seed"] == 0}
    assert commands[ablation.PAPER] == study.planned(root, study.PAPER, 0, BUDGET)["command"]
    assert commands[ablation.NO_MEMORY].replace(" --no-paper-recurrent", "") == commands[ablation.PAPER] \
        .replace("/paper-0.255", "/paper-nolstm-0.255")
    assert "--paper-budget mean" in commands[ablation.MEAN_BUDGET]
    assert "--paper-static-budget 0.78" in commands[ablation.STATIC_BUDGET]
    assert "--paper-reward lagrangian" in commands[ablation.REWARD]
    assert "--paper-epochs 10 --paper-rl-epochs 1 --paper-backbone-epochs 1" in commands[ablation.SCHEDULE]
    assert "--paper-pruner nested" in commands[ablation.PRUNER]
    assert "--paper-pruner nested --paper-static-budget 0.78" in commands[ablation.NESTED_STATIC]
    assert len({r["out"] for r in runs}) == len(runs) == 3 * len(ablation.KINDS)       # one folder per run
    accuracy = {ablation.PAPER: [0.95, 0.94, 0.96], ablation.NO_MEMORY: [0.951, 0.939, 0.962],
                ablation.MEAN_BUDGET: [0.90, 0.89, 0.91], ablation.STATIC_BUDGET: [0.97, 0.96, 0.98],
                ablation.REWARD: [0.96, 0.95, 0.97], ablation.SCHEDULE: [0.93, 0.95, 0.97],
                ablation.PRUNER: [0.94, 0.93, 0.95], ablation.NESTED_STATIC: [0.95, 0.94, 0.96]}
    for run in runs:
        if run["kind"] == ablation.MEAN_BUDGET and run["seed"] == 2:
            continue                                    # not finished
        write_run({**run, "args": ["--method", "paper"]}, accuracy[run["kind"]][run["seed"]], 0.2, 0.001, 1.0, None)
    out = tmp_path / "ablation.md"
    ablation.report(runs, BUDGET, "python -m experiments.paper_ablation", str(out))
    page = out.read_text()
    assert "| paper, no memory across layers | 3 | 0.9507 ± 0.0115 | 0.2000 ± 0.0000 | 0.0010 |" in page
    assert "(paper, no memory across layers): test accuracy minus `paper`'s per seed (0, 1, 2) +0.001, -0.001, " \
           "+0.002; mean +0.0007" in page
    assert "no difference beyond the seed spread, so not shown to matter at this many seeds (higher in 2 of 3 " \
           "seeds)" in page
    assert "(paper, budget on the mean): test accuracy minus `paper`'s per seed (0, 1) -0.050, -0.050" in page
    assert "the swap hurts" in page and "within the budget in 2 of 2 seeds" in page
    assert "paper, budget on the mean, seed 2" in page.split("**Missing")[1].split("\n")[0]
    assert "(paper, static budget 0.78): test accuracy minus `paper`'s per seed (0, 1, 2) +0.020, +0.020, +0.020" \
        in page and "the swap helps" in page
    assert "(paper, both's reward): test accuracy minus `paper`'s per seed (0, 1, 2) +0.010, +0.010, +0.010" in page
    assert "(paper, both's schedule): test accuracy minus `paper`'s per seed (0, 1, 2) -0.020, +0.010, +0.010" in page
    assert "(paper, both's trade-off pruner): test accuracy minus `paper`'s per seed (0, 1, 2) -0.010, -0.010, " \
           "-0.010" in page


def test_with_the_ablation_the_page_holds_its_section_after_the_comparison(tmp_path):
    """experiments.paper_study --ablation: the swaps' tables and verdicts follow the comparison on one page, their
    `paper` runs the comparison's own folders."""
    from experiments import paper_ablation as ablation
    root = str(tmp_path / "runs")
    runs = study.plan(root, [0, 1], BUDGET)
    swaps = ablation.plan(root, [0, 1], BUDGET)
    assert {r["out"] for r in swaps if r["kind"] == ablation.PAPER} == \
        {r["out"] for r in runs if r["kind"] == study.PAPER}
    for run in runs + [r for r in swaps if r["kind"] != ablation.PAPER]:
        accuracy = 0.96 if run["kind"] == ablation.REWARD else 0.95
        write_run({**run, "args": ["--method", "paper"]}, accuracy, 0.2, 0.001, 1.0, None)
    out = tmp_path / "paper.md"
    study.report(runs, BUDGET, "python -m experiments.paper_study --ablation", str(out), swaps)
    page = out.read_text()
    comparison, section = page.split("\n## The ablation: one ingredient at a time\n")
    assert "## Reading" in comparison and "Below: the one-ingredient swaps" in comparison
    assert "### Verdict per swapped ingredient, and the second operating point" in section
    assert "| paper, both's reward | 2 | 0.9600 ± 0.0000 |" in section
    assert "(paper, both's reward): test accuracy minus `paper`'s per seed (0, 1) +0.010, +0.010" in section
    assert "### Commands" in section and "--paper-reward lagrangian" in section


def test_the_ablation_runs_only_the_kinds_asked_for_beside_paper(tmp_path):
    """--kinds: `paper` and the swaps named, and the page lists those alone; an unknown name exits 2 before any run."""
    from experiments import paper_ablation as ablation
    runs = ablation.plan(str(tmp_path / "runs"), [0, 1], BUDGET, ablation.kinds_list("pruner"))
    assert sorted({r["kind"] for r in runs}) == sorted([ablation.PAPER, ablation.PRUNER]) and len(runs) == 4
    for run in runs:
        write_run({**run, "args": ["--method", "paper"]}, 0.95, 0.2, 0.001, 1.0, None)
    out = tmp_path / "ablation.md"
    ablation.report(runs, BUDGET, "python -m experiments.paper_ablation --kinds pruner", str(out))
    page = out.read_text()
    assert "| paper, both's trade-off pruner | 2 |" in page and "| paper, both's reward |" not in page
    assert "(paper, both's reward)" not in page and "(paper, both's trade-off pruner)" in page
    with pytest.raises(SystemExit) as stop:
        ablation.main(["--kinds", "pruner,lstm", "--runs-dir", str(tmp_path / "none")])
    assert stop.value.code == 2 and not (tmp_path / "none").exists()


def test_the_second_operating_point_over_its_macs_budget_is_not_read_as_a_gain(tmp_path):
    """A run with the static agent's own budget that spends more MACs than the budget: its accuracy is flagged as
    bought with MACs, and the page says what keep fraction the runtime side was asked for, from the recorded widths."""
    from experiments import paper_ablation as ablation
    runs = [r for r in ablation.plan(str(tmp_path / "runs"), [0, 1], BUDGET)
            if r["kind"] in (ablation.PAPER, ablation.STATIC_BUDGET)]
    for run in runs:
        over = run["kind"] == ablation.STATIC_BUDGET
        write_run({**run, "args": ["--method", "paper"]}, 0.96 if over else 0.95, 0.288 if over else 0.2, 0.001,
                  1.0, None)
        if over:
            path = os.path.join(run["out"], "metrics.json")
            metrics = json.load(open(path))
            metrics.update(width_budget=0.4995, static_width_budget=0.8819)
            metrics["config"].update(paper_dpratio=0.5, paper_static_budget=0.78)
            json.dump(metrics, open(path, "w"))
    out = tmp_path / "ablation.md"
    ablation.report(runs, BUDGET, "python -m experiments.paper_ablation", str(out))
    page = out.read_text()
    assert "within the budget in 0 of 2 seeds" in page and "Over the MACs budget in 2 of 2 seeds" in page
    assert "at other MACs" in page.split("static budget 0.78): test accuracy")[1] and "the swap helps" not in page
    assert "asks the runtime side for a keep fraction of 0.117" in page        # (0.4995 - 0.5 * 0.8819) / 0.5


def test_model_mcifarnet_plans_every_run_and_titles_every_page_on_that_backbone(tmp_path):
    """--model: the study's runs, the uniform run at the MACs `paper` spent and the ablation's swaps all name the
    backbone, and the pages say which; a backbone the study does not plan exits 2 before any run."""
    from experiments import paper_ablation as ablation
    root = str(tmp_path / "runs")
    runs = study.plan(root, [0], BUDGET, "mcifarnet")
    swaps = ablation.plan(root, [0], BUDGET, ablation.kinds_list("schedule"), model="mcifarnet")
    for run in runs + swaps:
        assert run["args"][run["args"].index("--model") + 1] == "mcifarnet" and "small" not in run["args"]
    paper = [r for r in runs if r["kind"] == study.PAPER][0]
    write_run({**paper, "args": ["--method", "paper"]}, 0.95, 0.2, 0.001, 1.0, None)
    assert "--model mcifarnet" in study.spent_run(root, paper)["command"]
    out = tmp_path / "ablation.md"
    ablation.report(swaps, BUDGET, "python -m experiments.paper_ablation --model mcifarnet", str(out))
    page = out.read_text()
    assert page.startswith("# The published method, one ingredient at a time: mnist5k / mcifarnet,")
    intro = page.split("Produced by")[0]
    assert "On mnist5k / mcifarnet (the paper's M-CifarNet) at one MACs budget" in intro and "small" not in intro
    assert "- both's schedule: `--paper-epochs 10" in intro and "--no-paper-recurrent" not in intro  # the kinds run
    for main in (study.main, ablation.main):
        with pytest.raises(SystemExit) as stop:
            main(["--model", "resnet56", "--runs-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x.md")])
        assert stop.value.code == 2 and not (tmp_path / "none").exists()
