"""Does knowledge distillation from the dense model make the learned method pay?
(`python -m experiments.distill`)

On mnist5k / small, per budget and seed, through the real command line (finished runs are reused):
the default learned run (both agents), the uniform static-only baseline and Torch-Pruning L1, each
fine-tuned as usual and with `--distill` (KL to the dense model's predictions added to every
fine-tuning loss). The fixed-ratio runs get as many fine-tuning epochs as the learned run (warm-up plus
one per iteration), as in experiments.peers_study. Distillation is given to the peers too: the question
is whether it helps the learned method more than the rules it must beat. Every figure is read back from
the runs' metrics.json. Writes results/distill.md.
"""
from __future__ import annotations

import shlex
import sys

import numpy as np

from experiments.agents_study import (WARMUP_EPOCHS, against, command_line, execute_parallel, load, mean_sd, runs_table,
                                     study_arguments)

METHODS = {"learned": ["--method", "both"], "uniform static-only": ["--fixed-ratios", "--method", "static-only"],
           "Torch-Pruning L1": ["--fixed-ratios", "--method", "static-only", "--torch-pruning-l1"]}
FOLDERS = {"learned": "learned", "uniform static-only": "static-uniform", "Torch-Pruning L1": "tp-l1"}
FINE_TUNING = {"plain": [], "distilled": ["--distill"]}


def plan(root: str, budgets: list[float], seeds: list[int], iterations: int) -> list[dict]:
    runs = []
    for b in budgets:
        for seed in seeds:
            for kind, method_args in METHODS.items():
                for tuning, tuning_args in FINE_TUNING.items():
                    fixed = "--fixed-ratios" in method_args
                    out = f"{root}/{FOLDERS[kind]}{'-kd' if tuning_args else ''}-{b:g}-s{seed}"
                    args = ["--dataset", "mnist5k", "--model", "small", "--budget", f"{b:g}", "--seed", str(seed),
                            "--iterations", str(iterations + WARMUP_EPOCHS if fixed else iterations),
                            *method_args, *tuning_args, "--out", out]
                    runs.append({"kind": kind, "tuning": tuning, "budget": b, "seed": seed, "args": args, "out": out,
                                 "command": "python -m rtsearch.train " + shlex.join(args)})
    return runs


def accuracies(runs: list[dict], kind: str, tuning: str, budget: float) -> np.ndarray:
    """Test accuracies of one method and fine-tuning at one budget, in seed order."""
    chosen = sorted((r for r in runs if (r["kind"], r["tuning"], r["budget"]) == (kind, tuning, budget)),
                    key=lambda r: r["seed"])
    return np.array([r["metrics"]["accuracy"] for r in chosen])


def verdict(runs: list[dict], tuning: str, budget: float) -> str:
    """The learned run against the best peer, both fine-tuned by `tuning`: per-seed gains and the call."""
    peers = [k for k in METHODS if k != "learned"]
    best = max(peers, key=lambda k: accuracies(runs, k, tuning, budget).mean())
    ours, peer = accuracies(runs, "learned", tuning, budget), accuracies(runs, best, tuning, budget)
    gain, spread, clear = against(ours, peer)
    return (f"- budget {budget:g}, {tuning} fine-tuning: the best peer is {best}; learned - it, per seed: "
            f"{', '.join(f'{d:+.3f}' for d in ours - peer)} (mean {gain:+.4f}) against the larger seed-to-seed "
            f"spread {spread:.4f}: " + ("beats it by a clear margin." if clear else "not a clear win."))


def report(runs: list[dict], budgets: list[float], command: str, path: str) -> None:
    for run in runs:
        run["metrics"] = load(run)
    seeds = sorted({r["seed"] for r in runs})
    lines = ["# Knowledge distillation from the dense model: learned against its peers (mnist5k / small)", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only, one thread per run, two runs at "
             "a time); every figure is read back from the runs listed below. Test split: 1,000 images; mean ± sample "
             f"standard deviation over seeds {', '.join(map(str, seeds))}; per-seed figures in seed order. "
             "`--distill` adds KL(dense model || network) to every fine-tuning loss, for the learned run and the "
             "fixed-ratio peers alike; the fixed-ratio peers get as many fine-tuning epochs as the learned run.", "",
             "| budget | method | plain: test accuracy | per seed | distilled: test accuracy | per seed | "
             "distilled - plain, mean | MACs ratio (distilled) |", "|---|---|---|---|---|---|---|---|"]
    for b in budgets:
        for kind in METHODS:
            plain, kd = (accuracies(runs, kind, t, b) for t in FINE_TUNING)
            macs = np.mean([r["metrics"]["macs_ratio"] for r in runs
                            if (r["kind"], r["tuning"], r["budget"]) == (kind, "distilled", b)])
            lines.append(f"| {b:g} | {kind} | {mean_sd(plain)} | {' / '.join(f'{a:.3f}' for a in plain)} | "
                         f"{mean_sd(kd)} | {' / '.join(f'{a:.3f}' for a in kd)} | {np.mean(kd - plain):+.4f} | "
                         f"{macs:.4f} |")
    lines += ["", "Verdict (computed; the target is a mean gain over the best peer larger than the larger "
              "seed-to-seed spread):", *(verdict(runs, t, b) for b in budgets for t in FINE_TUNING), "", "## Runs", "",
              *runs_table(runs)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    prog = "python -m experiments.distill"
    args = study_arguments(prog, __doc__.splitlines()[0], "runs/distill", "0.08,0.05",
                           "results/distill.md").parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    runs = plan(args.runs, budgets, [int(s) for s in args.seeds.split(",")], args.iterations)
    execute_parallel(runs, args.jobs)
    report(runs, budgets, command_line(prog, argv), args.report)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
