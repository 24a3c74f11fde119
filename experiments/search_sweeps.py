"""TPE against random search, behind results/search.md (`python -m experiments.search_study`).

Runs, through the real command line, `python -m rtsearch.tune` with `--search tpe` and
`--search random` on the same space, budget and trial count for several seeds (a finished sweep is
reused, an interrupted one resumed), then reads each sweep's summary.json and asks: how many
trials, and how many iterations, did each search need to reach the best score that random search
found with the same seed? Trials count in the order they started; iterations as docs/method.md §2's
sweep iterations-to-best (earlier trials in full, the reaching trial up to the iteration that
reached it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from rtsearch.net.metrics import BEST_TOLERANCE

from rtsearch.search.names import SEARCHES


def sweep_name(prefix: str, search: str, seed: int) -> str:
    return f"{prefix}-{search}-s{seed}"


SWEEPS = os.path.join("results", "sweeps")     # committed evidence, not rtsearch.tune's default runs/sweeps


def tune_args(args, search: str, seed: int) -> list[str]:
    return ["--dataset", args.dataset, "--model", args.model, "--method", args.method, "--budget", f"{args.budget:g}",
            *(["--param-budget", f"{args.param_budget:g}"] if args.param_budget else []),
            "--num-samples", str(args.num_samples), "--max-iterations", str(args.max_iterations), "--search", search,
            "--seed", str(seed), "--name", sweep_name(args.prefix, search, seed), "--results-dir", SWEEPS]


def execute(args) -> None:
    """Run (or resume, or reuse) every sweep; each one's output goes to results/sweeps/<name>/tune.log."""
    plan = [(search, seed) for seed in args.seeds for search in SEARCHES]
    for i, (search, seed) in enumerate(plan, 1):
        name = sweep_name(args.prefix, search, seed)
        folder = os.path.join(SWEEPS, name)
        if os.path.isfile(os.path.join(folder, "summary.json")) and finished(folder):
            print(f"[{i}/{len(plan)}] reusing {folder}", flush=True)
            continue
        resume = os.path.isfile(os.path.join(folder, "sweep.json"))
        command = [sys.executable, "-m", "rtsearch.tune", *tune_args(args, search, seed),
                   *(["--resume"] if resume else [])]
        print(f"[{i}/{len(plan)}] python -m rtsearch.tune {' '.join(command[3:])}", flush=True)
        os.makedirs(folder, exist_ok=True)
        start = time.time()
        with open(os.path.join(folder, "tune.log"), "a") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"sweep {name} failed (exit {done.returncode}); see {folder}/tune.log")
        print(f"    done in {time.time() - start:.0f}s", flush=True)


def finished(folder: str) -> bool:
    with open(os.path.join(folder, "summary.json")) as f:
        return all(sw.get("finished") for sw in json.load(f)["sweeps"].values())


def load_sweep(folder: str) -> dict:
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    (sweep,) = summary["sweeps"].values()
    return sweep


def reach(sweep: dict, target: float) -> tuple[int | None, int | None]:
    """(trials, iterations) this sweep spent until a trial's validation score reached `target`
    (within the best-score tolerance); (None, None) if none did."""
    trials = sorted((t for t in sweep["trials"] if t["scores"]), key=lambda t: t["started"] or 0.0)
    spent = 0
    for n, t in enumerate(trials, 1):
        for i, s in enumerate(t["scores"], 1):
            if s >= target - BEST_TOLERANCE:
                return n, spent + i
        spent += len(t["scores"])
    return None, None


def best_score(sweep: dict) -> float:
    return max(s for t in sweep["trials"] for s in t["scores"])


def fmt_mean(values) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    sd = np.std(got, ddof=1) if len(got) > 1 else 0.0
    return f"{np.mean(got):.1f} ± {sd:.1f}" + (f" ({len(got)}/{len(values)} reached)" if len(got) < len(values) else "")


