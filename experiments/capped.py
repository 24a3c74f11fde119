"""The ladder under a parameter budget, and with a narrower policy (`python -m experiments.capped`).

Without a cap the ladder stores 0.25 to 0.6 of the dense parameters (its rungs and its policy), where one
Torch-Pruning L1 network stores 0.04 to 0.07. `--param-budget` caps it: the agent may re-run only on rungs that
fit with the cheap one and the policy (rtsearch.methods.ladder.dearer_rungs), and the threshold cascade it is set
against searches only pairs of rungs that fit. The policy (two hidden layers of `--rerun-width`, 64 by default)
takes about 0.08 of this small network's parameters, which the cascade does not pay. Per budget and seed this
study reuses the rungs of the ladder runs of experiments.peers_study (copied, then `--resume`: only the agent is
trained again) under each SETTING, and sets each against the same seed's threshold cascade and Torch-Pruning L1
run. Writes results/ladder-capped.md.
"""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from experiments.agents_study import (against, command_line, execute_parallel, load, mean_sd, runs_table,
                                     study_arguments)

SETTINGS = {     # name: (folder tag, --param-budget, --rerun-width); the first is the peers study's own run
    "no cap, width 64 (the ladder runs)": ("", 1.0, 64),
    "cap 0.25, width 64": ("p0.25-", 0.25, 64),
    "cap 0.15, width 64": ("p0.15-", 0.15, 64),
    "no cap, width 16": ("w16-", 1.0, 16),
    "cap 0.15, width 16": ("w16-p0.15-", 0.15, 16),
}


def plan(root: str, budgets: list[float], seeds: list[int], iterations: int) -> list[dict]:
    runs = []
    for b in budgets:
        for seed in seeds:
            for name, (tag, cap, width) in SETTINGS.items():
                out = f"{root}/ladder-{tag}{b:g}-s{seed}"
                args = ["--dataset", "mnist5k", "--model", "small", "--iterations", str(iterations),
                        "--budget", f"{b:g}", "--seed", str(seed), "--method", "ladder", "--out", out]
                if tag:
                    args += ["--param-budget", f"{cap:g}", "--rerun-width", str(width), "--resume"]
                runs.append({"setting": name, "budget": b, "seed": seed, "out": out, "args": args,
                             "source": f"{root}/ladder-{b:g}-s{seed}",
                             "command": "python -m rtsearch.train " + " ".join(args)})
    return runs


def with_rungs(run: dict) -> None:
    """A capped run starts from its source ladder run's rungs and settings (run.json), unless it has begun."""
    if run["out"] != run["source"] and not os.path.isdir(os.path.join(run["out"], "rungs")):
        os.makedirs(run["out"], exist_ok=True)
        shutil.copytree(os.path.join(run["source"], "rungs"), os.path.join(run["out"], "rungs"))
        shutil.copy(os.path.join(run["source"], "run.json"), run["out"])


def report(runs: list[dict], tp_l1: dict, budgets: list[float], seeds: list[int], command: str) -> str:
    lines = ["# The ladder under a parameter budget, and with a narrower policy", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only, one thread per run); every "
             "figure is read back from the runs listed below. mnist5k / small, test split 1,000 images, mean ± "
             "sample standard "
             f"deviation over seeds {', '.join(map(str, seeds))}. Each capped or narrower run reuses the rungs of the "
             "ladder run of the same budget and seed (copied, then `--resume`: the agent is trained again). Params "
             "ratio: the rungs the deployed model keeps and its policy. The threshold cascade is each run's own "
             "(`metrics.json`), under the same cap and without a policy to store. Torch-Pruning L1: the peers study's "
             "run of the same seed (one network, no policy).", ""]
    for b in budgets:
        tp = np.array([tp_l1[(b, s)]["accuracy"] for s in seeds])
        lines += [f"## Budget {b:g}", "",
                  f"Torch-Pruning L1: {mean_sd(tp)}, "
                  f"MACs ratio {np.mean([tp_l1[(b, s)]['macs_ratio'] for s in seeds]):.4f}, "
                  f"params ratio {np.mean([tp_l1[(b, s)]['params_ratio'] for s in seeds]):.3f}.", "",
                  "| setting | test accuracy | MACs ratio (max) | MACs CV | params ratio (max) | "
                  "threshold cascade, same cap "
                  "| ladder - cascade, per seed | ladder - Torch-Pruning L1, per seed |",
                  "|---|---|---|---|---|---|---|---|"]
        verdicts = []
        for name in SETTINGS:
            at = sorted((r for r in runs if r["setting"] == name and r["budget"] == b), key=lambda r: r["seed"])
            m = [r["metrics"] for r in at]
            acc = np.array([x["accuracy"] for x in m])
            cascade = np.array([x["cascade"]["accuracy"] for x in m])
            macs, params = [x["macs_ratio"] for x in m], [x["params_ratio"] for x in m]
            lines.append(f"| {name} | {mean_sd(acc)} | {np.mean(macs):.4f} ({max(macs):.4f}) | "
                         f"{np.mean([x['macs_ratio_std'] / x['macs_ratio'] for x in m]):.3f} | "
                         f"{np.mean(params):.3f} ({max(params):.3f}) | {mean_sd(cascade)} | "
                         f"{', '.join(f'{d:+.3f}' for d in acc - cascade)} | "
                         f"{', '.join(f'{d:+.3f}' for d in acc - tp)} |")
            for other, peer in (("the threshold cascade under the same cap", cascade), ("Torch-Pruning L1", tp)):
                gain, spread, clear = against(acc, peer)
                verdicts.append(f"- {name} against {other}: mean {gain:+.4f}, larger seed-to-seed spread {spread:.4f}: "
                                f"{'a clear gain' if clear else 'not a clear gain'}.")
        lines += ["", *verdicts, ""]
    lines += ["## Runs", "", *runs_table(runs)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = study_arguments("python -m experiments.capped", __doc__.splitlines()[0], "runs/any-budget", "0.08,0.05",
                        "results/ladder-capped.md")
    args = p.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = plan(args.runs, budgets, seeds, args.iterations)
    tp_runs = {(b, s): {"out": f"{args.runs}/tp-l1-{b:g}-s{s}"} for b in budgets for s in seeds}
    missing = [r["source"] for r in runs if not os.path.isfile(os.path.join(r["source"], "metrics.json"))]
    missing += [r["out"] for r in tp_runs.values() if not os.path.isfile(os.path.join(r["out"], "metrics.json"))]
    if missing:
        print(f"error: no finished run in {missing[0]}: make the ladder and Torch-Pruning L1 runs first with python -m "
              f"experiments.peers_study --budgets {args.budgets} --seeds {args.seeds} --runs {args.runs}",
              file=sys.stderr)
        return 2
    for run in runs:
        with_rungs(run)
    execute_parallel(runs, args.jobs)
    for run in runs:
        run["metrics"] = load(run)
    tp_l1 = {key: load(run) for key, run in tp_runs.items()}
    os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
    with open(args.report, "w") as f:
        f.write(report(runs, tp_l1, budgets, seeds, command_line("python -m experiments.capped", argv)))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
