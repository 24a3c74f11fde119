"""Nested rungs: can one stored network serve as the ladder's whole ladder? (`python -m experiments.nested`).

The ladder stores one Torch-Pruning L1 network per rung it re-runs on. Here the widest rung alone is pruned by
Torch-Pruning L1; every cheaper rung is a prefix of its channels: the top channels of each layer by static
importance (set to follow the filters' L1 norms before training), at uniform runtime ratios that meet the rung's
MACs budget. The widest rung is trained by the sandwich rule with in-place distillation (rtsearch.net.sandwich: the
widest path on the labels, the cheapest rung and one rung drawn per batch distilled from it), and BatchNorm
statistics are recomputed per rung. Each rung's deployed network is the widest network's channel prefix
(rtsearch.net.fast.SkipNet: static channels removed), so storing the widest network and each rung's BatchNorm
statistics stores them all. The threshold cascade (rtsearch.methods.ladder.best_cascade, the ladder's label-free
rule) then runs on these rungs exactly as on the ladder's own; the report sets its test accuracy, MACs and stored
parameters beside the separate-rungs ladder's cascade and Torch-Pruning L1 of the same seed (read from the
`bench --pareto` runs). Writes results/nested.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch

from rtsearch.config import Pruning, RunConfig
from rtsearch.methods.base import prepared
from rtsearch.methods.ladder import best_cascade, rung_budgets, split_outputs
from rtsearch.net import magnitude
from rtsearch.net.baseline import uniform_ratios
from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.fast import SkipNet
from rtsearch.net.sandwich import fit_sandwich, recalibrate_bn
from rtsearch.net.supervised import evaluate, fixed_policy

STATIC, RUNTIME = Pruning(static=True, runtime=False), Pruning(static=False, runtime=True)


class DrawnRung:
    """A policy for fit_sandwich's explored path: one rung's ratios per batch, drawn when a walk starts."""

    def __init__(self, ratios: list[torch.Tensor], generator: torch.Generator):
        self.ratios, self.generator, self.current = ratios, generator, ratios[0]

    def __call__(self, walk):
        if walk.t == 0:
            self.current = self.ratios[int(torch.randint(len(self.ratios), (1,), generator=self.generator))]
        return self.current[walk.t].expand(walk.h.shape[0])


@torch.no_grad()
def order_by_l1(net) -> None:
    """Static importance 1 + 0.01 * (a filter's L1 norm / the layer's largest): every channel's scale stays about 1,
    and a prefix of the channels by static importance is the filters of largest L1 norm, as Torch-Pruning L1 keeps
    (the dense model's static importances are all about 1, so their order says nothing)."""
    for gate in net.gates:
        norms = gate.conv.weight.abs().sum((1, 2, 3))
        gate.static_importance.copy_(1.0 + 0.01 * norms / norms.max())


def bn_state(net) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k or "num_batches" in k}


def train_nested(cfg: RunConfig, epochs: int, log) -> dict:
    """The widest rung pruned and trained by the sandwich rule; per rung: its ratios, BN statistics, deployed
    network, outputs per split (as the ladder's rung_outputs) and MACs and params ratios."""
    splits, net, _, _, _ = prepared(cfg, log, move=False)
    net.lam = 0.0
    cost = CostModel(net, predictors=False)
    budgets = rung_budgets(cfg.budget)
    widest = magnitude.l1_pruned(net, static_kept_for(cost.widths, uniform_ratios(cost, budgets[-1], STATIC)[0]))
    wcost = magnitude.cost_against(widest, cost)
    order_by_l1(widest)
    ratios = [uniform_ratios(wcost, b, RUNTIME)[1] for b in budgets]      # cheapest first; the widest is all zeros
    zeros = torch.zeros(widest.num_layers)
    log(f"widest rung (MACs budget {budgets[-1]:g}): widths {widest.widths}; {len(budgets)} nested rungs; "
        f"{epochs} sandwich epochs")
    start = time.time()
    fit_sandwich(widest, *splits.train, epochs, cfg.lr_finetune, zeros,
                 DrawnRung(ratios, torch.Generator().manual_seed(cfg.seed)), p_max=1.0, explore_std=0.0,
                 seed=cfg.seed, narrowest=fixed_policy(ratios[0]), recalibrate=False,
                 on_epoch=lambda e, loss: log(f"  epoch {e}/{epochs} loss {loss:.4f}"))
    seconds = time.time() - start
    rungs = []
    for b, r in zip(budgets, ratios):
        recalibrate_bn(widest, splits.train[0], zeros, fixed_policy(r), seed=cfg.seed)
        masked = evaluate(widest, wcost, *splits.test, zeros, fixed_policy(r))
        skip = SkipNet(copy.deepcopy(widest).eval(), r.tolist())    # the prefix, its channels removed
        rungs.append({"budget": b, "macs_ratio": masked["macs_ratio"], "masked_accuracy": masked["accuracy"],
                      "bn": bn_state(widest), "model": skip,
                      "params_ratio": sum(p.numel() for p in skip.parameters()) / cost.dense_params,
                      **{s: split_outputs(skip, *getattr(splits, s)) for s in ("train", "val", "test")}})
        log(f"  rung {b:g}: MACs {masked['macs_ratio']:.4f}, test accuracy {masked['accuracy']:.4f} (masked), "
            f"{float(rungs[-1]['test']['correct'].mean()):.4f} (its deployed prefix)")
    widest_params = sum(p.numel() for p in SkipNet(copy.deepcopy(widest).eval()).parameters())
    bn_values = sum(v.numel() for k, v in rungs[0]["bn"].items() if "running_" in k)
    return {"rungs": rungs, "seconds": seconds, "widths": widest.widths,
            "stored_params_ratio": (widest_params + bn_values * (len(rungs) - 1)) / cost.dense_params}


