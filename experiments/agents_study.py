"""The first agents study, behind results/archive/agents-first.md (`python -m experiments.agents_first`).

Runs, through the real command line, the learned runs and the fixed-ratio baselines on mnist5k /
small for several budgets and seeds (a finished run is reused), then writes the comparison, the
input-dependence figures and a plot of rewards and accuracy over iterations. Every figure in the
report is read back from the runs' metrics.json and test_per_input.npz.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


WARMUP_EPOCHS = 2  # rtsearch.config.RunConfig.warmup_epochs: the baseline gets as many fine-tuning epochs


def train_args(budget: float, seed: int, out: str, iterations: int, extra: list[str]) -> list[str]:
    return ["--dataset", "mnist5k", "--model", "small", "--budget", f"{budget:g}", "--seed", str(seed),
            "--iterations", str(iterations), "--out", out, *extra]


def plan(root: str, budgets, seeds, iterations: int, param_budget: float, param_macs_budget: float) -> list[dict]:
    runs = []
    for budget in budgets:
        for seed in seeds:
            runs.append({"kind": "learned", "budget": budget, "seed": seed,
                         "args": train_args(budget, seed, f"{root}/learned-{budget:g}-s{seed}", iterations,
                                            ["--method", "both"])})
            runs.append({"kind": "fixed", "budget": budget, "seed": seed,
                         "args": train_args(budget, seed, f"{root}/fixed-{budget:g}-s{seed}",
                                            iterations + WARMUP_EPOCHS,
                                            ["--fixed-ratios", "--method", "runtime-only"])})
    for seed in seeds:
        runs.append({"kind": "params", "budget": param_macs_budget, "seed": seed,
                     "args": train_args(param_macs_budget, seed, f"{root}/params-{param_budget:g}-s{seed}", iterations,
                                        ["--method", "both", "--param-budget", f"{param_budget:g}"])})
        runs.append({"kind": "runtime-only", "budget": param_macs_budget, "seed": seed,
                     "args": train_args(param_macs_budget, seed, f"{root}/runtime-only-{param_macs_budget:g}-s{seed}",
                                        iterations, ["--method", "runtime-only"])})
    for run in runs:
        run["out"] = run["args"][run["args"].index("--out") + 1]
        run["command"] = "python -m rtsearch.train " + " ".join(run["args"])
    return runs


def execute_one(run: dict, label: str, env: dict | None = None) -> None:
    """Run one planned `rtsearch.train` (its log in <out>/train.log), unless its metrics.json exists."""
    if os.path.isfile(os.path.join(run["out"], "metrics.json")):
        print(f"{label} reusing {run['out']}", flush=True)
        return
    print(f"{label} {run['command']}", flush=True)
    returncode, seconds = train_logged(run, env)
    if returncode != 0:
        raise SystemExit(f"run failed (exit {returncode}); see {run['out']}/train.log")
    print(f"{label} done in {seconds:.0f}s: {run['out']}", flush=True)


def train_logged(run: dict, env: dict | None = None) -> tuple[int, float]:
    """`python -m rtsearch.train <run's args>`, its output in <out>/train.log: (exit status, seconds it took)."""
    os.makedirs(run["out"], exist_ok=True)
    start = time.time()
    with open(os.path.join(run["out"], "train.log"), "w") as log:
        done = subprocess.run([sys.executable, "-m", "rtsearch.train", *run["args"]], stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    return done.returncode, time.time() - start


def reused(path: str, compute) -> dict:
    """The figures in the JSON file at `path` if a finished study wrote them, else `compute()`'s, written
    there (atomically) for the next time."""
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    from rtsearch.storage import write_json
    result = compute()
    write_json(path, result)
    return result


def one_thread_env() -> dict:
    """The environment for a subprocess that shares the CPUs with others: one torch thread (runs
    with oversubscribed threads were measured tenfold slower)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def study_arguments(prog: str, description: str, runs: str, budgets: str, report: str) -> argparse.ArgumentParser:
    """The command line of a study that plans runs per budget and seed and writes one report."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--runs", default=runs, help="folder of the runs (finished ones are reused)")
    p.add_argument("--budgets", default=budgets)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--report", default=report)
    return p


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command as a user would type it again, for the report's header."""
    return (prog + " " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()


def execute_parallel(runs: list[dict], jobs: int) -> None:
    """`execute_one` for every run, `jobs` at a time, one thread each (`one_thread_env`)."""
    env = one_thread_env()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda ir: execute_one(ir[1], f"[{ir[0]}/{len(runs)}]", env=env), enumerate(runs, 1)))


