"""Is a range run's accuracy the agents' doing or the network's? (`python -m experiments.robust`)

A run over a budget range (`rtsearch.train --budget-range`) fine-tunes one network for every width
its agents use (the sandwich rule, rtsearch.net.sandwich): a width-robust network. Deployed at a
budget B, three ways to use that same network, each measured on the test split:
- learned: the run's agents calibrated onto B, exactly as `rtsearch.export --budget` does
  (rtsearch.deploy.at_budget), with the per-input MACs ratio's spread (std, coefficient of variation) and
  its Spearman correlation with the dense model's confidence on the same input;
- uniform: one runtime ratio on every layer, the smallest that meets B, with the BatchNorm statistics
  recomputed under it (as the export recomputes them under the learned policy);
- oracle: the network at LEVELS uniform widths (statistics recomputed per width); for each input the
  cheapest width that classifies it correctly, then as many inputs as fit in a mean MACs ratio of B
  while the rest take the cheapest width. It reads the labels, so it is a loose upper bound on what
  per-input widths could reach on this network, not a method.
Each (run, budget) is written to robust-B.json in the run's folder and reused.

The uniform ratio on a range run's network is not a fair peer: the agents shaped that network. The
non-learned width-robust network (`width_robust`) is fine-tuned from the same dense model exactly as a
range run fine-tunes, without agents: the same epochs (warm-up plus one per iteration) of the sandwich
rule, whose widest, narrowest and drawn paths are the uniform ratios of the range's top, its bottom and a
budget drawn per batch (the range run's warm-up, continued). At each budget it runs at the uniform ratio
meeting the budget, and the oracle above is computed on it. experiments.peers_study reads both.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace

import numpy as np

from rtsearch.config import Pruning, RunConfig

LEVELS = 9                    # the oracle's uniform widths, evenly spaced in log MACs ratio over LEVEL_MACS
LEVEL_MACS = (0.025, 0.5)


def oracle_accuracy(correct: np.ndarray, level_macs: np.ndarray, budget: float) -> tuple[float, np.ndarray]:
    """(accuracy, per-input MACs ratios) of the best per-input choice of level within a mean MACs ratio of `budget`.

    `correct[l, i]`: input i is classified correctly at level l, whose MACs ratio is `level_macs[l]`.
    Every input starts at the cheapest level; an input right only at a dearer level is moved to its
    cheapest right one, cheapest extra cost first, while the mean stays within the budget. Each input
    gains at most one correct answer, so taking the smallest extra costs first is optimal."""
    order = np.argsort(level_macs)
    correct, level_macs = correct[order], level_macs[order]
    n = correct.shape[1]
    base = level_macs[0]
    if base > budget:
        raise ValueError(f"the cheapest level costs {base:.4f}, above budget {budget:g}")
    first_right = np.where(correct.any(0), correct.argmax(0), -1)
    movable = np.flatnonzero(first_right > 0)
    movable = movable[np.argsort(level_macs[first_right[movable]], kind="stable")]
    extra = level_macs[first_right[movable]] - base
    fits = int(np.searchsorted(np.cumsum(extra), (budget - base) * n, side="right"))
    macs = np.full(n, base)
    macs[movable[:fits]] = level_macs[first_right[movable[:fits]]]
    return (int((first_right == 0).sum()) + fits) / n, macs


def measure(path: str, budget: float, confidence: np.ndarray | None = None) -> dict:
    """Learned, uniform and oracle on the network of a range run's checkpoint at `budget` (see module doc)."""
    from rtsearch.deploy.at_budget import calibrated, run_splits
    from experiments.agents_study import spearman

    run, learned = calibrated(path, budget)     # network weights untouched: only BatchNorm statistics move
    macs = learned.pop("per_input")["macs_ratio"].numpy()
    learned["macs_ratio_cv"] = float(macs.std() / macs.mean())
    if confidence is not None and macs.std() > 0:
        learned["spearman_confidence"] = spearman(confidence, macs)

    cfg = run.config
    on_network = network_at(run.net, run_splits(cfg), cfg["p_max"], cfg["seed"], [budget], run.static_ratios)
    at = on_network[f"{budget:g}"]
    at["oracle"]["levels"] = on_network["levels"]
    return {"checkpoint": path, "budget": budget, "learned": learned, **at}