def reference(runs_dir: str, kind: str, budget: float, seed: int) -> dict | None:
    path = os.path.join(runs_dir, "mnist5k-small", f"{kind}-{budget:g}-s{seed}", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.nested", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=0.08)
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=12, help="sandwich epochs (a ladder rung: 12 epochs)")
    p.add_argument("--runs-dir", default=os.path.join("runs", "pareto"), help="the bench --pareto runs to compare")
    p.add_argument("--report", default=os.path.join("results", "nested.md"))
    args = p.parse_args(argv)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = RunConfig(budget=args.budget, seed=seed, out=os.path.join("runs", "nested", f"s{seed}"))
        nested = train_nested(cfg, args.epochs, lambda line: print(line, flush=True))
        levels = nested["rungs"]
        found = best_cascade(levels, args.budget)                                      # storage: one network
        ladder, tp = reference(args.runs_dir, "ladder", args.budget, seed), reference(args.runs_dir, "tp-l1",
                                                                                       args.budget, seed)
        rows.append({"seed": seed, "nested": found, "nested_params": nested["stored_params_ratio"],
                     "seconds": nested["seconds"], "widths": nested["widths"],
                     "rungs": [(lv["budget"], lv["macs_ratio"], float(lv["test"]["correct"].mean())) for lv in levels],
                     "ladder": ladder and {"accuracy": ladder["accuracy"], "macs_ratio": ladder["macs_ratio"],
                                           "params_ratio": ladder["params_ratio"],
                                           "cascade": ladder.get("cascade", {})},
                     "tp": tp and {"accuracy": tp["accuracy"], "macs_ratio": tp["macs_ratio"],
                                   "params_ratio": tp["params_ratio"]}})
    write(rows, args)


def write(rows: list[dict], args) -> None:
    lines = ["# Nested rungs: one stored network as the whole ladder", "",
             f"Produced by `python -m experiments.nested --budget {args.budget:g} --seeds {args.seeds} --epochs "
             f"{args.epochs}` (mnist5k / small; experiments/nested.py says how). Test split; stored parameters as a "
             "fraction of the dense model's. The separate-rungs ladder and Torch-Pruning L1 are the `bench --pareto` "
             f"runs of the same seed ({args.runs_dir}).", "",
             "| seed | nested: threshold cascade accuracy | its MACs ratio | stored params | separate rungs: threshold "
             "cascade accuracy | its MACs ratio | ladder (agent) accuracy | ladder stored params | Torch-Pruning L1 "
             "accuracy | its params |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n, lad, tp = r["nested"], r["ladder"] or {}, r["tp"] or {}
        cas = lad.get("cascade", {})
        lines.append(f"| {r['seed']} | {n['accuracy']:.4f} | {n['macs_ratio']:.4f} | {r['nested_params']:.4f} | "
                     f"{cas.get('accuracy', float('nan')):.4f} | {cas.get('macs_ratio', float('nan')):.4f} | "
                     f"{lad.get('accuracy', float('nan')):.4f} | {lad.get('params_ratio', float('nan')):.4f} | "
                     f"{tp.get('accuracy', float('nan')):.4f} | {tp.get('params_ratio', float('nan')):.4f} |")
    lines += ["", "Each nested rung on its own (test accuracy of its deployed prefix):", ""]
    for r in rows:
        lines.append(f"- seed {r['seed']} (widest widths {r['widths']}, sandwich training {r['seconds']:.0f} s): "
                     + ", ".join(f"{b:g}: {acc:.4f} at MACs {m:.4f}" for b, m, acc in r["rungs"]))
    os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
    with open(args.report, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
