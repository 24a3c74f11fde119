"""A run's deployed model put on one MACs budget: `calibrated(path, budget)`.

The calibration shift that puts the validation MACs ratio on the budget is found on the validation
split (for a range run, from the shift interpolated between its evaluation budgets, with BatchNorm
statistics recomputed under the policy at that budget), then the test accuracy and MACs ratio are
measured there. rtsearch.export --budget writes the result.
"""
from __future__ import annotations

import torch

from rtsearch import data
from rtsearch.errors import UsageError
from rtsearch.net.baseline import budget_shift
from rtsearch.net.cost import CostModel
from rtsearch.net.fast import SkipNet
from rtsearch.net.sandwich import recalibrate_bn
from rtsearch.net.supervised import evaluate
from rtsearch.deploy import deployed


def run_splits(config: dict):
    """The data splits a run trained on, from its stored config (its held-out share set aside)."""
    return data.hold_out(data.load(config["dataset"], config["seed"], config.get("data_dir")),
                         config.get("holdout_share", 0.0), config["seed"])


def calibrated(path: str, budget: float) -> tuple[deployed.DeployedRun, dict]:
    """(the run at `budget`, its test figures: accuracy, MACs ratio and its per-input std, `per_input`
    tensors as `evaluate` gives them, and the calibration `shift`)."""
    run = deployed.load(path, budget)
    cfg = run.config
    if not cfg or run.policy is None or not hasattr(run.policy, "shift"):
        raise UsageError(f"{path} has no runtime agent to put on a budget: --budget needs a learned run "
                         f"(drop --budget to export its storage-reduced model)")
    splits = run_splits(cfg)
    cost, ratios = CostModel(run.net), torch.as_tensor(run.static_ratios)
    print(f"calibrating onto budget {budget:g} on {len(splits.val[1])} validation images ...", flush=True)

    def recompute_statistics() -> None:
        # a range run: BatchNorm statistics under the policy at this budget (rtsearch.rl.budgets)
        if cfg.get("budget_range"):
            recalibrate_bn(run.net, splits.train[0], ratios, run.masked_policy(), seed=cfg["seed"])

    recompute_statistics()
    run.policy.shift = budget_shift(
        lambda s: evaluate(run.net, cost, *splits.val, ratios, run.masked_policy(s))["macs_ratio"], budget,
        cfg["p_max"], near=run.policy.shift)     # from the shift interpolated between the run's budgets
    recompute_statistics()
    run.skip = SkipNet(run.net.eval(), run.static_ratios)      # BatchNorm folded anew
    test = evaluate(run.net, cost, *splits.test, ratios, run.masked_policy())
    return run, {"budget": budget, "shift": run.policy.shift, "accuracy": test["accuracy"],
                 "macs_ratio": test["macs_ratio"], "macs_ratio_std": test["macs_ratio_std"],
                 "per_input": test["per_input"]}
