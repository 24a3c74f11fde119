"""Do channel counts rounded to multiples of 4, 8 or 16 (Torch-Pruning's `round_to`) answer faster at equal MACs on
this CPU? (`python -m experiments.round_to`): writes results/round-to.md.

A statically pruned network's latency depends on its widths, not on its weights, so no training is needed: per backbone,
the uniform keep counts that meet each MACs budget (what a Torch-Pruning L1 run keeps at that budget,
rtsearch.net.baseline.uniform_ratios) are rounded to the nearest multiple of m (halves up, at least m, at most the
layer's width: rtsearch.net.baseline.rounded, as `--round-to` rounds); each network is built at those widths, compiled
as a deployed static-only model is (the skip-path network as TorchScript, rtsearch.deploy.compiled.network) and timed on
one thread at batch 1 (per image) and batch 64, every network once per round over several rounds (`measure`). Rounding
moves the MACs too, so each rounded network is read against the unrounded networks' latency-against-MACs curve at its
own MACs (linear interpolation): a ratio below 1 beyond the timing spread would mean rounding buys speed, not only MACs.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from experiments.agents_study import command_line
from rtsearch.bench_latency import STATIC_ONLY, timed
from rtsearch.cli import ArgumentParser
from rtsearch.deploy import compiled
from rtsearch.net.baseline import rounded, uniform_ratios
from rtsearch.net.cost import CostModel
from rtsearch.net.fast import SkipNet
from rtsearch.net.models import build_model
from rtsearch.net.pruning import keep_count

PROG = "python -m experiments.round_to"
SHAPE = (1, 28, 28)         # mnist5k
BUDGETS = [0.03, 0.05, 0.08, 0.15, 0.3, 0.5]
MULTIPLES = [1, 4, 8, 16]
BATCHES = [1, 64]
POOL = 16                   # batch 1: images timed one after another per call


def arguments() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--models", default="small,mcifarnet", help="backbones, comma-separated (default small,mcifarnet)")
    p.add_argument("--runs", type=int, default=10, help="timed calls per network and round (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="rounds over all networks (default 5)")
    p.add_argument("--out", default="results/round-to.md", help="the page written")
    return p


def networks(model: str) -> list[tuple[dict, torch.jit.ScriptModule]]:
    """Per budget and multiple: what is timed (its widths and MACs ratio) and its compiled network."""
    dense = build_model(model, SHAPE, 10, predictors=False)
    cost = CostModel(dense, predictors=False)
    built = []
    for budget in BUDGETS:
        static, _ = uniform_ratios(cost, budget, STATIC_ONLY)
        counts = keep_count(static, cost.widths)
        for m in MULTIPLES:
            kept = rounded(counts, cost.widths, m)          # as `rtsearch.train --round-to m` rounds
            widths = [int(k) for k in kept]
            meta = {"model": model, "budget": budget, "multiple": m, "widths": widths,
                    "macs_ratio": float(cost.macs_ratio(kept[None], kept)[0])}
            built.append((meta, compiled.network(SkipNet(build_model(model, SHAPE, 10, widths, 0.0,
                                                                     predictors=False)), SHAPE)))
    return built


def measure(model: str, runs: int, rounds: int) -> list[dict]:
    """Every network timed once per round, the rounds one after the other, so that a drift of the machine's speed
    reaches every network alike: per network and batch, the median over rounds of each round's median, and the
    interquartile range over rounds. Batch 1 is per image over POOL images, one at a time."""
    built = networks(model)
    x = torch.randn(max(BATCHES + [POOL]), *SHAPE)
    times = {}
    for r in range(rounds):
        for i, (meta, net) in enumerate(built):
            for batch in BATCHES:
                fn = ((lambda: [net(x[j:j + 1]) for j in range(POOL)]) if batch == 1  # noqa: E731
                      else (lambda: net(x[:batch])))
                with torch.no_grad():
                    times.setdefault((i, batch), []).append(timed(fn, runs, 1, per=POOL if batch == 1 else 1)
                                                            ["median_ms"])
        print(f"{model}: round {r + 1}/{rounds} timed", flush=True)
    rows = []
    for i, (meta, _) in enumerate(built):
        for batch in BATCHES:
            t = np.array(times[(i, batch)])
            q1, median, q3 = np.percentile(t, [25, 50, 75])
            rows.append({**meta, "batch": batch, "median_ms": float(median), "iqr_ms": float(q3 - q1),
                         "runs": runs * rounds})
    return rows


def against_unrounded(rows: list[dict]) -> None:
    """Each row's latency over the unrounded curve's at its MACs (None outside that curve's MACs)."""
    for r in rows:
        curve = sorted((o["macs_ratio"], o["median_ms"]) for o in rows if o["model"] == r["model"]
                       and o["batch"] == r["batch"] and o["multiple"] == 1)
        xs, ys = zip(*curve)
        inside = xs[0] - 1e-12 <= r["macs_ratio"] <= xs[-1] + 1e-12
        r["vs_unrounded"] = float(r["median_ms"] / np.interp(r["macs_ratio"], xs, ys)) if inside else None


def markdown(rows: list[dict], command: str) -> str:
    from rtsearch.bench_latency import device_name
    lines = ["# Rounded channel counts (Torch-Pruning's round_to) against latency, at equal MACs", "",
             __doc__.split("\n\n", 1)[1].strip(), "", f"Device: {device_name(torch.device('cpu'))}; torch "
             f"{torch.__version__}; one thread; random weights. Produced by:", "", f"    {command}", "",
             "| model | budget | round to | widths | MACs ratio | batch | median ms | IQR ms over rounds | against the "
             "unrounded curve at its MACs |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = "" if r["vs_unrounded"] is None else f"{r['vs_unrounded']:.2f}"
        lines.append(f"| {r['model']} | {r['budget']:g} | {r['multiple']} | {' '.join(map(str, r['widths']))} | "
                     f"{r['macs_ratio']:.4f} | {r['batch']} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {vs} |")
    lines += ["", "## Per model, batch and rounding: the mean ratio against the unrounded curve", "",
              "| model | batch | round to | rows inside the curve | mean ratio | min | max |",
              "|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        for batch in BATCHES:
            for m in MULTIPLES[1:]:
                v = [r["vs_unrounded"] for r in rows if r["model"] == model and r["batch"] == batch
                     and r["multiple"] == m and r["vs_unrounded"] is not None]
                if v:
                    lines.append(f"| {model} | {batch} | {m} | {len(v)} | {np.mean(v):.2f} | {min(v):.2f} | "
                                 f"{max(v):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    torch.manual_seed(0)
    rows = [row for model in args.models.split(",") for row in measure(model.strip(), args.runs, args.rounds)]
    against_unrounded(rows)
    with open(args.out, "w") as f:
        f.write(markdown(rows, command_line(PROG, argv)))
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