def verdict(seeds: list, tpe_trials: list, random_trials: list, num_samples: int) -> str:
    """The target, per seed: TPE reaches random search's best in at most half the trials random needed."""
    parts, met = [], 0
    for seed, t, r in zip(seeds, tpe_trials, random_trials):
        if t is None:
            parts.append(f"seed {seed}: TPE did not reach it in {num_samples} trials (random needed {r})")
            continue
        met += t <= r / 2
        parts.append(f"seed {seed}: TPE {t} trials, random {r} ({t / r:.2f} of random's)")
    return (f"Target (TPE reaches random search's best validation score in at most half the trials random needed): "
            f"met on {met} of {len(random_trials)} seeds. " + "; ".join(parts) + ".")


# The default sweep (`make run`: the ladder at budget 0.08, 8 trials, the first at the space's defaults), as
# committed: three seeds with the ladder's space of its day (lr_finetune searched too), and seed 0 with today's.
DEFAULT_SWEEPS = ["mnist5k-small-b0.08-ladder-seed0", "mnist5k-small-b0.08-ladder-seed1",
                  "mnist5k-small-b0.08-ladder-seed2", "mnist5k-small-b0.08-ladder-cached-s0"]
# what ran beside each study's sweeps, by --prefix (noted by hand when they ran)
LOAD_NOTES = {"search": (
    "**Load while the sweeps ran** (noted by hand when they ran). Ray runs trial workers at niceness 15, "
    "so they yield the CPU to any other process and a sweep's wall minutes depend on what else ran. `search-tpe-s0` "
    "ran beside plain training runs (inflated), `search-random-s0` beside the test suite, and `search-tpe-s1` beside "
    "one plain run for its first 11 minutes. `search-random-s1` (15.8 min), `search-tpe-s2` (16.9 min) and "
    "`search-random-s2` (15.5 min) had the machine to themselves, apart from one minute of a test at niceness 19 "
    "early in `search-tpe-s2`. Seed 2's sweeps ran at commit cd6931e (the same search, trial and calibration code as "
    "seeds 0 and 1). Seed 1's best score came in the first 8 trials, where TPE's start-up trials are random search's "
    "own draws, so on that seed the two searches are the same by construction."),
    "search-ladder": (
    "**Load while the sweeps ran** (noted by hand when they ran): each sweep had the machine to itself, apart from "
    "file edits and a few short commands (single test files, reports rebuilt). For each seed the TPE sweep ran "
    "first and made the seed's ten rungs (the rung cache held none for that seed); the random sweep then copied "
    "them, so TPE's wall minutes include making the rungs (each sweep's `phase_seconds` says how long)."),
}


def over_defaults(summary: dict) -> dict | None:
    """What a sweep that started from its space's defaults adds over that first trial: the test accuracy of the
    trial it chose minus the default trial's (the same seed, data and test split), and what it spent for that (the
    CPU-seconds its trials held against the default trial's, its wall time, the seconds until the chosen trial
    ended). None for a sweep that did not start from the defaults."""
    if not summary["settings"].get("defaults_first"):
        return None
    (sweep,) = summary["sweeps"].values()
    trials = sorted(sweep["trials"], key=lambda t: t["started"])
    default, best = trials[0], sweep["best"]
    chosen = next(t for t in trials if t["trial_id"] == best["trial_id"])
    per_trial = summary.get("cpus_per_trial") or 1
    spent = sweep.get("reserved_cpu_seconds") or per_trial * sum(t["seconds"] for t in trials)
    return {"seed": summary["settings"]["seed"], "searched": ", ".join(sorted(default["config"])),
            "default_id": default["trial_id"], "default_accuracy": default["accuracy"],
            "best_id": best["trial_id"], "best_accuracy": best["accuracy"],
            "gain": best["accuracy"] - default["accuracy"], "cpu_seconds": spent,
            "default_cpu_seconds": per_trial * default["seconds"], "wall": sweep["wall_seconds"],
            "to_best": chosen["started"] + chosen["seconds"] - default["started"],
            "iters_to_best": sweep["sweep_iters_to_best"], "iterations": sweep["iterations"],
            "command": summary["command"]}


