"""Latency against MACs, behind `python -m rtsearch.bench --latency` and results/latency.md.

For each network and budget it times, with torch.utils.benchmark after warm-up, the median and the
interquartile range of at least `runs` timed runs, at one thread and at all threads, these rows:

- dense: the plain network (BatchNorm folded, no gating), every channel computed;
- static-only: the exported network with the statically pruned channels removed, no runtime pruning;
- skip lam=0.5 / skip lam=0: runtime + static on the skip path (rtsearch.net.fast), the runtime agent
  included: at lam > 0 the kept filters are gathered, at lam = 0 they are a slice;
- replayed lam=0.5 / replayed lam=0: the same keep counts replayed without the agent (and at lam = 0
  without the importance predictors), so the difference is what the agent (and predictors) cost;
- masked: the masked network (statically pruned, every remaining channel computed, then zeroed) under
  the same policy run batched: what the deployed model runs on a batch (`deployed.masked_forward`).

Batch 1 rows give the latency per input over a pool of inputs (keep counts vary per input); batch B > 1
rows the latency of one batch, with the skip path run input by input. Each row carries the MACs ratio
it computed (docs/method.md §2; the masked row computes every statically kept channel, its figure is
nominal).

Without `--checkpoint` the networks are synthetic: random weights and an untrained runtime agent of the
trained architecture, its level calibrated so the pool meets the budget, over static ratio 0.25 on every
layer; timing does not depend on the weights, only on the keep counts. With `--checkpoint` the run's
own network, static ratios, agent and calibration shift are timed on random inputs of its shape.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time

import torch
import torch.utils.benchmark as benchmark

from rtsearch.config import Pruning
from rtsearch.net.baseline import budget_shift, uniform_ratios
from rtsearch.net.cost import CostModel
from rtsearch.net.surgery import prune_static
from rtsearch.net.fast import SkipNet
from rtsearch.net.models import GatedNet, build_model
from rtsearch.deploy import deployed

SYNTHETIC_STATIC = 0.25   # static ratio of every layer in the synthetic runtime + static rows
P_MAX = 0.95
POOL = 4                  # inputs per batch-1 timing (their keep counts differ)

STATIC_ONLY = Pruning(static=True, runtime=False)      # the static-only networks timed beside the runs


def timed(fn, runs: int, threads: int, per: int = 1) -> dict:
    """Median and IQR (ms) of `runs` timed calls of fn after warm-up, divided by `per`."""
    for _ in range(3):
        fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    times = sorted(timer.timeit(1).median * 1e3 / per for _ in range(runs))
    q = lambda f: times[min(len(times) - 1, int(f * (len(times) - 1) + 0.5))]   # noqa: E731
    return {"median_ms": q(0.5), "iqr_ms": q(0.75) - q(0.25), "runs": len(times)}


class Recorder:
    """Wraps a skip-path policy, remembering each input's ratios so they can be replayed without it."""

    def __init__(self, policy):
        self.policy, self.ratios = policy, []

    def __call__(self, t, importance, kept):
        ratio = self.policy(t, importance, kept)
        if t == 0:
            self.ratios.append([])
        self.ratios[-1].append(float(ratio))
        return ratio


class Replay:
    """Replays recorded ratios input after input; it never looks at the importances."""
    observes_importance = False

    def __init__(self, ratios):
        self.ratios, self.i = ratios, -1

    def __call__(self, t, importance, kept):
        if t == 0:
            self.i = (self.i + 1) % len(self.ratios)
        return self.ratios[self.i][t]


def without_predictors(net: GatedNet) -> GatedNet:
    """The same weights as a static-only network (lam = 0, no runtime importance predictors)."""
    plain = build_model(net.name, net.input_shape, net.head.fc.out_features, net.widths, 0.0, predictors=False)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if ".predictor." not in k})
    return plain.eval()