def width_robust(seed: int, budget_range: tuple[float, float], budgets_: list[float], out: str,
                 iterations: int = 10, agent_share: float = 0.0, teacher: str = "widest") -> dict:
    """The non-learned width-robust network of `seed` (module doc), measured at each budget: uniform and
    oracle; the network is written to out/model.pt and the figures to out/robust.json (both reused).
    `agent_share`: that share of the training split is left out of fine-tuning (data.split_off), as a
    run with --agent-share leaves it for the agents' rewards. `teacher`: "widest" distils the narrow paths from
    the network's own widest path (the sandwich rule), "dense" distils every path from the dense model."""
    from experiments.agents_study import reused
    found = reused(os.path.join(out, "robust.json"),
                   lambda: fine_tuned_without_agents(seed, budget_range, budgets_, out, iterations, agent_share,
                                                     teacher))
    if found["epochs"] != RunConfig.warmup_epochs + iterations * RunConfig.finetune_epochs:
        raise SystemExit(f"{out}/robust.json holds a network fine-tuned for {found['epochs']} epochs, not for "
                         f"{iterations} iterations: pass another folder, or remove it to retrain")
    if found.get("agent_share", 0.0) != agent_share:
        raise SystemExit(f"{out}/robust.json holds a network fine-tuned without a share of "
                         f"{found.get('agent_share', 0.0)} of the training split, not {agent_share}: "
                         f"pass another folder")
    if found.get("teacher", "widest") != teacher:
        raise SystemExit(f"{out}/robust.json holds a network taught by --teacher {found.get('teacher', 'widest')}, "
                         f"not {teacher}: pass another folder")
    return found


def fine_tuned_without_agents(seed: int, budget_range: tuple[float, float], budgets_: list[float], out: str,
                              iterations: int, agent_share: float = 0.0, teacher: str = "widest") -> dict:
    """`width_robust`'s network trained, written to out/model.pt and measured."""
    import copy
    import time

    import torch

    from rtsearch import data
    from rtsearch.config import RANGE_EXPLORE_STD
    from rtsearch.net import checkpoint, dense
    from rtsearch.net.baseline import uniform_ratios
    from rtsearch.net.cost import CostModel
    from rtsearch.net.sandwich import fit_sandwich
    from rtsearch.net.supervised import fixed_policy
    from rtsearch.rl.loop import mixed

    cfg = RunConfig(dataset="mnist5k", model="small", method="both", seed=seed, budget_range=list(budget_range))
    splits = data.load(cfg.dataset, seed)
    net, _ = dense.pretrained(cfg.dataset, cfg.model, seed, splits, log=lambda _: None)
    dense_teacher = copy.deepcopy(net) if teacher == "dense" else None
    if agent_share > 0:     # after the dense model, which every run of a seed shares
        splits = replace(splits, train=data.split_off(splits.train, agent_share, seed)[0])
    cost, static = CostModel(net), torch.zeros(net.num_layers)
    started = time.time()

    def uniform_at(b):
        return fixed_policy(uniform_ratios(cost, b, Pruning(static=False, runtime=True))[1])

    os.makedirs(out, exist_ok=True)
    for i, epochs in enumerate([cfg.warmup_epochs] + [cfg.finetune_epochs] * iterations):
        print(f"{out}: sandwich fine-tuning {i + 1}/{iterations + 1} over uniform widths", flush=True)
        fit_sandwich(net, *splits.train, epochs, cfg.lr_finetune, static, mixed(uniform_at, budget_range, seed + i),
                     cfg.p_max, RANGE_EXPLORE_STD, seed=seed + i, augment=splits.augment,
                     widest=uniform_at(budget_range[1]), narrowest=uniform_at(budget_range[0]), recalibrate=False,
                     teacher=dense_teacher)
    seconds = time.time() - started
    checkpoint.save(os.path.join(out, "model.pt"), net)
    return {"seed": seed, "budget_range": list(budget_range), "agent_share": agent_share, "teacher": teacher,
            "epochs": cfg.warmup_epochs + iterations * cfg.finetune_epochs,
            "seconds": seconds, "budgets": network_at(net, splits, cfg.p_max, seed, budgets_)}


