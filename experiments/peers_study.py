"""The learned methods against the non-learned peers at tight budgets (`python -m experiments.peers_study`).

On mnist5k / small, per budget and seed, through the real command line (finished runs are reused):
- learned: `rtsearch.train --budget B --method both` (both agents); learned runtime-only and learned
  static-only: the same with `--method runtime-only` / `--method static-only`;
- uniform runtime-only and uniform static-only: `--fixed-ratios`, one ratio on every layer that
  meets the budget;
- Torch-Pruning L1: the static-only widths, its channels chosen and removed by Torch-Pruning's
  magnitude pruner (`--torch-pruning-l1`);
- learned ladder: `--method ladder`, the default method (Torch-Pruning L1 networks at 0.25 to 3.125 times B, and a
  learned per-input choice of re-running an input on a dearer one: rtsearch.methods.ladder);
- per seed, one run over the budget range RANGE (`--budget-range`): its agents calibrated onto B
  (learned, one model), and its network at the uniform ratio meeting B;
- per seed, the width-robust network without agents (experiments.robust.width_robust: the range
  run's fine-tuning over uniform widths only) at the uniform ratio meeting B (a non-learned peer), and
  the per-input oracle bound on it.
The fixed-ratio runs get as many fine-tuning epochs as the learned run (its warm-up plus one per
iteration). Every figure is read back from the runs' metrics.json and robust-B.json. Writes results/agents.md.
"""
from __future__ import annotations

import sys

import numpy as np

from experiments import robust
from experiments.agents_study import (WARMUP_EPOCHS, against, command_line, dense_confidence, execute_parallel, load,
                                     mean_sd, runs_table, spearman, study_arguments)

LADDER, CASCADE = "learned ladder", "threshold cascade over the ladder's rungs (not learned)"
PER_BUDGET = {"learned": ["--method", "both"],
              "learned runtime-only": ["--method", "runtime-only"],
              "learned static-only": ["--method", "static-only"],
              "uniform runtime-only": ["--fixed-ratios", "--method", "runtime-only"],
              "uniform static-only": ["--fixed-ratios", "--method", "static-only"],
              "Torch-Pruning L1": ["--fixed-ratios", "--method", "static-only", "--torch-pruning-l1"],
              LADDER: ["--method", "ladder"]}
FOLDERS = {"learned": "learned", "learned runtime-only": "learned-runtime", "learned static-only": "learned-static",
           "uniform runtime-only": "uniform", "uniform static-only": "static-uniform",
           # learned- and uniform- runs are those of the any-budget study
           "Torch-Pruning L1": "tp-l1", LADDER: "ladder"}
RANGE, RANGE_ARGS, RANGE_FOLDER = "0.05:0.5", ["--explore-std", "0.05"], "range-0.05-0.5-sandwich-std0.05"
ROBUST_FOLDER = "width-robust-0.05-0.5"
ONE_MODEL, ITS_NETWORK = "learned, one model over 0.05:0.5", "the one model's network, uniform (agents shaped it)"
ROBUST_UNIFORM, ORACLE = "width-robust network (no agents), uniform", "oracle bound on it (reads the labels)"
LEARNED = ["learned", LADDER, "learned runtime-only", "learned static-only", ONE_MODEL]
NON_LEARNED = ["uniform runtime-only", "uniform static-only", "Torch-Pruning L1", ROBUST_UNIFORM]
ROWS = [*LEARNED, ITS_NETWORK, *NON_LEARNED, CASCADE, ORACLE]
ATTEMPTS = ("Where a target is missed, the verdicts above say by how much. What was tried to close the gap, and what "
            "each attempt measured, is in results/agents-attempts.md, with the studies it cites (results/widths.md, "
            "results/archive/allocation.md, results/archive/band.md, results/archive/cascade.md, "
            "results/archive/rerun*.md, results/distill.md, results/ladder*.md).")


def plan(root: str, budgets: list[float], seeds: list[int], iterations: int) -> list[dict]:
    base = ["--dataset", "mnist5k", "--model", "small"]
    runs = [{"kind": "range", "budget": None, "seed": seed, "out": f"{root}/{RANGE_FOLDER}-s{seed}",
             "args": [*base, "--iterations", str(iterations), "--budget-range", RANGE, "--method", "both",
                      "--seed", str(seed), *RANGE_ARGS, "--out", f"{root}/{RANGE_FOLDER}-s{seed}"]} for seed in seeds]
    for b in budgets:
        for seed in seeds:
            for kind in PER_BUDGET:
                fixed = "--fixed-ratios" in PER_BUDGET[kind]
                args = [*base, "--iterations", str(iterations + WARMUP_EPOCHS if fixed else iterations),
                        "--budget", f"{b:g}", "--seed", str(seed), *PER_BUDGET[kind],
                        "--out", f"{root}/{FOLDERS[kind]}-{b:g}-s{seed}"]
                runs.append({"kind": kind, "budget": b, "seed": seed, "args": args, "out": args[-1]})
    for run in runs:
        run["command"] = "python -m rtsearch.train " + " ".join(run["args"])
    return runs