def runs_table(runs: list[dict]) -> list[str]:
    """Markdown rows: each run's folder, test accuracy, MACs ratio, seconds and command."""
    return ["| run | test accuracy | MACs ratio | seconds | command |", "|---|---|---|---|---|",
            *(f"| {r['out']} | {r['metrics']['accuracy']:.4f} | {r['metrics']['macs_ratio']:.4f} | "
              f"{r['metrics']['seconds']:.0f} | `{r['command']}` |" for r in runs)]


def execute(runs: list[dict]) -> None:
    for i, run in enumerate(runs, 1):
        execute_one(run, f"[{i}/{len(runs)}]")


def load(run: dict) -> dict:
    with open(os.path.join(run["out"], "metrics.json")) as f:
        metrics = json.load(f)
    metrics["per_input"] = dict(np.load(os.path.join(run["out"], "test_per_input.npz")))
    return metrics


def against(ours: np.ndarray, peer: np.ndarray) -> tuple[float, float, bool]:
    """Per-seed accuracies of a learned method against a peer's (same seed order): the mean gain, the larger
    seed-to-seed spread, and whether the gain clears that spread (the target a learned method must meet)."""
    spread = max(ours.std(ddof=1), peer.std(ddof=1)) if len(ours) > 1 else 0.0
    gain = float(np.mean(ours - peer))
    return gain, spread, gain > spread


def mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


