"""The published method as written (`--method paper`) beside `both` and the non-learned peers at one MACs budget,
over seeds (`python -m experiments.paper_study`), with `--ablation` also one ingredient at a time
(experiments.paper_ablation); writes results/paper.md.

On mnist5k / small (`--model mcifarnet`: the paper's M-CifarNet), per seed, through the real command line, every
other setting at its default:
- `paper`: `rtsearch.train --method paper` (docs/method.md §6);
- `both`: `--method both`;
- the ladder: `--method ladder` (the default method);
- learned static-only: `--method static-only` (the static agent alone, nothing pruned at run time);
- uniform at the budget: `--method both --fixed-ratios`;
- Torch-Pruning L1 at the budget: `--method static-only --fixed-ratios --torch-pruning-l1`;
- uniform at the MACs `paper` spent: `--method both --fixed-ratios` at the budget the `paper` run's validation MACs
  ratio at its best outer epoch gives (rounded to 3 decimals; the test split chooses nothing), trained after it.
A run whose folder already holds metrics.json is reused, as is a finished run folder passed with --reuse whose
configuration is the planned run's (linked into the runs folder, not trained again); a reused run of another
configuration is refused. Every figure is read back from the runs' metrics.json; the wall time of a run from its
own log (train.log), else from the study's clock around the command (study.json).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np

from experiments.agents_study import against, command_line, mean_sd, one_thread_env, train_logged
from rtsearch.cli import ArgumentParser, fail, fraction

PROG = "python -m experiments.paper_study"
PAPER, BOTH, UNIFORM, TP_L1, SPENT = ("paper", "both", "uniform at the budget", "Torch-Pruning L1 at the budget",
                                      "uniform at the MACs paper spent")
LADDER, STATIC = "ladder", "learned static-only"
KINDS = [PAPER, BOTH, LADDER, STATIC, UNIFORM, TP_L1, SPENT]
FLAGS = {PAPER: ["--method", "paper"], BOTH: ["--method", "both"], LADDER: ["--method", "ladder"],
         STATIC: ["--method", "static-only"], UNIFORM: ["--method", "both", "--fixed-ratios"],
         TP_L1: ["--method", "static-only", "--fixed-ratios", "--torch-pruning-l1"],
         SPENT: ["--method", "both", "--fixed-ratios"]}
FOLDERS = {PAPER: "paper", BOTH: "both", LADDER: "ladder", STATIC: "static-only", UNIFORM: "uniform", TP_L1: "tp-l1",
           SPENT: "uniform-spent"}
MODELS = ("small", "mcifarnet")            # --model: the backbones the study plans on mnist5k
IGNORED = {"out", "mlflow_run_id"}          # configuration fields that name where a run went, not what it did
WALL = re.compile(r"(?:wall time of this run: |done in )(\d+(?:\.\d+)?) ?s")
SPREAD = 1e-3                              # a per-input MACs std under this: every input at the same widths

DESCRIPTION = [
    "`--method paper` (docs/method.md §6) is the published method of Chen, Chen and Pan (NeurIPS 2020) as written: "
    "the paper's recurrent runtime and static agents, its rewards, its trade-off pruner and its schedule, on this "
    "project's exact MACs accounting, every setting at its default (5 outer epochs, each 4 RL epochs of 28 PPO "
    "updates per agent then 2 backbone epochs). Its runtime agent chooses per input how many channels each layer "
    "computes; the overlap rule makes the static mask depend on the input, so every channel is stored (params ratio "
    "1); its static keep alone, the paper's storage figure, is the static-only params ratio column."]
ELSEWHERE = ("the mcifarnet backbone is results/paper-mcifarnet*.md (results/README.md lists the budgets measured); "
             "why `paper`'s static agent spends under its cap, and what takes seed 2 at 0.08 to the action's floor, "
             "is results/paper-static-drift.md. This page is one budget, one backbone and the paper's schedule cut "
             "to 5 outer epochs.")
TODO = ["Elsewhere: the one-ingredient swaps against `--method both` (recurrence, budget form, reward, schedule, "
        "trade-off pruner) and the paper's second operating point (the static agent's own budget of 0.78 of the "
        "parameters) are in results/paper.md, at budget 0.255 on the same seeds (`--ablation`); " + ELSEWHERE]
TODO_WITH_ABLATION = ["Below: the one-ingredient swaps against `--method both` (recurrence, budget form, reward, "
                      "schedule, trade-off pruner) and the paper's second operating point (the static agent's own "
                      "budget of 0.78 of the parameters), on the same seeds. Elsewhere: " + ELSEWHERE]


def seeds_list(text: str) -> list[int]:
    """argparse type: distinct seeds as "0,1,2"."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got {text!r}")
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds takes distinct seeds of 0 or more, e.g. 0,1,2; got {text!r}")
    return seeds