def rows_at(runs: list[dict], budget: float, robust_networks: dict[int, dict]) -> dict[str, list[dict]]:
    """Per row of the report, the figures of each seed at `budget` (accuracy, MACs ratio and its
    per-input std, params ratio), in seed order."""
    at = {k: [r["metrics"] for r in sorted(runs, key=lambda r: r["seed"]) if r["kind"] == k and r["budget"] == budget]
          for k in PER_BUDGET}
    for group in at.values():
        for m in group:
            macs = m["per_input"]["macs_ratio"]
            if macs.std() > 1e-9 and "spearman_confidence" not in m:     # fixed ratios: float noise only
                m["spearman_confidence"] = spearman(dense_confidence(m["config"]["seed"]), macs)
    at[CASCADE] = [cascade_figures(m) for m in at[LADDER]]
    at.update({ONE_MODEL: [], ITS_NETWORK: [], ROBUST_UNIFORM: [], ORACLE: []})
    for run in sorted((r for r in runs if r["kind"] == "range"), key=lambda r: r["seed"]):
        measured = robust.measured(run["out"], budget, run["seed"])
        params = run["metrics"]["params_ratio"]
        at[ONE_MODEL].append({**measured["learned"], "params_ratio": params})
        at[ITS_NETWORK].append({**measured["uniform"], "macs_ratio_std": 0.0, "params_ratio": params})
        network = robust_networks[run["seed"]]["budgets"][f"{budget:g}"]
        at[ROBUST_UNIFORM].append({**network["uniform"], "macs_ratio_std": 0.0, "params_ratio": 1.0})
        at[ORACLE].append({**network["oracle"], "params_ratio": 1.0})
    return at


def cascade_figures(ladder_run: dict) -> dict:
    """The threshold cascade a ladder run measured on its own rungs at its budget (metrics.json "cascade"); it
    stores the cheap and the wide rung."""
    c = ladder_run["cascade"]
    params = {r["macs_ratio"]: r["params_ratio"] for r in ladder_run["rungs"]}
    return {"accuracy": c["accuracy"], "macs_ratio": c["macs_ratio"],
            "macs_ratio_std": c["macs_ratio_cv"] * c["macs_ratio"],
            "params_ratio": params[c["cheap_macs"]] + params[c["wide_macs"]]}


def ladder_against_cascade(at: dict[str, list[dict]], budget: float) -> str:
    """The learned ladder against the fixed rule on the same rungs: what the learning itself adds."""
    ours, rule = accuracies(at[LADDER]), accuracies(at[CASCADE])
    gain, spread, clear = against(ours, rule)
    return (f"- budget {budget:g}, {LADDER} against the {CASCADE}: per seed "
            f"{', '.join(f'{d:+.3f}' for d in ours - rule)} (mean {gain:+.4f}) against the larger seed-to-seed spread "
            f"{spread:.4f}: " + ("a clear gain" if clear else "not a clear gain") + ".")


def accuracies(group: list[dict]) -> np.ndarray:
    return np.array([m["accuracy"] for m in group])


def verdict(at: dict[str, list[dict]], method: str, budget: float) -> str:
    """The learned `method` against the best non-learned peer at one budget, and its share of the room
    between that peer and the oracle bound."""
    best = max(NON_LEARNED, key=lambda k: accuracies(at[k]).mean())
    ours, peer, bound = accuracies(at[method]), accuracies(at[best]), accuracies(at[ORACLE])
    gain, spread, clear = against(ours, peer)
    room = float(np.mean(bound - peer))
    macs = [np.mean([m["macs_ratio"] for m in at[k]]) for k in (method, best)]
    return (f"- budget {budget:g}, {method}: the best non-learned peer is {best}; {method} - it, per seed: "
            f"{', '.join(f'{d:+.3f}' for d in ours - peer)} (mean {gain:+.4f}, at MACs ratio {macs[0]:.4f} against "
            f"{macs[1]:.4f}) against the larger seed-to-seed "
            f"spread {spread:.4f}: " + ("beats it by a clear margin" if clear else "not a clear win")
            + f"; share of the room up to the oracle bound ({room:+.4f}) captured: {gain / room:+.0%}.")