def synthetic(name: str, shape: tuple, budget: float, pool: torch.Tensor):
    """A random network, the static-only uniform ratio for the budget, and an untrained agent whose level
    is calibrated on `pool` to the budget over SYNTHETIC_STATIC -> (net, static-only ratios, policy, static ratios)."""
    torch.manual_seed(0)
    net = build_model(name, shape, 10, lam=0.5).eval()
    for gate in net.gates:
        gate.static_importance.data = torch.rand(gate.out_channels)
    static_only = uniform_ratios(CostModel(net, predictors=False), budget, STATIC_ONLY)[0].tolist()
    static = [SYNTHETIC_STATIC] * net.num_layers
    skip, cost = SkipNet(net, static), CostModel(net)
    policy = deployed.DeployedPolicy(deployed.untrained_module(net.num_layers, P_MAX), net, static, budget, P_MAX)

    def macs_at(shift: float) -> float:
        policy.shift = shift
        return macs_ratio(cost, [skip.run(pool[i:i + 1], policy)[1] for i in range(len(pool))], static, net)

    policy.shift = budget_shift(macs_at, budget, P_MAX)
    return net, static_only, policy, static


def macs_ratio(cost: CostModel, kept_rows: list, static_ratios, net: GatedNet) -> float:
    static_kept = torch.stack([g.static_keep(r).sum() for g, r in zip(net.gates, static_ratios)])
    return float(cost.macs_ratio(torch.tensor(kept_rows), static_kept).mean())


def rows_for(net: GatedNet, static_only, policy, static, x1: torch.Tensor, xb: torch.Tensor, runs: int,
             threads: int, device: torch.device, runtime_batch: bool = True) -> list[dict]:
    """Every row for one network: x1 is the batch-1 pool, xb one batch (or None); `runtime_batch` False
    times only dense and static-only at that batch (the runtime rows there take minutes)."""
    cost, plain = CostModel(net), without_predictors(net)
    static_cost = CostModel(net, predictors=False)
    lam0 = copy.deepcopy(net)
    lam0.lam = 0.0
    nets = {"dense": SkipNet(plain), "static-only": SkipNet(plain, static_only),
            "skip lam=0.5": SkipNet(net, static), "skip lam=0": SkipNet(lam0, static)}
    nets = {k: v.to(device) for k, v in nets.items()}
    x1, xb = x1.to(device), None if xb is None else xb.to(device)
    out = []

    def add(row, batch, stats, macs):
        out.append({"row": row, "batch": batch, "threads": threads, "macs_ratio": macs, **stats})

    def per_input(skip, pol, x):
        return lambda: [skip.run(x[i:i + 1], pol) for i in range(len(x))]

    full = [[int(w) for w in net.widths]] * len(x1)
    widths_static = lambda ratios: [[int(g.static_keep(r).sum()) for g, r in zip(net.gates, ratios)]] * len(x1)  # noqa
    with torch.no_grad():
        add("dense", 1, timed(lambda: nets["dense"].run(x1[:1]), runs, threads),
            macs_ratio(static_cost, full, [0.0] * net.num_layers, net))
        add("static-only", 1, timed(lambda: nets["static-only"].run(x1[:1]), runs, threads),
            macs_ratio(static_cost, widths_static(static_only), static_only, net))
        for lam in ("0.5", "0"):
            skip = nets[f"skip lam={lam}"]
            recorder = Recorder(policy)
            kept = [skip.run(x1[i:i + 1], recorder)[1] for i in range(len(x1))]
            macs = macs_ratio(cost, kept, static, net)
            add(f"skip lam={lam}", 1, timed(per_input(skip, policy, x1), runs, threads, len(x1)), macs)
            add(f"replayed lam={lam}", 1, timed(per_input(skip, Replay(recorder.ratios), x1), runs, threads,
                                                len(x1)), macs)
        masked_net = prune_static(net, static).eval().to(device)     # what DeployedModel runs on a batch
        add("masked", 1, timed(lambda: [deployed.masked_forward(masked_net, policy, x1[i:i + 1])
                                        for i in range(len(x1))], runs, threads, len(x1)), macs)
        if xb is not None:
            b = len(xb)
            add("dense", b, timed(lambda: nets["dense"].run(xb), runs, threads), out[0]["macs_ratio"])
            add("static-only", b, timed(lambda: nets["static-only"].run(xb), runs, threads), out[1]["macs_ratio"])
            if not runtime_batch:
                return out
            skip = nets["skip lam=0"]           # the faster skip path at batch 1 (slices, no gather)
            kept = [skip.run(xb[i:i + 1], policy)[1] for i in range(b)]
            add("skip lam=0", b, timed(per_input(skip, policy, xb), runs, threads), macs_ratio(cost, kept, static, net))
            add("masked", b, timed(lambda: deployed.masked_forward(masked_net, policy, xb), runs, threads),
                out[-1]["macs_ratio"])
    return out