def jobs_count(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number of 1 or more; got {text!r}")
    return jobs


def arguments() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=seeds_list, default=[0, 1, 2], help="seeds, e.g. 0,1,2 (default)")
    p.add_argument("--budget", type=fraction("--budget"), default=0.255, help="MACs budget in (0, 1]; default 0.255")
    p.add_argument("--model", choices=MODELS, default="small", help="backbone on mnist5k; default small")
    p.add_argument("--jobs", type=jobs_count, default=2, help="runs at a time, one torch thread each; default 2")
    p.add_argument("--runs-dir", default="runs/paper-study", help="folder of the runs (finished ones are reused)")
    p.add_argument("--out", default="results/paper.md", help="the page written")
    p.add_argument("--reuse", default="", help="finished run folders, separated by commas, to reuse where their "
                   "configuration is a planned run's (linked into --runs-dir)")
    p.add_argument("--no-train", action="store_true", help="train nothing: write the page from the finished runs, "
                   "marking the missing ones")
    p.add_argument("--ablation", action="store_true", help="also run experiments.paper_ablation's swaps at the same "
                   "budget and seeds (in --runs-dir) and add its section to the page")
    return p


def base(model: str) -> list[str]:
    """The data and backbone every planned run names."""
    return ["--dataset", "mnist5k", "--model", model]


def planned(root: str, kind: str, seed: int, budget: float, model: str = "small") -> dict:
    out = f"{root}/{FOLDERS[kind]}-{budget:g}-s{seed}"
    args = [*FLAGS[kind], *base(model), "--budget", f"{budget:g}", "--seed", str(seed), "--out", out]
    return {"kind": kind, "seed": seed, "budget": budget, "model": model, "args": args, "out": out,
            "command": "python -m rtsearch.train " + " ".join(args)}


def plan(root: str, seeds: list[int], budget: float, model: str = "small") -> list[dict]:
    """Every run but the uniform ones at the MACs `paper` spent (planned once that run is done: `spent_run`),
    the longest first."""
    return [planned(root, kind, seed, budget, model) for kind in (PAPER, BOTH, LADDER, STATIC, UNIFORM, TP_L1)
            for seed in seeds]


def spent_budget(paper_metrics: dict) -> float:
    """The MACs ratio the `paper` run reached on validation at its best outer epoch, to 3 decimals."""
    best = [h for h in paper_metrics["history"] if h["iteration"] == paper_metrics["best_iteration"]]
    return round(best[0]["macs_ratio"], 3)


def spent_run(root: str, paper_run: dict) -> dict | None:
    metrics = read_metrics(paper_run["out"])
    return None if metrics is None else planned(root, SPENT, paper_run["seed"], spent_budget(metrics),
                                                paper_run["model"])


def read_metrics(out: str) -> dict | None:
    path = os.path.join(out, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in IGNORED}


def planned_config(run: dict) -> dict:
    """The configuration `rtsearch.train` makes of the run's arguments, as its metrics.json records it: what the
    method prunes filled in, and for `paper` its outer epochs counted as the run's iterations (Paper.start)."""
    from dataclasses import replace

    from rtsearch.methods import configured
    from rtsearch.train import parse_args
    cfg = configured(parse_args(run["args"])[0])
    if cfg.method == "paper":
        cfg = replace(cfg, iterations=cfg.paper_epochs)
    return comparable(json.loads(json.dumps(asdict(cfg))))