def defaults_section(names: list[str]) -> list[str]:
    """results/search.md's section on the default sweep: per seed, what the search adds over the defaults and what
    it costs, from the committed sweeps `names`."""
    rows = [(name, over_defaults(json.load(open(os.path.join(SWEEPS, name, "summary.json"))))) for name in names
            if os.path.isfile(os.path.join(SWEEPS, name, "summary.json"))]
    rows = [(name, r) for name, r in rows if r is not None]
    if not rows:
        return []
    lines = ["## What the default sweep adds over its default configuration", "",
             "The default sweep (`make run`: the ladder at MACs budget 0.08, mnist5k/small, 8 trials, TPE + ASHA) "
             "starts from the space's defaults, which are `rtsearch.train`'s: its first trial is the run a user gets "
             "without any search. Per committed sweep: the test accuracy of the trial the sweep chose minus that "
             "first trial's (same seed, data split and test images), and what the sweep spent: the CPU-seconds its "
             "trials held (each trial's seconds times its CPUs) against the first trial's, its wall time, and the "
             "seconds from its first trial's start to the end of the chosen trial. Sweep iterations-to-best count "
             "the iterations until the best validation score was first reached (docs/method.md §2), whichever "
             "trial the held-out second look then chose. Read from each sweep's summary.json.", "",
             "| sweep | seed | searched | default trial test acc | chosen trial test acc | gain | CPU-seconds, "
             "all trials | the default trial's | ratio | sweep wall s | s until the chosen trial ended | "
             "sweep iters-to-best / in all |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| `{name}` | {r['seed']} | {r['searched']} | {r['default_accuracy']:.4f} | "
                     f"{r['best_accuracy']:.4f}{' (the default trial)' if r['best_id'] == r['default_id'] else ''} | "
                     f"{r['gain']:+.4f} | {r['cpu_seconds']:.0f} | {r['default_cpu_seconds']:.0f} | "
                     f"{r['cpu_seconds'] / r['default_cpu_seconds']:.1f} | {r['wall']:.0f} | {r['to_best']:.0f} | "
                     f"{r['iters_to_best']} / {r['iterations']} |")
    same_space = [r for _, r in rows if r["searched"] == rows[0][1]["searched"]]
    gains = [r["gain"] for r in same_space]
    lines += ["", f"- Over the {len(same_space)} seeds of one space ({same_space[0]['searched']}): the search adds "
              f"{', '.join(f'{g:+.4f}' for g in gains)} of test accuracy (mean {np.mean(gains):+.4f}), better in "
              f"{sum(g > 0 for g in gains)}, equal in {sum(g == 0 for g in gains)} and worse in "
              f"{sum(g < 0 for g in gains)}, for "
              f"{np.mean([r['cpu_seconds'] / r['default_cpu_seconds'] for r in same_space]):.1f} times the "
              "CPU-seconds of running the default configuration alone (its trial). One test image is 0.001 of "
              "accuracy (1,000 images); the default configuration's own test accuracy spreads "
              f"{np.std([r['default_accuracy'] for r in same_space], ddof=1):.4f} (standard deviation) over these "
              "seeds.",
              "- Commands: " + "; ".join(f"`{r['command']}`" for _, r in rows) + "."]
    return lines


def produced_by(argv: list[str]) -> list[str]:
    """The study's arguments less --report-only: the command that runs the sweeps and writes the report."""
    return [a for a in argv if a != "--report-only"]


def space_file(method: str) -> str:
    """The method's default search space, as a path from the repository root."""
    from rtsearch import methods
    from rtsearch.search import space
    return os.path.join("search_spaces", os.path.basename(space.default_path(methods.get(method))))