def configurations(args):
    """(label, net, static-only ratios, policy, static ratios, input shape) for every timed network."""
    if args.checkpoint:
        run = deployed.load(args.checkpoint)
        policy = run.policy or deployed.FixedRatios([0.0] * run.net.num_layers)
        yield (f"{args.checkpoint} ({run.net.name}, budget {run.config.get('budget', '-')})", run.net,
               run.static_ratios, policy, run.static_ratios, run.net.input_shape, run.config.get("budget"))
        return
    for name, shape in args.networks:
        pool = torch.randn(POOL, *shape, generator=torch.Generator().manual_seed(1))
        for budget in args.budgets:
            net, static_only, policy, static = synthetic(name, shape, budget, pool)
            yield f"{name} {'x'.join(map(str, shape))} (synthetic)", net, static_only, policy, static, shape, budget


def measure(args, command: str, log=print) -> list[dict]:
    """Time every configuration at one thread and at all threads; write JSON and markdown if asked."""
    from rtsearch.device import resolve
    where = resolve(args.device)
    thread_counts = args.threads or sorted({1, torch.get_num_threads()})
    rows, started = [], time.time()
    for label, net, static_only, policy, static, shape, budget in configurations(args):
        gen = torch.Generator().manual_seed(2)
        x1 = torch.randn(POOL, *shape, generator=gen)
        batches = [b for b in args.batch_sizes if b > 1]
        for threads in thread_counts:
            for b in batches or [None]:
                xb = None if b is None else torch.randn(b, *shape, generator=gen)
                log(f"timing {label} at budget {budget}, batch 1{f' and {b}' if b else ''}, {threads} thread(s)")
                runtime_batch = not args.batch_runtime_budgets or budget in args.batch_runtime_budgets
                for row in rows_for(net, static_only, policy, static, x1, xb, args.runs, threads, where, runtime_batch):
                    if row["batch"] == 1 and any(r["batch"] == 1 and r["row"] == row["row"] and r["net"] == label
                                                 and r["budget"] == budget and r["threads"] == threads for r in rows):
                        continue                    # batch 1 timed once per thread count
                    rows.append({"net": label, "budget": budget, **row})
        if args.out:                # written as it goes, so a long study keeps what it measured
            write(args.out, report(rows, command, where, thread_counts, started))
    result = report(rows, command, where, thread_counts, started)
    if args.out:
        write(args.out, result)
        log(f"wrote {os.path.splitext(args.out)[0]}.md and .json")
    else:
        print(markdown(result))
    return rows


def report(rows: list, command: str, where, thread_counts: list, started: float) -> dict:
    for row in rows:
        dense = next(r for r in rows if r["net"] == row["net"] and r["budget"] == row["budget"]
                     and r["batch"] == row["batch"] and r["threads"] == row["threads"] and r["row"] == "dense")
        row["latency_ratio"] = row["median_ms"] / dense["median_ms"]
    return {"command": command, "device": device_name(where), "torch": torch.__version__,
            "threads": thread_counts, "seconds": time.time() - started, "rows": rows}


def write(out: str, result: dict) -> None:
    base = os.path.splitext(out)[0]
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(result))