def same_run(config: dict, wanted: dict) -> bool:
    """A recorded configuration is the wanted one: equal on every field both hold (a field added since has its
    default, which the older run ran with)."""
    config = comparable(config)
    return all(config[k] == wanted[k] for k in config.keys() & wanted.keys())


def link_reused(run: dict, reuse: list[str]) -> None:
    """Link the first finished folder of `reuse` that ran `run`'s configuration to its folder; refuse a finished
    folder in its place that ran another one."""
    wanted = planned_config(run)
    here = read_metrics(run["out"])
    if here is not None:
        if not same_run(here["config"], wanted):
            raise SystemExit(f"{run['out']} holds a run of another configuration than `{run['command']}`: move it")
        return
    for folder in reuse:
        there = read_metrics(folder)
        if there is not None and same_run(there["config"], wanted):
            os.makedirs(os.path.dirname(run["out"]) or ".", exist_ok=True)
            if os.path.islink(run["out"]):
                os.remove(run["out"])
            os.symlink(os.path.relpath(folder, os.path.dirname(run["out"]) or "."), run["out"])
            return


def execute(run: dict, label: str, reuse: list[str], train: bool) -> None:
    """Run one planned `rtsearch.train` (its output in <out>/train.log, the study's clock in <out>/study.json),
    unless a finished run is there or in `reuse`."""
    link_reused(run, reuse)
    if read_metrics(run["out"]) is not None:
        print(f"{label} reusing {run['out']}", flush=True)
        return
    if not train:
        print(f"{label} missing (not trained: --no-train) {run['out']}", flush=True)
        return
    print(f"{label} training {run['kind']}, seed {run['seed']}: {run['command']}", flush=True)
    returncode, seconds = train_logged(run, one_thread_env())
    if returncode != 0:
        print(f"{label} FAILED (exit {returncode}) after {seconds:.0f} s; see {run['out']}/train.log", flush=True)
        return
    with open(os.path.join(run["out"], "study.json"), "w") as f:
        json.dump({"seconds": seconds}, f)
    print(f"{label} done in {seconds:.0f} s: {run['out']}", flush=True)


def execute_all(runs: list[dict], root: str, jobs: int, reuse: list[str], train: bool) -> list[dict]:
    """Every planned run, `jobs` at a time; after each `paper` run, the uniform run at the MACs it spent. Returns
    every run, those at the spent MACs included (one per `paper` run that finished)."""
    total = len(runs) + sum(r["kind"] == PAPER for r in runs)
    counter, spent = iter(range(1, total + 1)), []

    def one(run: dict) -> None:
        execute(run, f"[{next(counter)}/{total}]", reuse, train)
        if run["kind"] == PAPER:
            follow = spent_run(root, run)
            if follow is None:      # its budget is unknown until the paper run finishes
                print(f"[{next(counter)}/{total}] missing: {SPENT}, seed {run['seed']} (its paper run did not finish)",
                      flush=True)
                spent.append({"kind": SPENT, "seed": run["seed"], "budget": None, "out": None, "command": None})
                return
            spent.append(follow)
            execute(follow, f"[{next(counter)}/{total}]", reuse, train)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, runs))
    return runs + spent


def wall_seconds(out: str) -> tuple[float | None, str]:
    """A run's wall time and where it comes from: its own log's closing line, else the study's clock."""
    log = os.path.join(out, "train.log")
    if os.path.isfile(log):
        with open(log) as f:
            found = WALL.findall(f.read())
        if found:
            return float(found[-1]), "log"
    study = os.path.join(out, "study.json")
    if os.path.isfile(study):
        with open(study) as f:
            return float(json.load(f)["seconds"]), "study"
    return None, ""


def figures(run: dict) -> dict | None:
    """The run's figures from its metrics.json (None where it did not finish)."""
    m = None if run["out"] is None else read_metrics(run["out"])
    if m is None:
        return None
    wall, source = wall_seconds(run["out"])
    return {"accuracy": m["accuracy"], "macs_ratio": m["macs_ratio"], "macs_ratio_std": m.get("macs_ratio_std"),
            "params_ratio": m["params_ratio"], "static_params_ratio": m.get("static_params_ratio"),
            "dense_accuracy": m.get("dense_accuracy"), "loop_seconds": m.get("seconds"), "wall": wall,
            "wall_source": source, "feasible": m.get("feasible")}