def write_report(args, path: str) -> None:
    rows, per_method = [], {s: {"trials": [], "iters": [], "best": [], "total_iters": [], "wall": []} for s in SEARCHES}
    for seed in args.seeds:
        sweeps = {s: load_sweep(os.path.join(SWEEPS, sweep_name(args.prefix, s, seed))) for s in SEARCHES}
        target = best_score(sweeps["random"])
        for search, sweep in sweeps.items():
            trials, iters = reach(sweep, target)
            m = per_method[search]
            m["trials"].append(trials)
            m["iters"].append(iters)
            m["best"].append(best_score(sweep))
            m["total_iters"].append(sweep["iterations"])
            m["wall"].append(sweep["wall_seconds"] or 0.0)
            best = sweep["best"] or {}
            rows.append(f"| {seed} | {search} | {best_score(sweep):.4f} | {target:.4f} | "
                        f"{trials if trials is not None else 'not reached'} | {iters if iters is not None else '-'} | "
                        f"{sweep['iterations']} | {sweep['sweep_iters_to_best']} | "
                        f"{best.get('accuracy', float('nan')):.4f} | {best.get('macs_ratio', float('nan')):.3f} | "
                        f"{(sweep['wall_seconds'] or 0) / 60:.1f} | "
                        f"`python -m rtsearch.tune {' '.join(tune_args(args, search, seed))}` |")
    lines = [
        f"# Search efficiency: TPE against random search, `--method {args.method}`",
        "",
        LOAD_NOTES.get(args.prefix, ""),
        "",
        f"Produced by `{args.command}` (it runs the sweeps below, reusing finished ones, then writes this report; "
        "`--report-only` rebuilds the report from "
        f"results/sweeps/). Same space (`{space_file(args.method)}`"
        f"{f', param_budget fixed at {args.param_budget:g}' if args.param_budget else ''}"
        f"), same trial budget ({args.num_samples} trials x up to "
        f"{args.max_iterations} iterations, ASHA on), {args.dataset}/{args.model}, MACs budget {args.budget:g}; "
        "TPE and random share each seed's data split and dense model. The target for a seed is the best "
        "validation score its random sweep found; *trials* and *iterations to reach it* count trials in start "
        "order, earlier trials' iterations in full (docs/method.md §2 sweep iterations-to-best).",
        "",
        "| method | best val score | trials to reach random's best | iterations to reach it "
        "| iterations spent in all |",
        "|---|---|---|---|---|",
    ]
    for search, m in per_method.items():
        sd = np.std(m['best'], ddof=1) if len(m['best']) > 1 else 0
        lines.append(f"| {search} | {np.mean(m['best']):.4f} ± {sd:.4f} "
                     f"| {fmt_mean(m['trials'])} | {fmt_mean(m['iters'])} | {fmt_mean(m['total_iters'])} |")
    startup = max(2, min(10, args.num_samples // 3))         # rtsearch.tune.make_searcher
    lines += ["", "Mean ± standard deviation over seeds " + ", ".join(map(str, args.seeds)) + "; wall minutes per "
              "sweep: " + ", ".join(f"{s} {np.mean(m['wall']) / 60:.1f} ± "
                                     f"{np.std(m['wall'], ddof=1) / 60 if len(m['wall']) > 1 else 0:.1f}"
                                     for s, m in per_method.items()) + ".", "",
              verdict(args.seeds, per_method["tpe"]["trials"], per_method["random"]["trials"], args.num_samples), "",
              f"With {args.num_samples} trials, TPE's first {startup} are random (its start-up trials, "
              f"drawn like random search's from the same seed), so it has {args.num_samples - startup} "
              "model-guided proposals. One validation image is 0.002 of accuracy (500 images).", "",
              "| seed | search | best val score | target (random's best) | trials to reach | iterations to reach | "
              "iterations in all | sweep iters-to-best | best trial test acc | best trial test MACs | wall min "
              "| command |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
              *([] if args.no_defaults else defaults_section(DEFAULT_SWEEPS)), ""]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}", flush=True)


def study(args) -> None:
    """Run the sweeps the parsed arguments describe (unless args.report_only), then write the report."""
    if not args.report_only:
        execute(args)
    write_report(args, args.report)
