"""Is there a better per-layer allocation than uniform on a range run's network?
(`python -m experiments.allocation`)

The agents of a range run (`rtsearch.train --budget-range`) end at the accuracy of the uniform ratio on
their own network (experiments.robust). Either the agents miss a better allocation, or this network
has none to find. A random search answers without agents: per range run and budget, SAMPLES per-layer
runtime ratios (the uniform ratio plus N(0, SPREAD) per layer, shifted onto the budget as the calibration
shifts the agents' ratios), each with its BatchNorm statistics recomputed and scored on the validation
split; the best on validation is then measured once on the test split, beside the uniform ratio. Each
(run, budget) is written to allocation-B.json in the run's folder and reused. Writes results/archive/allocation.md.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from experiments.agents_study import command_line

SAMPLES = 32
SPREAD = 0.1


def search(path: str, budget: float, samples: int = SAMPLES, spread: float = SPREAD, seed: int = 0) -> dict:
    """The best of `samples` random per-layer allocations at `budget` on validation, and the uniform one."""
    import torch

    from rtsearch.net.baseline import budget_shift
    from rtsearch.net.cost import CostModel
    from rtsearch.net.sandwich import recalibrate_bn
    from rtsearch.net.supervised import evaluate, fixed_policy
    from rtsearch.deploy import deployed
    from rtsearch.deploy.at_budget import run_splits
    from experiments.robust import uniform_ratio

    run = deployed.load(path, budget)
    cfg, layers = run.config, run.net.num_layers
    splits = run_splits(cfg)
    cost, static = CostModel(run.net), torch.as_tensor(run.static_ratios)
    probe = tuple(t[:8] for t in splits.val)

    def macs(ratios) -> float:
        return evaluate(run.net, cost, *probe, static, fixed_policy(ratios))["macs_ratio"]

    def scored(ratios, split) -> dict:
        recalibrate_bn(run.net, splits.train[0], static, fixed_policy(ratios), seed=cfg["seed"])
        out = evaluate(run.net, cost, *split, static, fixed_policy(ratios))
        return {"ratios": [round(float(r), 4) for r in ratios], "accuracy": out["accuracy"],
                "macs_ratio": out["macs_ratio"]}

    q = uniform_ratio(run.net, cost, probe, static, budget, cfg["p_max"])
    uniform = torch.full((layers,), q)
    rng = np.random.default_rng(seed)
    tried = []
    for i in range(samples):
        base = torch.as_tensor(q + rng.normal(0.0, spread, layers), dtype=torch.float32)
        shift = budget_shift(lambda s: macs((base + s).clamp(0.0, cfg["p_max"])), budget, cfg["p_max"])
        tried.append(scored((base + shift).clamp(0.0, cfg["p_max"]), splits.val))
        print(f"  allocation {i + 1}/{samples}: validation accuracy {tried[-1]['accuracy']:.3f} at MACs ratio "
              f"{tried[-1]['macs_ratio']:.4f}", flush=True)
    best = max(tried, key=lambda t: t["accuracy"])
    return {"checkpoint": path, "budget": budget, "samples": samples, "spread": spread,
            "uniform": {"val": scored(uniform, splits.val), "test": scored(uniform, splits.test)},
            "best": {"val": best, "test": scored(torch.as_tensor(best["ratios"]), splits.test)},
            "val_accuracies": [t["accuracy"] for t in tried]}


def searched(run_dir: str, budget: float) -> dict:
    """`search` on run_dir/best.pt at `budget`, reused from run_dir/allocation-B.json when there."""
    from experiments.agents_study import reused

    def compute() -> dict:
        print(f"searching allocations of {run_dir} at budget {budget:g} ...", flush=True)
        return search(os.path.join(run_dir, "best.pt"), budget)

    return reused(os.path.join(run_dir, f"allocation-{budget:g}.json"), compute)


def report(results: list[dict], command: str, path: str) -> None:
    lines = ["# A better per-layer allocation than uniform on a range run's network?", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only). Per range run (one per "
             f"seed) and budget: {results[0]['samples']} random per-layer runtime ratios (uniform ratio plus "
             f"N(0, {results[0]['spread']:g}) per layer, shifted onto the budget), BatchNorm statistics "
             "recomputed under each, scored on the 500-image validation split; the best on validation measured "
             "once on the 1,000-image test split beside the uniform ratio (same network, same recomputation).", "",
             "| run | budget | uniform: val / test | best of the search: val / test | test gain | its ratios | "
             "validation accuracies of the search: median / max |", "|---|---|---|---|---|---|---|"]
    gains = {}
    for r in results:
        u, b = r["uniform"], r["best"]
        gain = b["test"]["accuracy"] - u["test"]["accuracy"]
        gains.setdefault(r["budget"], []).append(gain)
        lines.append(f"| {os.path.dirname(r['checkpoint'])} | {r['budget']:g} | {u['val']['accuracy']:.3f} / "
                     f"{u['test']['accuracy']:.3f} (MACs {u['test']['macs_ratio']:.4f}) | {b['val']['accuracy']:.3f} / "
                     f"{b['test']['accuracy']:.3f} (MACs {b['test']['macs_ratio']:.4f}) | {gain:+.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in b['val']['ratios'])} | {np.median(r['val_accuracies']):.3f} / "
                     f"{max(r['val_accuracies']):.3f} |")
    lines += ["", "Mean test gain of the searched allocation over uniform, per budget: "
              + "; ".join(f"{b:g}: {np.mean(g):+.4f} (per seed {', '.join(f'{x:+.3f}' for x in g)})"
                          for b, g in gains.items()) + "."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.allocation", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/any-budget/range-0.05-0.5-sandwich-std0.05-s{seed}",
                   help="range runs' folders, {seed} replaced by each seed")
    p.add_argument("--budgets", default="0.08,0.05")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--report", default="results/archive/allocation.md")
    args = p.parse_args(argv)
    results = [searched(args.runs.format(seed=int(s)), float(b))
               for s in args.seeds.split(",") for b in args.budgets.split(",")]
    command = command_line("python -m experiments.allocation", argv)
    report(results, command, args.report)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
