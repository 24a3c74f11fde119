"""`--method paper` put onto its whole MACs budget after training (`python -m experiments.paper_calibrated`): does
the published method lose to uniform widths only because it spends less than it may?

Per finished default `paper` run (budgets 0.255, 0.15 and 0.08, seeds 0 to 2, per backbone), nothing trained
again: its deployed model with the runtime keep's centre moved by a shift s (keep = clamp(width + s + the decoder's
output, 0.1, 1); what the agent observes is unchanged, and the static keep, the network and its BatchNorm-free gates
stay as trained), s the largest whose validation MACs ratio stays within the budget (bisection,
rtsearch.net.baseline.budget_shift, to 2 / 2^STEPS); then test accuracy and MACs at s, against the run as trained
(s = 0, which must reproduce its metrics.json) and against uniform static-only and Torch-Pruning L1 at the budget,
same seed, from the same runs folder where they are there (experiments.paper_study's runs). The shift is this
project's calibration, as `--method both` calibrates its runtime agent; the paper has none. Writes
results/paper-calibrated.md; made again, the page keeps its hand-written "## Reading".
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from experiments.agents_study import against, command_line, mean_sd
from experiments.paper_drift import BUDGETS, kept_reading
from experiments.paper_study import MODELS, cell, read_metrics, seeds_list
from rtsearch.cli import ArgumentParser, fail

PROG = "python -m experiments.paper_calibrated"
STEPS = 12          # bisection halvings of the shift's interval [-1, 1]
PEERS = {"uniform at the budget": "uniform", "Torch-Pruning L1 at the budget": "tp-l1"}


def runs_list(text: str) -> list[tuple[str, str]]:
    """argparse type: "small:runs/paper-study,mcifarnet:runs/paper-mcifarnet"."""
    pairs = []
    for item in (t for t in text.split(",") if t.strip()):
        model, _, folder = item.partition(":")
        if model not in MODELS or not folder:
            raise argparse.ArgumentTypeError(f"--runs takes backbone:folder pairs separated by commas, the backbone "
                                             f"one of {', '.join(MODELS)}, e.g. small:runs/paper-study; got {text!r}")
        pairs.append((model, folder.rstrip("/")))
    if not pairs:
        raise argparse.ArgumentTypeError("--runs names no backbone:folder pair, e.g. small:runs/paper-study")
    return pairs


def arguments() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=runs_list, default=runs_list("small:runs/paper-study,mcifarnet:runs/paper-mcifarnet"),
                   help="backbone:folder pairs of the finished runs (default small:runs/paper-study,"
                        "mcifarnet:runs/paper-mcifarnet)")
    p.add_argument("--seeds", type=seeds_list, default=[0, 1, 2], help="seeds, e.g. 0,1,2 (default)")
    p.add_argument("--out", default="results/paper-calibrated.md", help="the page written")
    return p


def calibrate(folder: str, metrics: dict) -> dict:
    """The run as trained and at the shift that puts its validation MACs on the budget: figures on both splits."""
    from rtsearch.deploy.at_budget import run_splits
    from rtsearch.net.baseline import budget_shift
    from rtsearch.rl.paper_policy import evaluate
    model = torch.load(os.path.join(folder, "deployed.pt"), weights_only=False)
    splits, budget = run_splits(metrics["config"]), metrics["config"]["budget"]

    def at(shift: float, split) -> dict:
        model.shift = shift
        return evaluate(model, *split)

    tick = time.time()
    trained = at(0.0, splits.test)
    # budget_shift finds the smallest s whose MACs are within the budget for MACs that fall as s grows; the keep's
    # MACs rise with its shift, so it searches -shift
    shift = -budget_shift(lambda s: at(-s, splits.val)["macs_ratio"], budget, 1.0, steps=STEPS, near=0.0)
    val, test = at(shift, splits.val), at(shift, splits.test)
    return {"shift": shift, "trained": trained, "val": val, "test": test, "seconds": time.time() - tick}


def peer_accuracy(folder: str, kind: str, budget: float, seed: int) -> float | None:
    metrics = read_metrics(f"{folder}/{kind}-{budget:g}-s{seed}")
    return None if metrics is None else metrics["accuracy"]


def rows(model: str, folder: str, seeds: list[int]) -> list[dict]:
    out = []
    for budget in BUDGETS:
        for seed in seeds:
            run = f"{folder}/paper-{budget:g}-s{seed}"
            metrics = read_metrics(run)
            row = {"model": model, "budget": budget, "seed": seed, "run": run, "metrics": metrics,
                   **{name: peer_accuracy(folder, kind, budget, seed) for name, kind in PEERS.items()}}
            if metrics is not None:
                print(f"calibrating {run} onto {budget:g} ...", flush=True)
                row.update(calibrate(run, metrics))
            out.append(row)
    return out


def table(found: list[dict]) -> list[str]:
    lines = ["| backbone | budget | seed | run | shift | validation MACs, calibrated | test MACs, trained → "
             "calibrated | test accuracy, trained → calibrated | as trained reproduced | uniform at the budget | "
             "Torch-Pruning L1 at the budget |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        if r["metrics"] is None:
            lines.append(f"| {r['model']} | {r['budget']:g} | {r['seed']} | `{r['run']}` | missing | | | | | | |")
            continue
        m, t, c = r["metrics"], r["trained"], r["test"]
        same = abs(t["accuracy"] - m["accuracy"]) < 1e-6 and abs(t["macs_ratio"] - m["macs_ratio"]) < 1e-6
        lines.append(f"| {r['model']} | {r['budget']:g} | {r['seed']} | `{r['run']}` | {r['shift']:+.4f} | "
                     f"{r['val']['macs_ratio']:.4f} | {t['macs_ratio']:.4f} → {c['macs_ratio']:.4f} | "
                     f"{t['accuracy']:.4f} → {c['accuracy']:.4f} | {'yes' if same else 'no'} | "
                     f"{cell(r['uniform at the budget'])} | {cell(r['Torch-Pruning L1 at the budget'])} |")
    return lines


def reading(found: list[dict]) -> list[str]:
    """Per backbone and budget: how near the budget the calibrated runs land, and their accuracy against the run as
    trained and the peers (a difference counts where its mean exceeds the larger seed-to-seed standard deviation)."""
    lines = []
    for model in MODELS:
        for budget in BUDGETS:
            done = [r for r in found if r["model"] == model and r["budget"] == budget and r["metrics"] is not None]
            if len(done) < 2:
                continue
            calibrated = np.array([r["test"]["accuracy"] for r in done])
            macs = [r["test"]["macs_ratio"] for r in done]
            near = sum(abs(x - budget) <= 0.01 for x in macs)
            parts = [f"test MACs {min(macs):.4f} to {max(macs):.4f} ({near} of {len(done)} within 0.01 of the "
                     f"budget), accuracy {mean_sd(calibrated)}"]
            for name, key in (("as trained", None), *((n, n) for n in PEERS)):
                pairs = [(r["test"]["accuracy"], r["trained"]["accuracy"] if key is None else r[key]) for r in done
                         if key is None or r[key] is not None]
                if len(pairs) < 2:
                    continue
                ours, peer = (np.array(x) for x in zip(*pairs))
                gain, spread, _ = against(ours, peer)
                verdict = ("higher" if gain > 0 else "lower") + (" beyond" if abs(gain) > spread else " within")
                parts.append(f"{gain:+.4f} against {name} ({mean_sd(peer)}; {verdict} the larger seed-to-seed "
                             f"standard deviation {spread:.4f}, {len(pairs)} seeds)")
            lines.append(f"- {model}, budget {budget:g}: " + "; ".join(parts) + ".")
    return lines


def page(found: list[dict], command: str) -> str:
    seconds = [r["seconds"] for r in found if r["metrics"] is not None]
    return "\n".join([
        "# `--method paper` calibrated onto its whole MACs budget", "", __doc__.split("\n\n", 1)[1].strip(), "",
        "Produced by", "", "```", command, "```", "",
        "on the 2-core development machine (CPU, one torch thread)" + (f", {min(seconds):.0f} to {max(seconds):.0f} s "
                                                                      f"a run" if seconds else "") +
        ". The runs are those of results/paper.md, results/paper-0.15.md and results/paper-0.08.md (small) and of "
        "results/paper-mcifarnet.md and results/paper-mcifarnet-low.md (mcifarnet), made by the commands on those "
        "pages.", "", "## Per run", "", *table(found), "", "## Per budget", "",
        "Computed from the table above: mean ± sample standard deviation over seeds; the reading below is written by "
        "hand from them.", "", *reading(found), ""])


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    for model, folder in args.runs:
        if not os.path.isdir(folder):
            fail(f"--runs {model}:{folder}: no such folder (give the folder that holds the runs)",
                 "experiments.paper_calibrated")
    torch.set_num_threads(1)
    found = [r for model, folder in args.runs for r in rows(model, folder, args.seeds)]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(page(found, command_line(PROG, argv)) + kept_reading(args.out))
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
