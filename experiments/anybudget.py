"""One model for every budget against one model per budget (`python -m experiments.anybudget`).

On mnist5k / small, for each seed: one run over a budget range (`rtsearch.train --budget-range`),
exported at each requested budget without retraining (`rtsearch.export --budget`, which calibrates
on the validation split and measures on the test split); per budget, one learned run
(`rtsearch.train --budget B`) and the uniform runtime-only baseline (`--fixed-ratios`). Every run is
made through the real command line (finished runs and exports are reused), and every figure of
the report is read back from the runs' metrics.json and the exports' printed line. Writes
results/any-budget.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from experiments.agents_study import WARMUP_EPOCHS, execute_parallel, mean_sd, one_thread_env, reused, runs_table


def plan(root: str, budgets: list[float], budget_range: str, seeds: list[int], iterations: int,
         range_args: list[str] = (), range_label: str = "") -> list[dict]:
    """The runs of the study; `range_args` go to the range runs only, whose folders carry `range_label`."""
    base = ["--dataset", "mnist5k", "--model", "small", "--iterations", str(iterations)]
    runs = []
    label = f"-{range_label}" if range_label else ""
    for seed in seeds:
        runs.append({"kind": "range", "seed": seed, "budget": None,
                     "out": f"{root}/range-{budget_range.replace(':', '-')}{label}-s{seed}",
                     "args": [*base, "--budget-range", budget_range, "--method", "both", "--seed", str(seed),
                              *range_args]})
        for b in budgets:
            runs.append({"kind": "learned", "seed": seed, "budget": b, "out": f"{root}/learned-{b:g}-s{seed}",
                         "args": [*base, "--budget", f"{b:g}", "--method", "both", "--seed", str(seed)]})
            fixed = [*base, "--budget", f"{b:g}", "--seed", str(seed), "--fixed-ratios", "--method", "runtime-only"]
            fixed[fixed.index("--iterations") + 1] = str(iterations + WARMUP_EPOCHS)   # the same fine-tuning epochs
            runs.append({"kind": "uniform", "seed": seed, "budget": b, "out": f"{root}/uniform-{b:g}-s{seed}",
                         "args": fixed})
    for run in runs:
        run["args"] += ["--out", run["out"]]
        run["command"] = "python -m rtsearch.train " + " ".join(run["args"])
    return runs


def export_at(run: dict, budget: float) -> dict:
    """The range run's model at `budget` (rtsearch.export --budget), its printed line parsed; reused if done."""
    command = ["--checkpoint", os.path.join(run["out"], "best.pt"), "--budget", f"{budget:g}",
               "--out", os.path.join(run["out"], f"deployed-{budget:g}.pt")]

    def compute() -> dict:
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "rtsearch.export", *command], capture_output=True, text=True,
                              env=one_thread_env())
        if done.returncode != 0:
            raise SystemExit(f"export failed: {done.stderr.strip()}")
        line = done.stdout.strip().splitlines()[-1]
        return {"budget": budget, "accuracy": float(line.split("test accuracy ")[1].split(",")[0]),
                "macs_ratio": float(line.split("MACs ratio ")[1].split(" ")[0]), "seconds": time.time() - started,
                "command": "python -m rtsearch.export " + " ".join(command)}

    return reused(os.path.join(run["out"], f"export-{budget:g}.json"), compute)


