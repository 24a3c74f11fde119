"""Write the deployable model of a checkpoint.

`python -m rtsearch.export --checkpoint CKPT --out FILE` writes the storage-reduced model (the
surgery is rtsearch.net.export). With `--budget B` it writes the deployed model at that MACs budget
(static channels removed, the runtime agent choosing per input; a run trained with --budget-range
serves any B in its range without retraining): the calibration shift that puts the validation MACs
ratio on B is found here, on the validation split, and the test accuracy and MACs ratio at B are
measured and printed.
"""
from __future__ import annotations

import os

from rtsearch.cli import ArgumentParser, fraction, guarded
from rtsearch.errors import UsageError
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.export import export


def export_at_budget(path: str, budget: float, out: str) -> dict:
    """Calibrate a run's runtime policy onto `budget` (validation), measure it (test), write it to `out`;
    the test figures come back with the per-input tensors (`per_input`, as `evaluate` gives them)."""
    import torch

    from rtsearch import data
    from rtsearch.net.baseline import budget_shift
    from rtsearch.net.fast import SkipNet
    from rtsearch.net.sandwich import recalibrate_bn
    from rtsearch.net.supervised import evaluate
    from rtsearch.rl import deployed
    run = deployed.load(path, budget)
    cfg = run.config
    if not cfg or run.policy is None or not hasattr(run.policy, "shift"):
        raise UsageError(f"{path} has no runtime agent to put on a budget: --budget needs a learned run "
                         f"(drop --budget to export its storage-reduced model)")
    splits = data.hold_out(data.load(cfg["dataset"], cfg["seed"], cfg.get("data_dir")), cfg.get("holdout_share", 0.0),
                           cfg["seed"])
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
    tmp = f"{out}.tmp"
    try:
        torch.save(run.model(), tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise UsageError(f"cannot write {out} ({e.strerror or e}): pass a writable --out path") from None
    return {"budget": budget, "shift": run.policy.shift, "accuracy": test["accuracy"], "macs_ratio": test["macs_ratio"],
            "macs_ratio_std": test["macs_ratio_std"], "per_input": test["per_input"]}


@guarded
def main(argv=None) -> None:
    parser = ArgumentParser(description="Write the deployable model of a checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt or best.pt written by a run")
    parser.add_argument("--out", required=True, help="file to write the exported model to")
    parser.add_argument("--budget", type=fraction("--budget"), default=None,
                        help="write the deployed model at this MACs budget (a --budget-range run: any in its range)")
    args = parser.parse_args(argv)
    state = checkpoint.load(args.checkpoint)
    net = checkpoint.network_of(state, args.checkpoint)
    ratios = state.get("static_ratios") or [0.0] * net.num_layers
    if len(ratios) != net.num_layers:
        raise UsageError(f"checkpoint {args.checkpoint} has {len(ratios)} static ratios for "
                         f"{net.num_layers} layers: pass the checkpoint.pt a run wrote")
    if args.budget is not None:
        result = export_at_budget(args.checkpoint, args.budget, args.out)
        print(f"exported {args.out}: the deployed model at budget {args.budget:g}: test accuracy "
              f"{result['accuracy']:.4f}, MACs ratio {result['macs_ratio']:.4f} (per input: std "
              f"{result['macs_ratio_std']:.4f}; calibration shift {result['shift']:+.4f})")
        return
    try:
        result = export(net, ratios, args.out)
    except OSError as e:
        raise UsageError(f"cannot write {args.out} ({e.strerror or e}): pass a writable --out path") from None
    dense = CostModel(net).dense_params
    print(f"exported {args.out}: params {result['params']} (params ratio {result['params'] / dense:.4f} "
          f"of {dense} dense), bytes {result['bytes']}, widths {result['widths']}")


if __name__ == "__main__":
    main()