def device_name(where: torch.device) -> str:
    if where.type == "cuda":
        return f"{torch.cuda.get_device_name(where)} (CUDA)"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = ["# Latency against MACs", "",
             f"Device: {report['device']}; torch {report['torch']}; threads {report['threads']}; "
             f"{report['seconds']:.0f} s in all. Produced by:", "", f"    {report['command']}", "",
             "Rows (rtsearch/bench_latency.py): *dense* the plain network; *static-only* the exported network "
             "with the statically pruned channels removed; *skip* runtime + static pruning on the skip path with "
             "the runtime agent deciding per input (lam = 0.5 gathers the kept filters, lam = 0 slices them); "
             "*replayed* the same keep counts without the agent (at lam = 0 also without the importance "
             "predictors); *masked* the statically pruned masked network under the same policy, run batched (every "
             "remaining channel computed; its MACs figure is nominal). Batch 1: latency per input over a pool of 4 "
             "inputs; batch B: latency of one "
             "batch, the skip path running input by input. Latency ratio: against dense at the same batch and "
             "threads. Medians and interquartile ranges of at least 30 timed runs (torch.utils.benchmark).", ""]
    lines += targets(rows) + [""]
    lines += ["| network | budget | batch | threads | row | MACs ratio | median ms | IQR ms | latency ratio "
              "| latency / MACs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['net']} | {r['budget']} | {r['batch']} | {r['threads']} | {r['row']} | "
                     f"{r['macs_ratio']:.3f} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | "
                     f"{r['latency_ratio']:.3f} | {r['latency_ratio'] / r['macs_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def targets(rows: list) -> list:
    """The figures the deployment targets are about, read off the rows: static-only at the largest batch
    (target latency ratio <= 1.1 x MACs ratio), the skip path with its agent at batch 1 (<= 1.3 x), and
    what the agent and the predictors cost per input at batch 1."""
    def find(net, budget, batch, threads, row):
        return next((r for r in rows if (r["net"], r["budget"], r["batch"], r["threads"], r["row"])
                     == (net, budget, batch, threads, row)), None)

    out = ["| network | budget | threads | static-only, largest batch: latency / MACs (target <= 1.1) "
           "| skip lam=0 + agent, batch 1: latency / MACs (target <= 1.3) | best batch-1 runtime row | agent ms "
           "per input (lam=0.5) | agent + predictors ms (lam=0) |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["net"], r["budget"], r["threads"]) for r in rows}, key=lambda k: (k[0], -float(k[1] or 0), k[2]))
    for net, budget, threads in keys:
        batch = max(r["batch"] for r in rows if r["net"] == net)
        static = find(net, budget, batch, threads, "static-only")
        skip = {lam: find(net, budget, 1, threads, f"skip lam={lam}") for lam in ("0.5", "0")}
        replay = {lam: find(net, budget, 1, threads, f"replayed lam={lam}") for lam in ("0.5", "0")}
        if not (static and all(skip.values()) and all(replay.values())):
            continue
        ratio = lambda r: r["latency_ratio"] / r["macs_ratio"]      # noqa: E731
        best = min((r for r in (skip["0.5"], skip["0"])), key=lambda r: r["median_ms"])
        out.append(f"| {net} | {budget} | {threads} | {ratio(static):.2f} (batch {batch}) | {ratio(skip['0']):.2f} | "
                   f"{best['row']}: {ratio(best):.2f} | "
                   f"{skip['0.5']['median_ms'] - replay['0.5']['median_ms']:.3f} | "
                   f"{skip['0']['median_ms'] - replay['0']['median_ms']:.3f} |")
    return out


def profile(name: str, shape: tuple, budgets: list, batch: int, threads: int = 1) -> str:
    """Where a batch's time goes: torch.profiler's busiest operators for the dense and the static-only
    network of each budget (markdown), one thread, after warm-up."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    torch.set_num_threads(threads)
    net = without_predictors(build_model(name, shape, 10, lam=0.0).eval())
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    lines = [f"Operators of `{name}` at batch {batch}, {threads} thread(s), 3 timed forwards after one warm-up "
             "(self CPU time):", ""]
    for label, ratios in [("dense", [0.0] * net.num_layers)] + [
            (f"static-only, budget {b}", uniform_ratios(CostModel(net, predictors=False), b, STATIC_ONLY)[0].tolist())
            for b in budgets]:
        skip = SkipNet(net, ratios)
        with torch.no_grad():
            skip.run(x)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    skip.run(x)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) / 3e3
        top = ", ".join(f"{e.key} {e.self_cpu_time_total / 3e3:.1f} ms ({e.count // 3})" for e in events[:4])
        lines.append(f"- {label} (inner widths {skip.widths[:1] + skip.widths[-1:]}): {total:.1f} ms per batch; "
                     f"{top}")
    return "\n".join(lines) + "\n"
