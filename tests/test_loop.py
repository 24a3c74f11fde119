"""Short real trainings of the agents with the network (RLlib PPO, in-process sampling); the checks of a `both` run
that its contract test (tests/test_method_contract.py) makes on its own run, killed and resumed."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import check_deployed_model_scores_as_the_run

from rtsearch.net.baseline import budget_shift
from rtsearch import methods
from rtsearch.config import RunConfig
from rtsearch.methods import run


def quiet(_):
    pass


def test_budget_shift_finds_the_smallest_shift_that_meets_the_budget():
    macs_at = lambda s: min(1.0, max(0.0, 0.5 - s))  # noqa: E731  (MACs fall as the shift grows)
    assert abs(budget_shift(macs_at, 0.3, 0.9) - 0.2) < 1e-3
    assert macs_at(budget_shift(macs_at, 0.3, 0.9)) <= 0.3
    assert budget_shift(macs_at, 0.7, 0.9) < 0 and abs(budget_shift(macs_at, 0.7, 0.9) + 0.2) < 1e-3
    assert budget_shift(lambda s: 1.0, 0.3, 0.9) == 0.9  # cannot be met: the most pruning there is


def test_budget_shift_from_a_previous_shift_finds_the_same_shift_in_fewer_walks():
    walks = []

    def macs_at(s):
        walks.append(s)
        return min(1.0, max(0.0, (0.9 - s) ** 2 * 0.6))    # convex, falling, like a network's MACs

    resolution = 2 * 0.9 / 2 ** 14
    for budget in (0.05, 0.08, 0.15, 0.3, 0.45):
        walks.clear()
        cold = budget_shift(macs_at, budget, 0.9)
        cold_walks = len(walks)
        for near in (cold - 0.01, cold + 0.003, cold + 0.3, -0.9, 0.9, cold):
            walks.clear()
            warm = budget_shift(macs_at, budget, 0.9, near=near)
            assert abs(warm - cold) <= resolution and macs_at(warm) <= budget
            if abs(near - cold) < 0.02:
                assert len(walks) < cold_walks
    assert budget_shift(macs_at, 1.0, 0.9, near=0.1) == -0.9                 # met with every channel
    assert budget_shift(lambda s: 1.0, 0.3, 0.9, near=0.2) == 0.9           # cannot be met


@pytest.mark.slow
def test_tight_budget_makes_the_runtime_agent_prune_more(tmp_path):
    # Start the runtime agent at no pruning: with a tight budget, dual ascent raises beta_f and the
    # agent must learn to prune, so its pruning rises and the MACs ratio falls toward the budget.
    # Calibration is off: this is the agent's own learning.
    cfg = RunConfig(dataset="digits", budget=0.2, iterations=6, method="runtime-only", warm_start=False,
                    calibrate=False, lr_runtime=1e-3, beta_f=2.0, eta_f=5.0, out=str(tmp_path / "run"))
    metrics = run(cfg, log=quiet)
    history = metrics["history"]
    assert len(history) == 6
    first, last = history[0], history[-1]
    assert last["runtime_sparsity"] > first["runtime_sparsity"] + 0.04
    assert last["macs_ratio"] < first["macs_ratio"] - 0.05
    assert abs(last["macs_ratio"] - cfg.budget) < abs(first["macs_ratio"] - cfg.budget)
    assert last["beta_f"] > cfg.beta_f  # the multiplier rose while the budget was overshot


def check_both_agents_wrote_every_metric(cfg) -> None:
    """Called by the contract test of `both` (tests/test_method_contract.py) on its run, made with `cfg`'s settings:
    every metric of both agents, the budget met by calibration, its deployed model, and what --resume restores."""
    saved = json.loads(open(os.path.join(cfg.out, "metrics.json")).read())
    assert saved["iterations"] == cfg.iterations and 1 <= saved["iters_to_best"] <= cfg.iterations
    for row in saved["history"]:
        assert {"runtime_reward", "static_reward", "seconds_runtime", "seconds_static", "seconds_finetune",
                "seconds_eval"} <= row.keys()
        assert len(row["static_ratios"]) == 5
    assert saved["params_ratio"] < 1.0  # the static agent pruned for good
    # calibration puts the deployed policy on the MACs budget on validation, and test follows
    assert all(row["macs_ratio"] <= cfg.budget + 1e-6 for row in saved["history"])
    assert all(row["macs_ratio"] > cfg.budget - 0.05 for row in saved["history"])
    assert abs(saved["macs_ratio"] - cfg.budget) < 0.02
    assert saved["stored_bytes"] == os.path.getsize(os.path.join(cfg.out, "model.pt"))
    check_deployed_model_scores_as_the_run(Path(cfg.out))
    check_resume_restores_everything(cfg)


def check_resume_restores_everything(cfg):
    """What --resume restores from the last checkpoint (the network, static ratios, beta_f, the calibration
    shift and both agents) reproduces that iteration's validation figures exactly on a fresh start."""
    import torch

    from rtsearch import data
    from rtsearch.net import checkpoint, dense
    from rtsearch.net.cost import CostModel
    from rtsearch.net.supervised import evaluate
    from rtsearch.rl.loop import Agents, ensure_ray
    state = checkpoint.load(os.path.join(cfg.out, "checkpoint.pt"))
    last = state["history"][-1]
    splits = data.load(cfg.dataset, cfg.seed)
    net, _ = dense.pretrained(cfg.dataset, cfg.model, cfg.seed, splits, log=quiet)
    net.lam = cfg.lam
    cost = CostModel(net)
    started = ensure_ray(0)
    crew = Agents(methods.configured(cfg), net, cost)
    try:
        fresh = evaluate(net, cost, *splits.val, torch.as_tensor(crew.static_ratios), crew.runtime_policy())
        crew.resume(state, os.path.join(cfg.out, "agents"))
        val = evaluate(net, cost, *splits.val, torch.as_tensor(crew.static_ratios), crew.runtime_policy())
    finally:
        crew.stop()
        if started:
            import ray
            ray.shutdown()
    assert crew.beta_f == state["run_state"]["beta_f"] != cfg.beta_f
    assert crew.runtime_shift == state["run_state"]["runtime_shift"]
    assert crew.static_ratios.tolist() == state["static_ratios"]
    assert (fresh["accuracy"], fresh["macs_ratio"]) != (last["accuracy"], last["macs_ratio"])
    assert (val["accuracy"], val["macs_ratio"]) == (last["accuracy"], last["macs_ratio"])
    check_deployed_model_is_the_run(cfg, splits, last)