@functools.lru_cache(maxsize=None)
def dense_confidence(seed: int) -> np.ndarray:
    """The dense model's confidence (max softmax) on each test input: how sure it is (computed once per seed)."""
    from rtsearch import data
    from rtsearch.net import dense
    from rtsearch.net.cost import CostModel
    from rtsearch.net.supervised import evaluate
    splits = data.load("mnist5k", seed)
    net, _ = dense.pretrained("mnist5k", "small", seed, splits, log=lambda _: None)
    return evaluate(net, CostModel(net), *splits.test)["per_input"]["confidence"].numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def plot(runs: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    budgets = sorted({r["budget"] for r in runs if r["kind"] == "learned"}, reverse=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for budget in budgets:
        group = [r["metrics"]["history"] for r in runs if r["kind"] == "learned" and r["budget"] == budget]
        for ax, key in zip(axes, ("runtime_reward", "static_reward", "accuracy")):
            curves = np.array([[row[key] for row in h] for h in group])
            x = np.arange(1, curves.shape[1] + 1)
            ax.plot(x, curves.mean(0), label=f"budget {budget:g}")
            ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.2)
    for ax, title in zip(axes, ("runtime agent: mean episode reward", "static agent: mean episode reward",
                                "network: validation accuracy")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend()
    fig.suptitle("mnist5k / small, learned runs: mean over seeds, band = min..max")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _intro_lines(study_command: str) -> list[str]:
    """How the study was made, then the head of the learned-against-fixed table."""
    return ["# The agents on mnist5k / small", "",
            f"Produced by `{study_command}` on the 2-core development machine (CPU only); every figure "
            "below is read back from the runs it lists. Test split: 1,000 images. Mean ± sample standard "
            "deviation over seeds. The learned runs get "
            f"{WARMUP_EPOCHS} warm-up epochs plus one fine-tuning epoch per iteration; the fixed-ratio "
            "baseline gets the same number of fine-tuning epochs. The learned runs deploy the runtime agent's "
            "ratios plus one shift that puts the validation MACs ratio on the budget (rtsearch/loop.py, "
            "calibration); the agent decides the allocation over layers and inputs.", "",
            "## Learned against fixed uniform ratios (runtime-only baseline)", "",
            "| budget | learned accuracy | learned MACs ratio (p95) | feasible | fixed accuracy | fixed MACs ratio | "
            "learned - fixed (per seed) |", "|---|---|---|---|---|---|---|"]


def _learned_and_fixed(runs: list[dict], budget: float) -> tuple[list[dict], list[dict]]:
    """The metrics of the learned runs and of the fixed-ratio runs at one budget, in seed order."""
    learned = [r["metrics"] for r in runs if r["kind"] == "learned" and r["budget"] == budget]
    fixed = [r["metrics"] for r in runs if r["kind"] == "fixed" and r["budget"] == budget]
    return learned, fixed


def _against_fixed_lines(runs: list[dict], budgets: list[float]) -> list[str]:
    """The rows of the learned-against-fixed table, then a computed verdict per budget."""
    lines = []
    for budget in budgets:
        learned, fixed = _learned_and_fixed(runs, budget)
        diffs = [a["accuracy"] - b["accuracy"] for a, b in zip(learned, fixed)]
        p95 = np.mean([m['macs_ratio_p95'] for m in learned])
        lines.append(f"| {budget:g} | {mean_sd([m['accuracy'] for m in learned])} | "
                     f"{mean_sd([m['macs_ratio'] for m in learned])} ({p95:.4f}) | "
                     f"{sum(m['feasible'] for m in learned)}/{len(learned)} | "
                     f"{mean_sd([m['accuracy'] for m in fixed])} | "
                     f"{np.mean([m['macs_ratio'] for m in fixed]):.4f} | {', '.join(f'{d:+.3f}' for d in diffs)} |")
    lines += ["", "Verdict per budget (computed): feasible means test MACs ratio within 0.01 of the budget or "
              "under it; a clear margin means the mean per-seed gain exceeds the larger seed-to-seed spread."]
    for budget in budgets:
        learned, fixed = _learned_and_fixed(runs, budget)
        gain = float(np.mean([a["accuracy"] - b["accuracy"] for a, b in zip(learned, fixed)]))
        spread = max(np.std([m["accuracy"] for m in group], ddof=1) for group in (learned, fixed))
        verdict = ("beats uniform by a clear margin" if gain > spread else
                   "at least as accurate as uniform on average, not by a clear margin" if gain >= 0 else
                   "below uniform on average")
        lines.append(f"- budget {budget:g}: {sum(m['feasible'] for m in learned)}/{len(learned)} feasible; "
                     f"learned - fixed {gain:+.4f} against a spread of {spread:.4f}: {verdict}.")
    return lines


def _uncalibrated_lines(runs: list[dict], budgets: list[float], uncalibrated: list[dict]) -> list[str]:
    """The same budgets and seeds without the budget calibration (none when no such runs were given)."""
    if not uncalibrated:
        return []
    lines = ["", "Without the budget calibration (the agent's own ratios deployed as they are; "
             "`--no-calibrate`; the runs in the --uncalibrated folder were made before calibration existed, at "
             "commit 0b2fa04, with otherwise the same commands), the same budgets and seeds gave:", "",
             "| budget | learned accuracy | learned MACs ratio | feasible | learned - fixed (per seed) |",
             "|---|---|---|---|---|"]
    for budget in budgets:
        group = [m for m in uncalibrated if m["budget"] == budget]
        fixed = [r["metrics"] for r in runs if r["kind"] == "fixed" and r["budget"] == budget]
        diffs = ", ".join(f"{a['accuracy'] - b['accuracy']:+.3f}" for a, b in zip(group, fixed))
        if group:
            lines.append(f"| {budget:g} | {mean_sd([m['accuracy'] for m in group])} | "
                         f"{mean_sd([m['macs_ratio'] for m in group])} | {sum(m['feasible'] for m in group)}/"
                         f"{len(group)} | {diffs} |")
    return lines


def _input_dependence_lines(runs: list[dict]) -> list[str]:
    """Per-input MACs of each learned run and their correlation with the dense model's confidence."""
    lines = ["", "## Do runtime decisions depend on the input?", "",
             "Per-input MACs ratio of the learned runs on the test split, and its Spearman correlation with the "
             "dense model's confidence (max softmax) on the same input: a negative value means inputs the dense "
             "model is less sure of get more MACs.", "",
             "| budget | seed | per-input MACs: mean | std | p5 | p95 | Spearman(confidence, MACs) |",
             "|---|---|---|---|---|---|---|"]
    confidence = {}
    for run in runs:
        if run["kind"] != "learned":
            continue
        seed = run["seed"]
        if seed not in confidence:
            confidence[seed] = dense_confidence(seed)
        macs = run["metrics"]["per_input"]["macs_ratio"]
        rho = spearman(confidence[seed], macs) if macs.std() > 0 else float("nan")
        lines.append(f"| {run['budget']:g} | {seed} | {macs.mean():.4f} | {macs.std():.5f} | "
                     f"{np.percentile(macs, 5):.4f} | {np.percentile(macs, 95):.4f} | {rho:+.3f} |")
    return lines


def _param_budget_lines(runs: list[dict], param_budget: float) -> list[str]:
    """Both agents under a parameter budget against runtime-only pruning at the same MACs budget."""
    params = [r for r in runs if r["kind"] == "params"]
    runtime_only = [r for r in runs if r["kind"] == "runtime-only"]
    lines = ["", f"## Parameter budget {param_budget:g} (both agents) against runtime-only, MACs budget "
             f"{params[0]['budget']:g}", "",
             "| run | test accuracy | MACs ratio | params ratio | stored bytes |", "|---|---|---|---|---|"]
    for name, group in ((f"both, --param-budget {param_budget:g}", params), ("runtime-only", runtime_only)):
        ms = [r["metrics"] for r in group]
        lines.append(f"| {name} | {mean_sd([m['accuracy'] for m in ms])} | "
                     f"{mean_sd([m['macs_ratio'] for m in ms])} | "
                     f"{mean_sd([m['params_ratio'] for m in ms])} | {np.mean([m['stored_bytes'] for m in ms]):,.0f} |")
    return lines


def _closing_lines(runs: list[dict], png: str) -> list[str]:
    """What falls short and what was tried, the figure, and every run with its command."""
    lines = ["", "## Where this falls short, and what was tried", "",
             "- The learned allocation stays close to uniform, so at 0.08 learning does not beat uniform pruning "
             "by a clear margin, the target of this study. The runtime agent's layer ratios move a few points "
             "from the uniform start (less pruning early, more late) and the per-input MACs spread is small "
             "(standard deviation about 0.001 to 0.005 of the dense MACs); the correlation with the dense "
             "model's uncertainty is weak (|Spearman| <= 0.13) and its sign changes with the budget.",
             "- Tried: untrained agents (their policy starts near p_max / 2 on every layer whatever the budget, "
             "so the first iterations went to finding the budget), then agents warm-started at the uniform "
             "ratios after warm-up epochs of the network there (shown here); dual "
             "ascent on rollout MACs (held the deployed policy under its budget, convexity of MACs in the "
             "kept fractions) and then on validation MACs; the deployed policy still drifted over the budget "
             "between updates, hence the calibration shift, which made every run feasible and did not cost "
             "accuracy (table above).",
             "- Not tried for lack of time: more PPO updates per iteration, an entropy bonus or larger action "
             "noise to explore per-input allocations, the LSTM policy (`--lstm`), and budgets below 0.08.",
             "", "## Rewards and accuracy over iterations", "",
             f"![rewards and accuracy]({os.path.basename(png)})", "",
             "## Runs and the commands that produced them", "",
             "| run | test accuracy | MACs ratio | params ratio | iters to best | seconds | command |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        m = run["metrics"]
        lines.append(f"| {run['out']} | {m['accuracy']:.4f} | {m['macs_ratio']:.4f} | {m['params_ratio']:.4f} | "
                     f"{m['iters_to_best']} | {m['seconds']:.0f} | `{run['command']}` |")
    return lines


def report(runs: list[dict], out_md: str, png: str, param_budget: float, study_command: str,
           uncalibrated: list[dict]) -> None:
    for run in runs:
        run["metrics"] = load(run)
    plot(runs, png)
    budgets = sorted({r["budget"] for r in runs if r["kind"] == "learned"}, reverse=True)
    lines = (_intro_lines(study_command) + _against_fixed_lines(runs, budgets)
             + _uncalibrated_lines(runs, budgets, uncalibrated) + _input_dependence_lines(runs)
             + _param_budget_lines(runs, param_budget) + _closing_lines(runs, png))
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")


def study(args, command: str) -> None:
    """Run (or with args.report_only only report) the study the parsed arguments describe."""
    runs = plan(args.runs, args.budgets, args.seeds, args.iterations, args.param_budget, args.param_macs_budget)
    if not args.report_only:
        execute(runs)
    uncalibrated = []
    if args.uncalibrated:
        for run in plan(args.uncalibrated, args.budgets, args.seeds, args.iterations, args.param_budget,
                        args.param_macs_budget):
            path = os.path.join(run["out"], "metrics.json")
            if run["kind"] == "learned" and os.path.isfile(path):
                with open(path) as f:
                    uncalibrated.append(json.load(f))
    report(runs, args.report, os.path.splitext(args.report)[0] + ".png", args.param_budget,
           command, uncalibrated)
    print(f"wrote {args.report}")
