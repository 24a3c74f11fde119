"""One ingredient of the published method at a time (`python -m experiments.paper_ablation`): `--method paper` with
one of its ingredients swapped for `--method both`'s, over seeds; a page of its own, or the ablation section of
results/paper.md (`python -m experiments.paper_study --ablation`). What each swap changes is `DESCRIBED`; the page
describes the swaps it ran (`intro`).
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from experiments import paper_study as study
from experiments.agents_study import against, command_line
from rtsearch.cli import ArgumentParser, fail, fraction

PROG = "python -m experiments.paper_ablation"
PAPER, NO_MEMORY, MEAN_BUDGET = "paper", "paper, no memory across layers", "paper, budget on the mean"
REWARD, SCHEDULE = "paper, both's reward", "paper, both's schedule"
PRUNER = "paper, both's trade-off pruner"
STATIC_SHARE = 0.78         # the paper's second operating point: the share of the parameters its static side keeps
STATIC_BUDGET = f"paper, static budget {STATIC_SHARE:g}"
NESTED_STATIC = f"paper, both's trade-off pruner, static budget {STATIC_SHARE:g}"
KINDS = [PAPER, NO_MEMORY, MEAN_BUDGET, REWARD, SCHEDULE, PRUNER, STATIC_BUDGET, NESTED_STATIC]
# --kinds: the short names of what runs beside `paper`
SHORT = {"memory": NO_MEMORY, "budget": MEAN_BUDGET, "reward": REWARD, "schedule": SCHEDULE, "pruner": PRUNER,
         "static-budget": STATIC_BUDGET, "pruner-static-budget": NESTED_STATIC}
# both's schedule: ten rounds of one agents' update then one fine-tuning epoch, against the paper's five outer
# epochs of 4 RL then 2 backbone epochs: the same 10 backbone epochs, half the RL epochs
FLAGS = {PAPER: [], NO_MEMORY: ["--no-paper-recurrent"], MEAN_BUDGET: ["--paper-budget", "mean"],
         REWARD: ["--paper-reward", "lagrangian"],
         SCHEDULE: ["--paper-epochs", "10", "--paper-rl-epochs", "1", "--paper-backbone-epochs", "1"],
         PRUNER: ["--paper-pruner", "nested"],
         STATIC_BUDGET: ["--paper-static-budget", f"{STATIC_SHARE:g}"],
         NESTED_STATIC: ["--paper-pruner", "nested", "--paper-static-budget", f"{STATIC_SHARE:g}"]}
FOLDERS = {PAPER: "paper", NO_MEMORY: "paper-nolstm", MEAN_BUDGET: "paper-meanbudget", REWARD: "paper-lagrangian",
           SCHEDULE: "paper-alternating", PRUNER: "paper-nested", STATIC_BUDGET: f"paper-static{STATIC_SHARE:g}",
           NESTED_STATIC: f"paper-nested-static{STATIC_SHARE:g}"}
SWAPPED = {NO_MEMORY: "recurrence: the paper's LSTM across layers against `both`'s policy without memory",
           MEAN_BUDGET: "budget form: the paper's soft wall per input against `both`'s budget on the mean",
           REWARD: "runtime reward: the paper's -CE / m plus its soft wall per input against `both`'s -CE - beta c, "
                   "beta by dual ascent on the validation mean MACs after each outer epoch (no calibration shift)",
           SCHEDULE: "schedule: the paper's 5 outer epochs of 4 RL then 2 backbone epochs against `both`'s 10 rounds "
                     "of one agents' update then one backbone epoch (the same 10 backbone epochs, half the RL "
                     "epochs)",
           PRUNER: "trade-off pruner: the paper's two top-k masks with what one agent alone prunes split by dpratio "
                   "against `both`'s runtime keep set inside the static one, ranked by lam u_r + (1 - lam) u_s",
           STATIC_BUDGET: f"the paper's second operating point: the static agent's own budget of {STATIC_SHARE:g} of "
                          f"the parameters against the code's static budget tied to the runtime one",
           NESTED_STATIC: f"the second operating point under `both`'s trade-off pruner: the static agent's own budget "
                          f"of {STATIC_SHARE:g} of the parameters, the channels computed min(k_r, k_s)"}
# what each run is, as the page describes it: its name there, then why (its flags are FLAGS')
DESCRIBED = {PAPER: ("`paper`", "the same run as experiments.paper_study's, reused from its folder"),
             NO_MEMORY: ("no memory across layers", "both agents feed-forward: the LSTM's 128 cells replaced by a "
                         "layer of 128 units, each layer decided from what it sees there"),
             MEAN_BUDGET: ("budget on the mean", "the runtime reward's soft wall on the batch's mean MACs, each input "
                           "charged its first-order share, as `both` binds the mean over inputs"),
             REWARD: ("both's reward", "the runtime reward -CE - beta c per input, beta moved by dual ascent on the "
                      "validation mean MACs after each outer epoch, from `both`'s start 1 and step 2"),
             SCHEDULE: ("both's schedule", "ten rounds of one agents' update then one backbone epoch, as `both` "
                        "alternates, against five outer epochs of 4 RL then 2 backbone epochs"),
             PRUNER: ("both's trade-off pruner", "the static keep set as the static agent picks it, the runtime "
                      "side's channels inside it, ranked by lam u_r + (1 - lam) u_s each min-max scaled over the set, "
                      "instead of the dpratio split of what one agent alone prunes; the channels computed number "
                      "min(k_r, k_s), so both agents' centres still meet the budget"),
             STATIC_BUDGET: ("and, not a swap, the paper's second operating point", f"the static agent centred on the "
                             f"uniform width that stores {STATIC_SHARE:g} of the parameters and capped there; the "
                             f"paper reports 91.07 % on CIFAR-10 / M-CifarNet at 3.92 times fewer MACs with "
                             f"{STATIC_SHARE:g} of the parameters, against 91.33 % runtime only"),
             NESTED_STATIC: ("the same operating point under both's trade-off pruner", "the channels computed are "
                             "min(k_r, k_s), so the static side's wider centre no longer asks the runtime side to keep "
                             "fewer channels than its own centre")}
MODEL_NAMES = {"small": "small", "mcifarnet": "mcifarnet (the paper's M-CifarNet)"}
NOT_SWAPPED = ("What the swaps leave as they are: the trade-off pruner swap keeps the agents' actions as the paper's "
               "keep fractions over all channels (`both`'s are ratios inside the static keep set), so that the "
               "channels computed, min(k_r, k_s), are the budget's width at both agents' centres; it ranks by the "
               "dense model's lam on the paper's signed gates, min-max scaled where `both` divides its non-negative "
               "importances by their maximum. The reward swap keeps the paper's static reward and leaves out "
               "`both`'s calibration shift, which moves the runtime agent's actions after training.")


def kinds_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHORT]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"--kinds takes names of {', '.join(SHORT)} separated by commas, e.g. "
                                         f"reward,pruner; got {text!r}")
    return [SHORT[n] for n in names]


def arguments() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=study.seeds_list, default=[0, 1, 2], help="seeds, e.g. 0,1,2 (default)")
    p.add_argument("--budget", type=fraction("--budget"), default=0.255, help="MACs budget in (0, 1]; default 0.255")
    p.add_argument("--model", choices=study.MODELS, default="small", help="backbone on mnist5k; default small")
    p.add_argument("--jobs", type=study.jobs_count, default=2, help="runs at a time, one torch thread each; default 2")
    p.add_argument("--kinds", type=kinds_list, default=KINDS[1:], help="what runs beside `paper`, comma-separated, "
                   f"of {', '.join(SHORT)}; default all")
    p.add_argument("--runs-dir", default="runs/paper-study", help="folder of the runs (finished ones are reused, "
                   "`paper` ones with experiments.paper_study)")
    p.add_argument("--out", default="runs/paper-ablation.md", help="the page written (the ablation kept in "
                   "results/ is the second part of results/paper.md: experiments.paper_study --ablation)")
    p.add_argument("--no-train", action="store_true", help="train nothing: write the page from the finished runs")
    return p


def planned(root: str, kind: str, seed: int, budget: float, model: str = "small") -> dict:
    out = f"{root}/{FOLDERS[kind]}-{budget:g}-s{seed}"
    args = ["--method", "paper", *FLAGS[kind], *study.base(model), "--budget", f"{budget:g}", "--seed", str(seed),
            "--out", out]
    return {"kind": kind, "seed": seed, "budget": budget, "model": model, "args": args, "out": out,
            "command": "python -m rtsearch.train " + " ".join(args)}


def plan(root: str, seeds: list[int], budget: float, kinds: list[str] = KINDS[1:],
         model: str = "small") -> list[dict]:
    return [planned(root, kind, seed, budget, model) for kind in KINDS if kind == PAPER or kind in kinds
            for seed in seeds]


def swap_lines(at: dict[str, list[dict]], kind: str, budget: float) -> list[str]:
    """The verdict on one swap: accuracy against `paper` per seed, the budget, the per-input spread."""
    ours = {x["seed"]: x for x in at[kind]}
    base = {x["seed"]: x for x in at[PAPER]}
    seeds = sorted(ours.keys() & base.keys())
    if not seeds:
        return [f"- {SWAPPED[kind]}: no seed where both finished."]
    a, b = (np.array([d[s]["accuracy"] for s in seeds]) for d in (ours, base))
    gain, spread, _ = against(a, b)
    gain = round(gain, 4) + 0.0
    within = sum(ours[s]["macs_ratio"] <= budget + 1e-9 for s in seeds)
    if len(seeds) < 2:
        verdict = "one seed: no verdict"
    elif abs(gain) > spread and within < len(seeds):
        verdict = f"{'higher' if gain > 0 else 'lower'} by more than the seed spread, at other MACs (below)"
    elif abs(gain) > spread:
        verdict = f"the swap {'helps' if gain > 0 else 'hurts'}: the difference is larger than the seed spread"
    else:
        verdict = "no difference beyond the seed spread, so not shown to matter at this many seeds"
    same = max(int(np.sum(a > b)), int(np.sum(a < b)))
    verdict += f" ({'higher' if gain > 0 else 'lower'} in {same} of {len(seeds)} seeds)" if gain else ""
    macs = [np.mean([d[s]["macs_ratio"] for s in seeds]) for d in (ours, base)]
    std = [ours[s]["macs_ratio_std"] for s in seeds if ours[s]["macs_ratio_std"] is not None]
    over = (f" Over the MACs budget in {len(seeds) - within} of {len(seeds)} seeds: an accuracy bought with MACs "
            f"the budget does not allow, not a like-for-like gain." if within < len(seeds) else "")
    return [f"- {SWAPPED[kind]} ({kind}): test accuracy minus `paper`'s per seed ({', '.join(map(str, seeds))}) "
            f"{', '.join(f'{d:+.3f}' for d in a - b)}; mean {gain:+.4f} against the larger seed-to-seed standard "
            f"deviation {spread:.4f}: {verdict}. MACs ratio {macs[0]:.4f} against {macs[1]:.4f}, within the budget "
            f"in {within} of {len(seeds)} seeds" + (f"; per-input MACs std {', '.join(f'{s:.4f}' for s in std)}"
                                                     if std else "") + "." + over]


def operating_point_lines(runs: list[dict]) -> list[str]:
    """Why the static budget of its own weighs on the runtime side, from the widths a run of it recorded: the
    channels both merged masks keep number dpratio k_r + (1 - dpratio) k_s, so meeting the runtime width w_r with
    the static side at w_s asks the runtime side for k_r = (w_r - (1 - dpratio) w_s) / dpratio."""
    for run in runs:
        m = study.read_metrics(run["out"]) if run["kind"] == STATIC_BUDGET else None
        if m and m.get("static_width_budget") is not None:
            w_r, w_s, d = m["width_budget"], m["static_width_budget"], m["config"]["paper_dpratio"]
            share = m["config"]["paper_static_budget"]
            k_r = (w_r - (1 - d) * w_s) / d if d > 0 else float("nan")
            return [f"- Why the second operating point weighs on the runtime side: its static agent centres on width "
                    f"{w_s:.4f} ({share:g} of the parameters), the runtime one on {w_r:.4f} (the MACs budget). At "
                    f"dpratio {d:g} the channels both keep number dpratio k_r + (1 - dpratio) k_s, so meeting the "
                    f"budget's width with the static side at its centre asks the runtime side for a keep fraction of "
                    f"{k_r:.3f}, against the clamp's floor of 0.1 and its own centre of {w_r:.4f} (seed "
                    f"{run['seed']}'s run)."]
    return []


def intro(runs: list[dict]) -> str:
    """What the page's runs are: the backbone they ran on and each kind among them, in KINDS' order."""
    kinds = [k for k in KINDS if any(r["kind"] == k for r in runs)]
    head = (f"On mnist5k / {MODEL_NAMES[runs[0]['model']]} at one MACs budget (default 0.255, the paper's runtime "
            f"operating point, 1 / 3.92 of the dense MACs), per seed, through the real command line, every other "
            f"setting at its default:")
    items = [f"- {DESCRIBED[k][0]}: `{' '.join(FLAGS[k]) or 'rtsearch.train --method paper'}` ({DESCRIBED[k][1]})"
             for k in kinds]
    return "\n".join([head, *(item + ";" for item in items[:-1]), items[-1] + ".",
                      "Each swap is read against `paper` seed by seed: test accuracy, MACs, how much the cost varies "
                      "from input to input."])


def report(runs: list[dict], budget: float, command: str, path: str) -> None:
    """This study's page of its own."""
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"# The published method, one ingredient at a time: mnist5k / {runs[0]['model']}, budget {budget:g}, "
             f"seeds {', '.join(map(str, seeds))}", "", intro(runs), "",
             "Produced by", "", "```", command, "```", "",
             "on the 2-core development machine (CPU only, one torch thread a run, the runs trained several at a time "
             "and beside other work, so wall times compare poorly from run to run). Every figure is read back from "
             "the runs' metrics.json; test split; mean ± sample standard deviation over the seeds that finished.", "",
             *section(runs, budget, "##")]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def section(runs: list[dict], budget: float, heading: str) -> list[str]:
    """The ablation's tables, its verdict per swap and its commands, under headings of level `heading` ("##")."""
    for run in runs:
        run["figures"] = study.figures(run)
    kinds = [k for k in KINDS if any(r["kind"] == k for r in runs)]
    at = {k: [] for k in kinds}
    for run in sorted(runs, key=lambda r: r["seed"]):
        if run["figures"] is not None:
            at[run["kind"]].append({**run["figures"], "seed": run["seed"]})
    missing = [r for r in runs if r["figures"] is None]
    lines = []
    if missing:
        lines += ["**Missing (not finished when this page was written):** "
                  + "; ".join(f"{r['kind']}, seed {r['seed']} (`{r['out']}`)" for r in missing) + ".", ""]
    lines += [*study.MEANS_HEADER, *(study.mean_row(kind, at[kind]) for kind in kinds)]
    lines += ["", "| seed | run | test accuracy | MACs ratio | per-input MACs std | static-only params ratio | "
              "wall time | run folder |", "|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: (r["seed"], KINDS.index(r["kind"]))):
        x = run["figures"]
        if x is None:
            lines.append(f"| {run['seed']} | {run['kind']} | missing | | | | | `{run['out']}` |")
            continue
        lines.append(f"| {run['seed']} | {run['kind']} | {x['accuracy']:.4f} | {x['macs_ratio']:.4f} | "
                     f"{study.cell(x['macs_ratio_std'])} | {study.cell(x['static_params_ratio'])} | "
                     f"{study.minutes(x['wall'])} | `{run['out']}` |")
    return lines + ["", f"{heading} Verdict per swapped ingredient, and the second operating point", "",
                    "A difference counts only where its mean is larger than the larger of the two seed-to-seed "
                    "standard deviations.", "", *(line for kind in kinds[1:] for line in swap_lines(at, kind, budget)),
                    *operating_point_lines(runs), "", NOT_SWAPPED, "", f"{heading} Commands", "",
                    *(f"- `{r['command']}`" for r in runs)]


def execute_all(runs: list[dict], jobs: int, train: bool) -> None:
    """Every planned run, `jobs` at a time (a finished one reused)."""
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda ir: study.execute(ir[1], f"[ablation {ir[0]}/{len(runs)}]", [], train),
                      enumerate(runs, 1)))


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    if not args.runs_dir.strip():
        fail("--runs-dir must name a folder", "experiments.paper_ablation")
    runs = plan(args.runs_dir.rstrip("/"), args.seeds, args.budget, args.kinds, args.model)
    execute_all(runs, args.jobs, not args.no_train)
    report(runs, args.budget, command_line(PROG, argv), args.out)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