def check_deployed_model_is_the_run(cfg, splits, last):
    """The deployed model (static channels removed, runtime-pruned channels skipped, the trained agent and
    its calibration shift on the skip path) reproduces the checkpointed iteration's validation figures."""
    import torch

    from rtsearch.net.cost import CostModel
    from rtsearch.deploy import deployed
    run = deployed.load(os.path.join(cfg.out, "checkpoint.pt"))
    assert run.skip.widths != run.net.widths          # the static agent's channels are physically gone
    x, y = splits.val
    outputs = [run.skip.run(x[i:i + 1], run.policy) for i in range(len(x))]
    accuracy = float((torch.cat([o[0] for o in outputs]).argmax(1) == y).float().mean())
    static_kept = torch.tensor(run.skip.widths)
    macs = float(CostModel(run.net).macs_ratio(torch.tensor([o[1] for o in outputs]), static_kept).mean())
    assert accuracy == pytest.approx(last["accuracy"], abs=1e-6)
    assert macs == pytest.approx(last["macs_ratio"], abs=1e-9)
    # a run trained for one budget serves that budget only (--budget-range serves many)
    from rtsearch.errors import UsageError
    with pytest.raises(UsageError, match="trained for budget 0.4 only"):
        deployed.load(os.path.join(cfg.out, "checkpoint.pt"), budget=0.3)


def kill_9_after_the_first_iteration(args: list[str], out) -> None:
    """Start `python -m rtsearch.train args` (`--iterations 2` among them) and kill -9 it, and its Ray, right after
    iteration 1 is checkpointed: what the contract test of `both` then finishes with --resume."""
    proc = subprocess.Popen([sys.executable, "-m", "rtsearch.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("iter   1/2"):
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not os.path.exists(os.path.join(out, "metrics.json"))


def check_the_killed_run_resumed(resumed, out) -> None:
    """--resume finished the killed run from its last checkpoint: iteration 1 was not run again."""
    assert "resumed" in resumed.stdout
    metrics = json.loads(open(os.path.join(out, "metrics.json")).read())
    assert metrics["iterations"] == 2
    assert [row["iteration"] for row in metrics["history"]] == [1, 2]
    assert "iter   1/2" not in resumed.stdout
