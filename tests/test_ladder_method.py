"""`rtsearch.train --method ladder`: Torch-Pruning L1 rungs and a learned per-input re-run choice among them."""
import json

import numpy as np
import pytest
import torch

from conftest import assert_usage_error, run_cli, run_main
from rtsearch.config import RunConfig
from rtsearch.methods import ladder


def test_the_rungs_span_the_budget_below_the_dense_model():
    assert ladder.rung_budgets(0.08) == [0.02, 0.03, 0.04, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25]
    high = ladder.rung_budgets(0.5)
    assert min(high) < 0.5 < max(high) < 1.0


def test_a_rung_is_the_torch_pruning_l1_peer_fine_tuned_as_the_ladder_run_asks():
    cfg = RunConfig(dataset="digits", budget=0.08, method="ladder", iterations=7, distill=True, out="runs/x")
    rung = ladder.rung_config(cfg, 0.03)
    assert (rung.method, rung.fixed_ratios, rung.torch_pruning_l1, rung.budget) == ("static-only", True, True, 0.03)
    assert (rung.iterations, rung.distill, rung.dataset, rung.seed) == (7 + cfg.warmup_epochs, True, "digits", 0)
    assert rung.out == "runs/x/rungs/0.03"


def test_a_parameter_budget_keeps_the_cascades_wide_rung_then_the_fewest_parameters_that_fit():
    levels = [{"params_ratio": p} for p in (0.02, 0.03, 0.05, 0.1, 0.2, 0.4)]
    assert ladder.dearer_rungs(levels, 1, 4, room=0.9) == [2, 3, 4, 5]        # all fit: all kept
    assert ladder.dearer_rungs(levels, 1, 4, room=0.4) == [2, 3, 4]           # 0.03 + 0.2, then 0.05, 0.1; not 0.4
    assert ladder.dearer_rungs(levels, 1, 5, room=0.5) == [2, 5]              # the wide rung first, whatever it costs
    assert ladder.dearer_rungs(levels, 0, 4, room=0.81) == [1, 2, 3, 4, 5]    # all of them fit


def test_the_cascade_searches_only_pairs_within_the_parameter_budget():
    rng = np.random.default_rng(0)
    confidence = rng.random(200)
    cheap = {"correct": confidence > 0.3, "confidence": confidence}
    right = {"correct": np.ones(200, bool), "confidence": np.ones(200)}
    levels = [{"macs_ratio": 0.02, "params_ratio": 0.02, "val": cheap, "test": cheap},
              {"macs_ratio": 0.1, "params_ratio": 0.1, "val": right, "test": right},
              {"macs_ratio": 0.2, "params_ratio": 0.3, "val": right, "test": right}]
    assert ladder.best_cascade(levels, 0.08)["wide_macs"] == 0.1           # re-runs more inputs for the same MACs
    assert ladder.best_cascade(levels, 0.08, param_budget=0.25)["wide_macs"] == 0.1
    assert ladder.best_cascade(levels[::2], 0.08, param_budget=0.25) is None   # 0.02 + 0.3 does not fit


