"""The learned method against the non-learned peers at tight budgets (`python -m rtsearch.studies.peers`).

On mnist5k / small, per budget and seed, through the real command line (finished runs are reused):
- learned: `rtsearch.train --budget B` at its defaults (both agents);
- uniform runtime-only and uniform static-only: `--fixed-ratios`, one ratio on every layer that
  meets the budget;
- Torch-Pruning L1: the static-only widths, its channels chosen and removed by Torch-Pruning's
  magnitude pruner (`--torch-pruning-l1`).
The fixed-ratio runs get as many fine-tuning epochs as the learned run (its warm-up plus one per
iteration). Every figure is read back from the runs' metrics.json. Writes results/peers.md.
"""
from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np

from rtsearch.studies.agents import WARMUP_EPOCHS, execute_parallel, load, mean_sd, runs_table

PEERS = {"uniform runtime-only": ["--fixed-ratios", "--method", "runtime-only"],
         "uniform static-only": ["--fixed-ratios", "--method", "static-only"],
         "Torch-Pruning L1": ["--fixed-ratios", "--method", "static-only", "--torch-pruning-l1"]}
FOLDERS = {"learned": "learned", "uniform runtime-only": "uniform", "uniform static-only": "static-uniform",
           "Torch-Pruning L1": "tp-l1"}     # learned- and uniform- runs are those of the any-budget study


def plan(root: str, budgets: list[float], seeds: list[int], iterations: int) -> list[dict]:
    runs = []
    for b in budgets:
        for seed in seeds:
            for kind in FOLDERS:
                args = ["--dataset", "mnist5k", "--model", "small",
                        "--iterations", str(iterations if kind == "learned" else iterations + WARMUP_EPOCHS),
                        "--budget", f"{b:g}", "--seed", str(seed), *PEERS.get(kind, []),
                        "--out", f"{root}/{FOLDERS[kind]}-{b:g}-s{seed}"]
                runs.append({"kind": kind, "budget": b, "seed": seed, "args": args, "out": args[-1],
                             "command": "python -m rtsearch.train " + " ".join(args)})
    return runs


def report(runs: list[dict], budgets: list[float], command: str, path: str) -> None:
    for run in runs:
        run["metrics"] = load(run)
    seeds = sorted({r["seed"] for r in runs})
    lines = ["# The learned method against the non-learned peers (mnist5k / small)", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only, one thread per run); every "
             "figure is read back from the runs listed below. Test split: 1,000 images; mean ± sample standard "
             f"deviation over seeds {', '.join(map(str, seeds))}. Same backbone, data split and dense model per "
             "seed; the fixed-ratio peers get as many fine-tuning epochs as the learned run (warm-up plus one per "
             "iteration). Torch-Pruning L1 keeps the uniform static-only widths and lets Torch-Pruning's "
             "MagnitudePruner (p=1) choose and remove the channels.", "",
             "| budget | method | test accuracy | MACs ratio | per-input MACs std | params ratio |",
             "|---|---|---|---|---|---|"]
    verdicts = []
    for b in budgets:
        at = {k: sorted((r for r in runs if r["kind"] == k and r["budget"] == b), key=lambda r: r["seed"])
              for k in FOLDERS}
        for kind, group in at.items():
            m = [r["metrics"] for r in group]
            lines.append(f"| {b:g} | {kind} | {mean_sd([x['accuracy'] for x in m])} | "
                         f"{np.mean([x['macs_ratio'] for x in m]):.4f} | "
                         f"{np.mean([x.get('macs_ratio_std', float('nan')) for x in m]):.4f} | "
                         f"{np.mean([x['params_ratio'] for x in m]):.3f} |")
        learned = np.array([r["metrics"]["accuracy"] for r in at["learned"]])
        best_peer = max(PEERS, key=lambda k: np.mean([r["metrics"]["accuracy"] for r in at[k]]))
        peer = np.array([r["metrics"]["accuracy"] for r in at[best_peer]])
        spread = max(learned.std(ddof=1), peer.std(ddof=1)) if len(seeds) > 1 else 0.0
        gain = float(np.mean(learned - peer))
        verdicts.append(f"- budget {b:g}: the best peer is {best_peer}; learned - it, per seed: "
                        f"{', '.join(f'{d:+.3f}' for d in learned - peer)} (mean {gain:+.4f}) against the larger "
                        f"seed-to-seed spread {spread:.4f}: "
                        + ("beats it by a clear margin." if gain > spread else "not a clear win."))
    lines += ["", "Verdict per budget (computed; the target is a mean gain over every peer larger than the larger "
              "seed-to-seed spread):", *verdicts, "", "## Runs", "", *runs_table(runs)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtsearch.studies.peers", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/any-budget", help="folder of the runs (the any-budget study's are reused)")
    p.add_argument("--budgets", default="0.15,0.08,0.05")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--report", default="results/peers.md")
    args = p.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    runs = plan(args.runs, budgets, [int(s) for s in args.seeds.split(",")], args.iterations)
    execute_parallel(runs, args.jobs)
    report(runs, budgets, "python -m rtsearch.studies.peers " + shlex.join(argv if argv is not None else sys.argv[1:]),
           args.report)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