def report(runs: list[dict], budgets: list[float], budget_range: str, command: str, out_md: str, jobs: int) -> None:
    for run in runs:
        with open(os.path.join(run["out"], "metrics.json")) as f:
            run["metrics"] = json.load(f)
    seeds = sorted({r["seed"] for r in runs})
    ranges = {r["seed"]: r for r in runs if r["kind"] == "range"}
    keys = [(s, b) for s in seeds for b in budgets]
    with ThreadPoolExecutor(jobs) as pool:      # `jobs` exports at a time, one thread each
        exports = dict(zip(keys, pool.map(lambda key: export_at(ranges[key[0]], key[1]), keys)))
    pick = lambda kind, b: [r["metrics"] for r in runs if r["kind"] == kind and r["budget"] == b]  # noqa: E731
    lines = ["# One model for every budget (mnist5k / small)", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only, {jobs} run(s) at a time, one "
             "thread each); every "
             "figure is read back from the runs and exports listed below. Test split: 1,000 images; mean ± sample "
             f"standard deviation over seeds {', '.join(map(str, seeds))}. The range model is one run of "
             f"`--budget-range {budget_range}`, put on each budget by `rtsearch.export --budget` (the calibration "
             "shift is found on the validation split, no retraining); the per-budget models are one learned run "
             "per budget; uniform is the fixed-ratio runtime-only baseline with the same fine-tuning epochs.", "",
             "| budget | range model accuracy | range MACs ratio (max off budget) | per-budget learned | "
             "per-budget MACs ratio | uniform | range - per-budget (per seed) | within the per-budget spread? |",
             "|---|---|---|---|---|---|---|---|"]
    for b in budgets:
        ours = [exports[(s, b)] for s in seeds]
        learned, uniform = pick("learned", b), pick("uniform", b)
        diffs = [o["accuracy"] - m["accuracy"] for o, m in zip(ours, learned)]
        spread = float(np.std([m["accuracy"] for m in learned], ddof=1)) if len(learned) > 1 else 0.0
        verdict = "yes" if abs(float(np.mean(diffs))) <= spread or np.mean(diffs) >= 0 else "no"
        lines.append(f"| {b:g} | {mean_sd([o['accuracy'] for o in ours])} | "
                     f"{np.mean([o['macs_ratio'] for o in ours]):.4f} "
                     f"({max(abs(o['macs_ratio'] - b) for o in ours):.4f}) | "
                     f"{mean_sd([m['accuracy'] for m in learned])} | "
                     f"{np.mean([m['macs_ratio'] for m in learned]):.4f} | "
                     f"{mean_sd([m['accuracy'] for m in uniform])} | {', '.join(f'{d:+.3f}' for d in diffs)} | "
                     f"{verdict} (mean {np.mean(diffs):+.4f}, spread {spread:.4f}) |")
    range_seconds = [ranges[s]["metrics"]["seconds"] for s in seeds]
    per_budget = [sum(m["seconds"] for m in (r["metrics"] for r in runs if r["kind"] == "learned" and r["seed"] == s))
                  for s in seeds]
    export_seconds = [sum(exports[(s, b)]["seconds"] for b in budgets) for s in seeds]
    lines += ["", "## Training cost", "",
              "| seed | range run (s) | exports at all budgets (s) | per-budget learned runs, all budgets (s) | "
              "one per-budget run, mean (s) |", "|---|---|---|---|---|"]
    for s, r, e, p in zip(seeds, range_seconds, export_seconds, per_budget):
        lines.append(f"| {s} | {r:.0f} | {e:.0f} | {p:.0f} | {p / len(budgets):.0f} |")
    lines += ["", f"The range run costs {np.mean(range_seconds) / (np.mean(per_budget) / len(budgets)):.2f} per-budget "
              f"runs (the target: below 2). Wall-clock seconds of runs that may have shared the two CPUs with other "
              "jobs (the per-budget runs were made earlier than the range runs, under other load).", "",
              "## The range runs' curves on the test split (evaluation budgets, as trained)", "",
              "| seed | " + " | ".join(f"{p['budget']:.3f}" for p in ranges[seeds[0]]["metrics"]["curve"]) + " |",
              "|---|" + "---|" * len(ranges[seeds[0]]["metrics"]["curve"])]
    for s in seeds:
        lines.append(f"| {s} | " + " | ".join(f"{p['accuracy']:.4f} @ {p['macs_ratio']:.4f}"
                                              for p in ranges[s]["metrics"]["curve"]) + " |")
    lines += ["", "## Runs and exports", "", *runs_table(runs)]
    for (s, b), e in sorted(exports.items()):
        lines.append(f"| export seed {s} at {b:g} | {e['accuracy']:.4f} | {e['macs_ratio']:.4f} | {e['seconds']:.0f} | "
                     f"`{e['command']}` |")
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.anybudget", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/any-budget")
    p.add_argument("--budgets", default="0.5,0.15,0.08,0.05")
    p.add_argument("--budget-range", default="0.05:0.5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--report", default="results/any-budget.md")
    p.add_argument("--range-args", default="",
                   help="extra rtsearch.train flags for the range runs, e.g. '--finetune sandwich'")
    p.add_argument("--range-label", default="sandwich",
                   help="a name for the range runs in their folders (default: sandwich, their default fine-tuning)")
    args = p.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    runs = plan(args.runs, budgets, args.budget_range, [int(s) for s in args.seeds.split(",")], args.iterations,
                shlex.split(args.range_args), args.range_label)
    order = sorted(runs, key=lambda r: {"range": 0, "learned": 1, "uniform": 2}[r["kind"]])
    execute_parallel(order, args.jobs)
    command = "python -m experiments.anybudget " + shlex.join(argv if argv is not None else sys.argv[1:])
    report(runs, budgets, args.budget_range, command.strip(), args.report, args.jobs)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