def test_the_deployed_model_routes_each_input_to_the_rung_its_policy_picks():
    cheap = torch.nn.Linear(2, 3)
    with torch.no_grad():
        cheap.weight.copy_(torch.tensor([[5.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))   # confident on x[0] > 0 only
        cheap.bias.zero_()
    dear = torch.nn.Linear(2, 3)
    with torch.no_grad():
        dear.weight.zero_()
        dear.bias.copy_(torch.tensor([0.0, 0.0, 9.0]))                           # always answers class 2
    actor = torch.nn.Linear(7, 2)       # observation: 3 sorted probabilities, entropy, 3-class one-hot
    with torch.no_grad():
        actor.weight.zero_()
        actor.weight[1, 3] = 10.0       # re-run when the cheap pass is unsure (high entropy)
        actor.bias.copy_(torch.tensor([0.0, -5.0]))
    model = ladder.LadderModel([cheap, dear], actor, [0, 1], [0.0, 0.1], 0.0, [0.02, 0.12], (2,))
    x = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    log_probs, choice = model.decide(x)
    assert choice.tolist() == [0, 1]
    assert log_probs.argmax(1).tolist() == [0, 2]
    scored = ladder.evaluate(model, x, torch.tensor([0, 1]))
    assert scored["accuracy"] == 0.5 and scored["macs_ratio"] == pytest.approx(0.07)
    model.shift = 1e3                   # a re-run priced out: every input keeps the cheap answer
    assert model.decide(x)[1].tolist() == [0, 0]


def test_loading_a_deployed_ladder_needs_neither_gymnasium_nor_ray():
    """Unpickling deployed.pt imports the module of its class: only the agent's training needs the RL stack."""
    import subprocess
    import sys
    code = ("import sys, rtsearch.methods.ladder; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'gymnasium', 'ray', 'mlflow'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("args, words", [
    (["--method", "ladder", "--fixed-ratios"], ["--method ladder", "--fixed-ratios"]),
    (["--method", "ladder", "--lstm"], ["--method ladder", "--lstm"]),
    (["--method", "ladder", "--budget-range", "0.05:0.2"], ["--method ladder", "--budget-range"]),
    (["--method", "ladder", "--agent-iterations", "0"], ["--agent-iterations"]),
    (["--method", "ladder", "--lr-rerun", "0"], ["--lr-rerun", "positive"]),
    (["--method", "ladder", "--entropy-rerun", "-0.1"], ["--entropy-rerun", "0 or more"]),
    (["--method", "both", "--lr-rerun", "0.01"], ["--lr-rerun", "--method ladder"]),
    (["--method", "ladder", "--rerun-width", "0"], ["--rerun-width", "at least 1"]),
    (["--method", "both", "--rerun-width", "16"], ["--rerun-width", "--method ladder"]),
])
def test_bad_ladder_input_exits_2_with_one_line(args, words):
    assert_usage_error(run_main("rtsearch.train", *args), *words)


def check_first_run(first, out) -> dict:
    """The first run made its ten rungs on the fine-tuning share and trained its agent on the rest; its metrics."""
    from rtsearch import data
    assert first.returncode == 0, first.stderr[-3000:]
    train_size = len(data.load("digits", 0).train[1])      # a quarter rewards the agent, the rest fine-tunes the rungs
    share = round(0.25 * train_size)
    assert first.stdout.count(f"fine-tuned on {train_size - share} training images") == 10, first.stdout[-3000:]
    assert f"PPO iterations on {share} training inputs" in first.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "ladder" and len(metrics["history"]) == 3
    assert [r["budget"] for r in metrics["rungs"]] == ladder.rung_budgets(0.08)
    assert metrics["cascade"]["val_macs_ratio"] <= 0.08 + 1e-9
    return metrics


def check_deployed_model(out, metrics: dict):
    """deployed.pt scores as metrics.json says, on test and validation, and its params ratio counts the rungs it
    may use and its policy. Returns the splits, each rung's params ratio, the dense params and the policy's share."""
    from rtsearch import data
    from rtsearch.net import dense
    from rtsearch.net.cost import CostModel
    model = torch.load(out / "deployed.pt", weights_only=False)
    splits = data.load("digits", 0)
    test = ladder.evaluate(model, *splits.test)
    assert test["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert test["macs_ratio"] == pytest.approx(metrics["macs_ratio"], abs=1e-6)
    assert test["macs_ratio_std"] == pytest.approx(metrics["macs_ratio_std"], abs=1e-6)
    assert set(np.unique(test["per_input"]["macs_ratio"])) <= set(model.macs.numpy().tolist())
    best = metrics["history"][metrics["best_iteration"] - 1]
    val = ladder.evaluate(model, *splits.val)           # what the run scored its deployed iteration on
    assert val["accuracy"] == pytest.approx(best["accuracy"], abs=1e-9)
    assert val["macs_ratio"] <= 0.08 + 1e-6           # calibrated onto the budget on validation
    rung_params = {r["macs_ratio"]: r["params_ratio"] for r in metrics["rungs"]}
    deployed = sum(rung_params[m] for m in metrics["deployed_rungs_macs_ratio"])
    dense_params = CostModel(dense.pretrained("digits", "small", 0, splits)[0]).dense_params
    policy = sum(p.numel() for p in model.actor.parameters()) / dense_params
    assert metrics["params_ratio"] == pytest.approx(deployed + policy)    # the rungs it may use, and its policy
    return splits, rung_params, dense_params, policy


def check_latency_bench(out, tmp_path) -> None:
    """`rtsearch.bench --deployed` times the ladder against its own 0.08 rung."""
    timed = run_cli("rtsearch.bench", "--deployed", str(out / "rungs" / "0.08"), str(out), "--batch-sizes", "1,16",
                    "--runs", "30", "--out", str(tmp_path / "latency.md"))
    assert timed.returncode == 0, timed.stderr[-3000:]
    rows = [line.split(" | ") for line in (tmp_path / "latency.md").read_text().splitlines()
            if line.startswith(f"| {out}")]
    assert [(r[1], r[2], r[4]) for r in rows] == [("static-only", "eager", "1"), ("static-only", "eager", "16"),
                                                  ("ladder", "eager", "1"), ("ladder", "eager", "16")]
    assert rows[0][9] == "1.00 |" and all(float(r[7]) > 0 for r in rows)   # against the first run; median ms


def check_export(exported, out, tmp_path, metrics: dict) -> None:
    """`rtsearch.export` said what it wrote (the contract test checked that it scores as the run); a different budget
    is refused."""
    assert exported.returncode == 0 and f"params ratio {metrics['params_ratio']:.4f}" in exported.stdout
    assert_usage_error(run_main("rtsearch.export", "--checkpoint", str(out / "deployed.pt"), "--budget", "0.05",
                                "--out", str(tmp_path / "y.pt")), "budget 0.08", "drop --budget")


def check_resume(again, out) -> None:
    """A resumed run (here with `--agent-iterations 1 --num-env-runners 1`) reads its rungs back and trains its agent
    on one rollout worker of its own; another budget cannot resume it."""
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, read back") == len(ladder.rung_budgets(0.08))
    resumed = json.loads((out / "metrics.json").read_text())
    assert len(resumed["history"]) == 1 and resumed["config"]["num_env_runners"] == 1
    rung_seconds = sum(json.loads(p.read_text())["seconds"] for p in (out / "rungs").glob("*/metrics.json"))
    assert resumed["seconds"] > rung_seconds       # the whole run's time, its rungs read back included
    other = run_main("rtsearch.train", "--dataset", "digits", "--method", "ladder", "--budget", "0.05",
                     "--out", str(out), "--resume")
    assert_usage_error(other, "--resume", "budget")


def check_parameter_budget(args: list[str], out, metrics: dict, splits, rung_params: dict, dense_params: int,
                           policy: float) -> None:
    """A parameter budget restricts the rungs the agent may use, so the deployed model fits it; a narrower policy
    stores less."""
    capped = run_cli("rtsearch.train", *args, "--agent-iterations", "1", "--resume", "--param-budget", "0.3",
                     "--rerun-width", "16")
    assert capped.returncode == 0, capped.stderr[-3000:]
    within = json.loads((out / "metrics.json").read_text())
    assert within["param_budget"] == 0.3 and within["feasible"] and within["params_ratio"] <= 0.3
    assert len(within["agent_rungs_macs_ratio"]) < len(metrics["agent_rungs_macs_ratio"])    # some rungs left out
    capped_model = torch.load(out / "deployed.pt", weights_only=False)
    assert capped_model.actor[0][0].out_features == 16
    narrow = sum(p.numel() for p in capped_model.actor.parameters()) / dense_params
    assert narrow < policy / 3
    assert rung_params[within["cheap_rung_macs_ratio"]] \
        + sum(rung_params[m] for m in within["agent_rungs_macs_ratio"]) + narrow <= 0.3
    assert within["params_ratio"] == pytest.approx(sum(rung_params[m] for m in within["deployed_rungs_macs_ratio"])
                                                   + narrow)
    assert ladder.evaluate(capped_model, *splits.test)["accuracy"] == pytest.approx(within["accuracy"], abs=1e-9)
    assert_usage_error(run_main("rtsearch.train", *args, "--resume", "--param-budget", "0.05"),
                       "no pair of rungs fits --param-budget 0.05", "raise --param-budget")


def check_a_first_ladder_run(first, out, tmp_path) -> tuple:
    """The ladder's own checks on the first run of its contract test (tests/test_method_contract.py, TINY["ladder"]):
    its rungs and agent, its deployed model, its latency bench. Returns what the checks of its resumed run need."""
    metrics = check_first_run(first, out)
    splits, rung_params, dense_params, policy = check_deployed_model(out, metrics)
    check_latency_bench(out, tmp_path)
    return metrics, splits, rung_params, dense_params, policy


def check_a_resumed_ladder_run(again, exported, args: list[str], out, tmp_path, first: tuple) -> None:
    """The ladder's own checks once its contract test resumed the run (its agent trained again, its rungs read back)
    and exported it: what the resumed run wrote, what export said, and a parameter budget on a second resume."""
    metrics, splits, rung_params, dense_params, policy = first
    check_resume(again, out)
    check_export(exported, out, tmp_path, json.loads((out / "metrics.json").read_text()))
    check_parameter_budget(args, out, metrics, splits, rung_params, dense_params, policy)