def report(runs: list[dict], budgets: list[float], command: str, path: str, iterations: int) -> None:
    robust_range = tuple(float(x) for x in RANGE.split(":"))
    for run in runs:
        run["metrics"] = load(run)
    seeds = sorted({r["seed"] for r in runs})
    lines = ["# The learned methods against the non-learned peers (mnist5k / small)", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only, one thread per run); every "
             "figure is read back from the runs listed below. Test split: 1,000 images; mean ± sample standard "
             f"deviation over seeds {', '.join(map(str, seeds))}. Same backbone, data split and dense model per "
             "seed; the fixed-ratio peers get as many fine-tuning epochs as the learned run (warm-up plus one per "
             "iteration). Torch-Pruning L1 keeps the uniform static-only widths and lets Torch-Pruning's "
             "MagnitudePruner (p=1) choose and remove the channels. \"learned\" is the two agents (`--method both`; "
             "the default method until the ladder replaced it).", "",
             "Learned ladder (`--method ladder`, the default method of `rtsearch.train` and `rtsearch.tune`, docs/"
             "method.md §5): Torch-Pruning L1 networks at 0.25 to 3.125 times "
             "the budget, fine-tuned as the Torch-Pruning L1 peer (so its rung at the budget is that peer's run). "
             "Every input runs on a cheap one, and an RLlib agent reading that pass's class probabilities keeps its "
             "answer or re-runs the input on a dearer one, paying both (its MACs include the policy's). Its params "
             "ratio counts "
             "the rungs it uses and the policy. The threshold cascade over its rungs is the same choice made by a "
             "confidence threshold fitted on validation, without learning (measured by each ladder run).", "",
             f"One model over {RANGE}: per seed, the run over that budget range (sandwich fine-tuning across the "
             "widths its agents choose), its agents calibrated onto each budget as `rtsearch.export --budget` does; "
             "the row after it runs the same network at the smallest uniform ratio meeting the budget. The width-"
             "robust network (no agents) is fine-tuned from the same dense model as that run fine-tunes (the same "
             "epochs of the sandwich rule), over uniform widths only: the uniform ratios of the range's ends and of "
             "a budget drawn per batch. It runs at the uniform ratio meeting each budget, and the oracle picks per "
             f"test input the cheapest of {robust.LEVELS} uniform widths of it (MACs ratios "
             f"{robust.LEVEL_MACS[0]:g} to {robust.LEVEL_MACS[1]:g}) that classifies the input correctly, within "
             "the budget on average. The oracle reads the labels: a loose upper bound, not a method. BatchNorm "
             "statistics are recomputed under each policy and width (experiments.robust).", "",
             "Per-input columns: the standard deviation of the per-input MACs ratio on the test split, its "
             "coefficient of variation (std / mean; the issue's target at 0.08 is 0.2 or more), and its Spearman "
             "correlation with the dense model's confidence on the same input (target -0.3 or lower; blank where "
             "every input costs the same).", "",
             "| budget | method | test accuracy | MACs ratio | per-input MACs std | CV | Spearman(confidence, MACs) | "
             "params ratio |",
             "|---|---|---|---|---|---|---|---|"]
    root = runs[0]["out"].rsplit("/", 1)[0]
    robust_networks = {seed: robust.width_robust(seed, robust_range, budgets, f"{root}/{ROBUST_FOLDER}-s{seed}",
                                                 iterations) for seed in seeds}
    verdicts = []
    for b in budgets:
        at = rows_at(runs, b, robust_networks)
        for kind in ROWS:
            m = at[kind]
            macs, std = np.mean([x["macs_ratio"] for x in m]), np.mean([x.get("macs_ratio_std", np.nan) for x in m])
            rho = [x["spearman_confidence"] for x in m if "spearman_confidence" in x]
            lines.append(f"| {b:g} | {kind} | {mean_sd(accuracies(m))} | {macs:.4f} | {std:.4f} | {std / macs:.3f} | "
                         f"{f'{np.mean(rho):+.3f}' if rho else ''} | {np.mean([x['params_ratio'] for x in m]):.3f} |")
        verdicts += [verdict(at, method, b) for method in LEARNED] + [ladder_against_cascade(at, b)]
    lines += ["", "Verdict per budget and learned method (computed; the target is a mean gain over every non-learned "
              "peer larger than the larger seed-to-seed spread; the share is the mean gain over the mean room "
              "between the best non-learned peer and the oracle bound):", *verdicts, "", ATTEMPTS, "", "## Runs", "",
              *runs_table(runs)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    prog = "python -m experiments.peers_study"     # its runs folder is the any-budget study's, whose runs it reuses
    args = study_arguments(prog, __doc__.splitlines()[0], "runs/any-budget", "0.15,0.08,0.05",
                           "results/agents.md").parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    runs = plan(args.runs, budgets, [int(s) for s in args.seeds.split(",")], args.iterations)
    execute_parallel(runs, args.jobs)
    report(runs, budgets, command_line(prog, argv), args.report, args.iterations)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