def cell(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def by_kind(runs: list[dict]) -> dict[str, list[dict]]:
    """Per kind, the finished runs' figures in seed order (each with its seed)."""
    out = {k: [] for k in KINDS}
    for run in sorted(runs, key=lambda r: r["seed"]):
        if run.get("figures") is not None:
            out[run["kind"]].append({**run["figures"], "seed": run["seed"], "budget": run["budget"]})
    return out


def paired(at: dict[str, list[dict]], a: str, b: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Accuracies of `a` and `b` on the seeds both finished, in seed order."""
    seeds = sorted({x["seed"] for x in at[a]} & {x["seed"] for x in at[b]})
    pick = {k: {x["seed"]: x["accuracy"] for x in at[k]} for k in (a, b)}
    return np.array([pick[a][s] for s in seeds]), np.array([pick[b][s] for s in seeds]), seeds


def name(kind: str) -> str:
    return f"`{kind}`" if kind in (PAPER, BOTH, LADDER) else kind


def against_line(at: dict[str, list[dict]], ours_kind: str, peer: str) -> str:
    ours, theirs, seeds = paired(at, ours_kind, peer)
    if len(seeds) == 0:
        return f"- {name(ours_kind)} against {name(peer)}: no seed where both finished."
    gain, spread, _ = against(ours, theirs)
    gain = round(gain, 4) + 0.0         # no "-0.0000"
    macs = [np.mean([x["macs_ratio"] for x in at[k] if x["seed"] in seeds]) for k in (ours_kind, peer)]
    if len(seeds) < 2:
        word = "one seed: no spread to weigh it against"
    elif abs(gain) > spread:
        word = f"{'more' if gain > 0 else 'less'} accurate by more than the seed spread"
    else:
        word = "within the seed spread"
    return (f"- {name(ours_kind)} - {name(peer)}, test accuracy per seed ({', '.join(map(str, seeds))}): "
            f"{', '.join(f'{d:+.3f}' for d in ours - theirs)}; mean {gain:+.4f} against the larger seed-to-seed "
            f"standard deviation {spread:.4f}: {word} (mean MACs ratio {macs[0]:.4f} against {macs[1]:.4f}).")


def per_input_line(at: dict[str, list[dict]]) -> str | None:
    """How much `paper`'s cost varies from input to input, beside `both`'s."""
    stds = {k: [(x["macs_ratio_std"], x["macs_ratio"]) for x in at[k] if x["macs_ratio_std"] is not None]
            for k in (PAPER, BOTH)}
    if not stds[PAPER]:
        return None
    same = sum(sd < SPREAD for sd, _ in stds[PAPER])
    cv = max(sd / macs for sd, macs in stds[PAPER])
    line = (f"- Per input: `paper`'s per-input MACs standard deviation per seed is "
            f"{', '.join(f'{sd:.4f}' for sd, _ in stds[PAPER])}, at most {cv:.1%} of its mean cost")
    if stds[BOTH]:
        line += f" (`both`'s: {', '.join(f'{sd:.4f}' for sd, _ in stds[BOTH])})"
    line += (f"; in {same} of {len(stds[PAPER])} seeds every input costs the same (standard deviation under "
             f"{SPREAD:g})")
    if same == len(stds[PAPER]):
        return line + ": at this length its runtime agent acts as a learned per-layer width, not a runtime policy."
    return line + "."


def reading(at: dict[str, list[dict]], budget: float) -> list[str]:
    """The computed reading: budget met, per-input spread, accuracy against each peer and among the peers, seed
    spread, storage."""
    paper = at[PAPER]
    if not paper:
        return ["No `paper` run finished: nothing to read."]
    macs = np.array([x["macs_ratio"] for x in paper])
    within = int(np.sum(macs <= budget + 1e-9))
    gap = budget - macs.mean()
    lines = [f"- Budget: `paper` is within the budget {budget:g} on test in {within} of {len(paper)} seeds, at a MACs "
             f"ratio of {mean_sd(macs)} (per seed {', '.join(f'{m:.4f}' for m in macs)}): on average "
             f"{abs(gap):.4f} {'under' if gap >= 0 else 'over'} the budget."]
    per_input = per_input_line(at)
    lines += [per_input] if per_input else []
    lines += [against_line(at, PAPER, peer) for peer in (BOTH, LADDER, STATIC, UNIFORM, TP_L1, SPENT) if at[peer]]
    lines += [against_line(at, a, b) for a, b in ((BOTH, UNIFORM), (BOTH, TP_L1), (LADDER, TP_L1), (STATIC, TP_L1),
                                                  (UNIFORM, TP_L1)) if at[a] and at[b]]
    spreads = {k: np.std([x["accuracy"] for x in at[k]], ddof=1) for k in KINDS if len(at[k]) > 1}
    if spreads:
        widest = max(spreads, key=spreads.get)
        lines.append(f"- Seed spread: the largest seed-to-seed standard deviation of test accuracy is "
                     f"{name(widest)}'s, {spreads[widest]:.4f}; the others' are "
                     + ", ".join(f"{spreads[k]:.4f} ({name(k)})" for k in spreads if k != widest) + ".")
    static = [x["static_params_ratio"] for x in paper if x["static_params_ratio"] is not None]
    if static:
        peers = "; ".join(f"{name(k)} stores {np.mean([x['params_ratio'] for x in at[k]]):.4f}"
                          for k in (LADDER, STATIC, TP_L1, UNIFORM, SPENT) if at[k])
        lines.append(f"- Storage: `paper` stores every parameter (params ratio "
                     f"{np.mean([x['params_ratio'] for x in paper]):.4f}); its static keep alone, the paper's storage "
                     f"figure, is {mean_sd(static)} of the dense parameters; " + peers + ".")
    return lines


MEANS_HEADER = ["| method | seeds | test accuracy | MACs ratio | per-input MACs std | params ratio | static-only "
                "params ratio | wall time, mean of the runs with one |", "|---|---|---|---|---|---|---|---|"]


def mean_row(kind: str, xs: list[dict]) -> str:
    """One row under MEANS_HEADER: the figures of `kind`'s finished runs, mean ± sd over their seeds."""
    if not xs:
        return f"| {kind} | none finished | | | | | | |"
    std = [x["macs_ratio_std"] for x in xs if x["macs_ratio_std"] is not None]
    static = [x["static_params_ratio"] for x in xs if x["static_params_ratio"] is not None]
    walls = [x["wall"] for x in xs if x["wall"] is not None]
    return (f"| {kind} | {len(xs)} | {mean_sd([x['accuracy'] for x in xs])} | "
            f"{mean_sd([x['macs_ratio'] for x in xs])} | {f'{np.mean(std):.4f}' if std else ''} | "
            f"{mean_sd([x['params_ratio'] for x in xs])} | {mean_sd(static) if static else ''} | "
            f"{minutes(np.mean(walls)) if walls else ''} |")


def report(runs: list[dict], budget: float, command: str, path: str, ablation: list[dict] | None = None) -> None:
    """The page; `ablation`: experiments.paper_ablation's runs, whose section follows the reading."""
    for run in runs:
        run["figures"] = figures(run)
    at = by_kind(runs)
    seeds = sorted({r["seed"] for r in runs})
    missing = [r for r in runs if r["figures"] is None]
    dense = {x["seed"]: x["dense_accuracy"] for k in KINDS for x in at[k] if x["dense_accuracy"] is not None}
    lines = [f"# The published method as written (`--method paper`) beside `both` and the peers: mnist5k / "
             f"{runs[0]['model']}, budget {budget:g}, seeds {', '.join(map(str, seeds))}", "", *DESCRIPTION, "",
             "Produced by", "", "```", command, "```", "",
             "on the 2-core development machine (CPU only, two runs at a time with one torch thread each, the machine "
             "shared with other work at times). Every figure is read back from the runs' metrics.json; test split "
             "(1,000 images) unless said; mean ± sample standard deviation over the seeds that finished. Same data "
             "split and dense model per seed (dense test accuracy by seed: "
             f"{', '.join(f'{dense[k]:.4f} (seed {k})' for k in sorted(dense))}). Uniform: `--fixed-ratios`, "
             "uniform pruning ratios that meet the budget and no agents (rtsearch.methods.fixed); Torch-Pruning L1: "
             "the static-only uniform widths, their channels chosen and removed by Torch-Pruning's L1 magnitude "
             "pruner; the uniform run at the MACs `paper` spent takes as its budget, per seed, the `paper` run's "
             "validation MACs ratio at its best outer epoch, to 3 decimals. Every other setting is the default.", ""]
    if missing:
        lines += ["**Missing (not finished when this page was written):** "
                  + "; ".join(f"{r['kind']}, seed {r['seed']}" + (f" (`{r['out']}`)" if r["out"] else
                                                                  " (planned once its `paper` run finishes)")
                              for r in missing) + ".", ""]
    lines += ["## Mean over seeds", "", *MEANS_HEADER, *(mean_row(kind, at[kind]) for kind in KINDS)]
    lines += ["", "## Per seed", "",
              "Wall time: the run's own clock for the whole command (the closing line of its train.log) where it has "
              "one; † the study's clock around the command; blank where the run was made by hand without a log "
              "(its training loop's seconds, from metrics.json, are in the next column). The wall times are not a "
              "speed comparison: two runs shared the two cores, beside other work.", "",
              "| seed | method | MACs budget | test accuracy | MACs ratio | per-input MACs std | params ratio | "
              "static-only params ratio | wall time | training loop (s) | run |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: (r["seed"], KINDS.index(r["kind"]))):
        x = run["figures"]
        if x is None:
            shown = "" if run["budget"] is None else f"{run['budget']:g}"
            lines.append(f"| {run['seed']} | {run['kind']} | {shown} | missing | | | | | | | "
                         + (f"`{run['out']}` |" if run["out"] else "|"))
            continue
        wall = minutes(x["wall"]) + (" †" if x["wall_source"] == "study" else "")
        lines.append(f"| {run['seed']} | {run['kind']} | {run['budget']:g} | {x['accuracy']:.4f} | "
                     f"{x['macs_ratio']:.4f} | {cell(x['macs_ratio_std'])} | {x['params_ratio']:.4f} | "
                     f"{cell(x['static_params_ratio'])} | {wall} | {cell(x['loop_seconds'], 0)} | `{run['out']}` |")
    lines += ["", "## Reading", "",
              "Computed from the tables above; a difference counts only where its mean is larger than the larger of "
              "the two methods' seed-to-seed standard deviations.", "", *reading(at, budget), "",
              *(TODO if ablation is None else TODO_WITH_ABLATION), "",
              "## Commands", "", "Each run, as the study ran it (a reused run ran the same configuration):", "",
              *(f"- `{r['command']}`" for r in sorted(runs, key=lambda r: (r["seed"], KINDS.index(r["kind"])))
                if r["command"])]
    if ablation is not None:
        from experiments import paper_ablation
        lines += ["", "## The ablation: one ingredient at a time", "",
                  paper_ablation.intro(ablation), "",
                  *paper_ablation.section(ablation, budget, "###")]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    if not args.runs_dir.strip():
        fail("--runs-dir must name a folder", "experiments.paper_study")
    reuse = [p for p in args.reuse.split(",") if p]
    for folder in reuse:
        if read_metrics(folder) is None:
            fail(f"--reuse {folder}: no finished run there (no metrics.json)", "experiments.paper_study")
    root = args.runs_dir.rstrip("/")
    runs = execute_all(plan(root, args.seeds, args.budget, args.model), root, args.jobs, reuse, not args.no_train)
    ablation = None
    if args.ablation:
        from experiments import paper_ablation
        ablation = paper_ablation.plan(root, args.seeds, args.budget, model=args.model)
        paper_ablation.execute_all(ablation, args.jobs, not args.no_train)
    report(runs, args.budget, command_line(PROG, argv), args.out, ablation)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