def uniform_ratio(net, cost, probe, static, macs_ratio: float, p_max: float) -> float:
    """The smallest runtime ratio, the same on every layer, whose MACs ratio is within `macs_ratio` (under
    fixed ratios every input costs the same: a few `probe` images count it)."""
    import torch

    from rtsearch.net.baseline import smallest_ratio
    from rtsearch.net.supervised import evaluate, fixed_policy
    return smallest_ratio(lambda q: evaluate(net, cost, *probe, static, fixed_policy(torch.full((net.num_layers,), q)))
                          ["macs_ratio"] <= macs_ratio, high=p_max)


def network_at(net, splits, p_max: float, seed: int, budgets_: list[float], static_ratios=None) -> dict:
    """{budget: {"uniform": ..., "oracle": ...}}: the network at the uniform ratio meeting each budget, and the
    per-input oracle over LEVELS uniform widths; BatchNorm statistics recomputed under each."""
    import torch

    from rtsearch.net.cost import CostModel
    from rtsearch.net.sandwich import recalibrate_bn
    from rtsearch.net.supervised import evaluate, fixed_policy

    cost = CostModel(net)
    static = torch.zeros(net.num_layers) if static_ratios is None else torch.as_tensor(static_ratios)
    probe = tuple(t[:8] for t in splits.val)

    def uniform(macs_ratio: float) -> dict:
        def at(q):
            return fixed_policy(torch.full((net.num_layers,), q))
        q = uniform_ratio(net, cost, probe, static, macs_ratio, p_max)
        recalibrate_bn(net, splits.train[0], static, at(q), seed=seed)
        out = evaluate(net, cost, *splits.test, static, at(q))
        return {"ratio": q, "accuracy": out["accuracy"], "macs_ratio": out["macs_ratio"],
                "correct": out["per_input"]["correct"].numpy()}

    levels = [uniform(m) for m in np.geomspace(*LEVEL_MACS, LEVELS)]
    correct, level_macs = np.stack([lv["correct"] for lv in levels]), np.array([lv["macs_ratio"] for lv in levels])
    result = {}
    for b in budgets_:
        flat = uniform(b)
        accuracy, per_input = oracle_accuracy(correct, level_macs, b)
        result[f"{b:g}"] = {"uniform": {k: flat[k] for k in ("ratio", "accuracy", "macs_ratio")},
                            "oracle": {"accuracy": accuracy, "macs_ratio": float(per_input.mean()),
                                       "macs_ratio_std": float(per_input.std())}}
    result["levels"] = [{k: lv[k] for k in ("ratio", "accuracy", "macs_ratio")} for lv in levels]
    return result


def measured(run_dir: str, budget: float, seed: int) -> dict:
    """`measure` on run_dir/best.pt at `budget`, reused from run_dir/robust-B.json when there."""
    from experiments.agents_study import dense_confidence, reused

    def compute() -> dict:
        print(f"measuring {run_dir} at budget {budget:g} (learned, uniform, oracle) ...", flush=True)
        return measure(os.path.join(run_dir, "best.pt"), budget, dense_confidence(seed))

    return reused(os.path.join(run_dir, f"robust-{budget:g}.json"), compute)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.robust", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/any-budget/range-0.05-0.5-sandwich-std0.05-s{seed}",
                   help="range runs' folders, {seed} replaced by each seed")
    p.add_argument("--budgets", default="0.15,0.08,0.05")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args(argv)
    for seed in (int(s) for s in args.seeds.split(",")):
        for b in (float(x) for x in args.budgets.split(",")):
            r = measured(args.runs.format(seed=seed), b, seed)
            print(f"seed {seed} budget {b:g}: learned {r['learned']['accuracy']:.4f} (CV "
                  f"{r['learned']['macs_ratio_cv']:.3f}), uniform {r['uniform']['accuracy']:.4f}, "
                  f"oracle {r['oracle']['accuracy']:.4f} at {r['oracle']['macs_ratio']:.4f}", flush=True)


if __name__ == "__main__":
    main()
