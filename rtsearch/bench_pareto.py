"""What users pay, per method: test accuracy against measured latency and stored bytes, behind
`python -m rtsearch.bench --pareto`.

For every backbone and seed it trains the runs it lacks (each one `python -m rtsearch.train` into
<runs-dir>/<dataset>-<model>/<kind>-<budget>-s<seed>, reused when finished, resumed when started) and times each
run's deployed.pt on its own test images (rtsearch.bench_deployed: one thread, batch 1 and batch 64, medians and
IQR of torch.utils.benchmark). Kinds (KINDS): the dense model, Torch-Pruning L1 at six budgets (the front to
beat), uniform static-only, the ladder and the two agents. Then per kind, averaged over seeds, its Pareto front
(no other point of the kind is both faster and more accurate), and per learned point, against Torch-Pruning L1 of
the same seed:
- the accuracy Torch-Pruning L1's front reaches at the point's measured latency (linear in latency between its
  two neighbours on that front; outside the front's span, none), and the difference;
- the latency Torch-Pruning L1's MACs-latency curve predicts at the point's MACs ratio, and the measured one over it
  (what deciding per input costs beyond its MACs);
- the bytes Torch-Pruning L1 stores at the point's accuracy (linear between neighbours on its accuracy-bytes
  curve), and the point's bytes over them.
Writes the table (FILE.md), the measurements (FILE.json) and one picture per backbone (FILE-<model>.png).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from rtsearch.errors import UsageError

KINDS = {   # kind: (rtsearch.train flags, its budgets)
    "dense": ([], (1.0,)),
    "tp-l1": (["--method", "static-only", "--fixed-ratios", "--torch-pruning-l1"], (0.03, 0.05, 0.08, 0.15, 0.3, 0.5)),
    "uniform": (["--method", "static-only", "--fixed-ratios"], None),      # None: --method-budgets
    "ladder": (["--method", "ladder"], None),
    "both": (["--method", "both"], None),
}
REFERENCE = "tp-l1"
OPERATING = (0.08, 0.15)        # the reference's budgets whose latencies are the operating points
FILES = ("deployed.pt", "metrics.json", "test_per_input.npz")


def folder(runs_dir: str, dataset: str, model: str, kind: str, budget: float, seed: int) -> str:
    return os.path.join(runs_dir, f"{dataset}-{model}", f"{kind}-{budget:g}-s{seed}")


def plan(args) -> list[dict]:
    """Every run the comparison needs, in the order they are made: per backbone and seed, the cheap ones first."""
    def budgets(kind):
        return KINDS[kind][1] if kind in ("dense", REFERENCE) else args.method_budgets
    return [{"dataset": args.dataset, "model": model, "kind": kind, "budget": b, "seed": seed,
             "out": folder(args.runs_dir, args.dataset, model, kind, b, seed)}
            for model in args.models for seed in args.seeds for kind in args.kinds for b in budgets(kind)]


def finished(out: str) -> bool:
    return all(os.path.isfile(os.path.join(out, name)) for name in FILES)


class RunFailed(RuntimeError):
    """A training run of the plan ended with an error: not bad input, but said in one line (its own log says why)."""


def make_runs(runs: list[dict], data_dir: str | None, log=print) -> None:
    """Train what is missing, one run at a time, its output in <out>/train.log; a line per run."""
    todo = [r for r in runs if not finished(r["out"])]
    log(f"{len(runs) - len(todo)} of {len(runs)} runs done before; {len(todo)} to make")
    start = time.time()
    for i, r in enumerate(todo, 1):
        if finished(r["out"]):      # made meanwhile by another bench on the same runs folder
            continue
        os.makedirs(r["out"], exist_ok=True)
        if r["kind"] == "dense":
            write_dense(r, data_dir)
        else:
            command = [sys.executable, "-m", "rtsearch.train", "--dataset", r["dataset"], "--model", r["model"],
                       "--seed", str(r["seed"]), "--budget", f"{r['budget']:g}", *KINDS[r["kind"]][0],
                       "--out", r["out"], *(["--data-dir", data_dir] if data_dir else [])]
            if os.path.isfile(os.path.join(r["out"], "run.json")):     # started before: resumed, with its own flags
                command.append("--resume")
            with open(os.path.join(r["out"], "train.log"), "a") as f:
                done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RunFailed(f"{r['out']}: rtsearch.train failed (exit {done.returncode}); its log {r['out']}/"
                                f"train.log says why; fix that and run the same command again (finished runs are kept)")
        elapsed = time.time() - start
        log(f"run {i}/{len(todo)} done: {r['out']} · elapsed {elapsed:.0f} s · about "
            f"{elapsed / i * (len(todo) - i):.0f} s left")


def write_dense(r: dict, data_dir: str | None) -> None:
    """The dense model's deployed form (its skip-path network, every channel kept) and its test figures, laid out
    as a run's, so that it is timed as any run is."""
    import torch

    from rtsearch.config import RunConfig
    from rtsearch.deploy.deployed import DeployedModel
    from rtsearch.methods.base import prepared, save_model
    from rtsearch.net.fast import SkipNet
    from rtsearch.storage import write_json

    cfg = RunConfig(dataset=r["dataset"], model=r["model"], seed=r["seed"], data_dir=data_dir, out=r["out"])
    splits, net, dense_accuracy, _, _ = prepared(cfg, log=lambda line: None, move=False)
    skip = SkipNet(net.eval())
    model = DeployedModel(skip, None, net.input_shape, net)     # as any run's deployed.pt, compiled form included
    x, y = splits.test
    with torch.no_grad():
        correct = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)]) == y
    save_model(model, os.path.join(r["out"], "deployed.pt"))
    np.savez(os.path.join(r["out"], "test_per_input.npz"), correct=correct.numpy(), macs_ratio=np.ones(len(y)))
    params = sum(p.numel() for p in skip.parameters())
    write_json(os.path.join(r["out"], "metrics.json"),
               {"method": "dense", "accuracy": float(correct.float().mean()), "dense_accuracy": dense_accuracy,
                "macs_ratio": 1.0, "params_ratio": 1.0, "stored_bytes": 4 * params, "budget": 1.0,
                "config": {"dataset": r["dataset"], "model": r["model"], "seed": r["seed"], "data_dir": data_dir}})


def measure(runs: list[dict], batch_sizes: list[int], timed_runs: int, threads: int,
            device=None, failures: list | None = None) -> list[dict]:
    """Per run and batch size: its test accuracy, MACs ratio, parameters, bytes and latency: that of the faster of
    deployed.pt as loaded and its compiled form (rtsearch.deploy.compiled), as a user would ship it at that batch
    size, with the former beside it. Off the CPU, a form that does not run there goes to `failures` (run, form,
    batch, error), and a run with no form that runs has no row at that batch."""
    import torch

    from rtsearch import bench_deployed
    rows = []
    for r in runs:
        with open(os.path.join(r["out"], "metrics.json")) as f:
            metrics = json.load(f)
        timings = bench_deployed.measure([r["out"]], batch_sizes, timed_runs, [threads], compiled=True,
                                         device=device or torch.device("cpu"))
        if failures is not None:
            failures += [(r["out"], t["form"], t["batch"], t["error"]) for t in timings if "error" in t]
        for b in batch_sizes:
            forms = {t["form"]: t for t in bench_deployed.timed_rows(timings) if t["batch"] == b}
            if not forms:
                continue
            best = min(forms.values(), key=lambda t: t["median_ms"])    # the form a user would ship at b
            rows.append({**{k: r[k] for k in ("model", "kind", "budget", "seed", "out")}, "batch": b,
                         "form": best["form"], "median_ms": best["median_ms"], "iqr_ms": best["iqr_ms"],
                         "eager_ms": forms["eager"]["median_ms"] if "eager" in forms else None,
                         **({"cpu_agreement": best["cpu_agreement"]} if "cpu_agreement" in best else {}),
                         "accuracy": metrics["accuracy"],
                         "macs_ratio": metrics["macs_ratio"], "params_ratio": metrics["params_ratio"],
                         "stored_bytes": metrics["stored_bytes"],
                         "file_bytes": os.path.getsize(os.path.join(r["out"], "deployed.pt"))})
    return rows


def interpolate(x: float, xs, ys) -> float | None:
    """y at x, linear between the two neighbours in xs (sorted here); None outside their span."""
    order = np.argsort(xs)
    xs, ys = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
    if len(xs) == 0 or x < xs[0] or x > xs[-1]:
        return None
    return float(np.interp(x, xs, ys))


def front(points: list[dict], cost: str) -> list[dict]:
    """The points no other point beats on both `cost` (lower) and accuracy (higher), cheapest first."""
    kept = [p for p in points if not any(q[cost] <= p[cost] and q["accuracy"] >= p["accuracy"]
                                         and (q[cost] < p[cost] or q["accuracy"] > p["accuracy"]) for q in points)]
    return sorted(kept, key=lambda p: p[cost])


def against_reference(rows: list[dict]) -> list[dict]:
    """Per learned or other point (model, kind, budget, seed, batch): the reference's figures of the same seed
    and batch at its latency, MACs ratio and accuracy (module docstring)."""
    out = []
    for p in rows:
        if p["kind"] in (REFERENCE, "dense"):
            continue
        ref = [q for q in rows if q["kind"] == REFERENCE and q["model"] == p["model"] and q["seed"] == p["seed"]
               and q["batch"] == p["batch"]]
        if not ref:
            continue
        fast = front(ref, "median_ms")
        ref_accuracy = interpolate(p["median_ms"], [q["median_ms"] for q in fast], [q["accuracy"] for q in fast])
        predicted = interpolate(np.log(p["macs_ratio"]), [np.log(q["macs_ratio"]) for q in ref],
                                [q["median_ms"] for q in ref])
        small = front(ref, "stored_bytes")
        ref_bytes = interpolate(p["accuracy"], [q["accuracy"] for q in small], [q["stored_bytes"] for q in small])
        out.append({**p, "ref_accuracy": ref_accuracy,
                    "accuracy_gain": None if ref_accuracy is None else p["accuracy"] - ref_accuracy,
                    "latency_over_macs": None if predicted is None else p["median_ms"] / predicted,
                    "bytes_over_ref": None if ref_bytes is None else p["stored_bytes"] / ref_bytes})
    return out


def mean_std(values) -> tuple[float | None, float | None, int]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def grouped(rows: list[dict], keys=("model", "kind", "budget", "batch")) -> dict:
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def operating_points(rows: list[dict]) -> list[dict]:
    """Per backbone, batch, kind and seed, at the reference's latency at each OPERATING budget: the accuracy of the
    kind's own front there (linear between its neighbours; none where its front does not reach that latency)
    minus the reference's accuracy at that budget."""
    out = []
    for (model, batch), group in grouped(rows, ("model", "batch")).items():
        for seed in sorted({r["seed"] for r in group}):
            of_seed = [r for r in group if r["seed"] == seed]
            for b in OPERATING:
                ref = [r for r in of_seed if r["kind"] == REFERENCE and r["budget"] == b]
                if not ref:
                    continue
                for kind in sorted({r["kind"] for r in of_seed} - {REFERENCE, "dense"}):
                    own = front([r for r in of_seed if r["kind"] == kind], "median_ms")
                    accuracy = interpolate(ref[0]["median_ms"], [r["median_ms"] for r in own],
                                           [r["accuracy"] for r in own])
                    out.append({"model": model, "batch": batch, "seed": seed, "budget": b, "kind": kind,
                                "latency_ms": ref[0]["median_ms"], "ref_accuracy": ref[0]["accuracy"],
                                "gain": None if accuracy is None else accuracy - ref[0]["accuracy"],
                                "fastest_ms": own[0]["median_ms"] if own else None})
    return out


def cell(values, digits: int = 4, signed: bool = False) -> str:
    mean, std, n = mean_std(values)
    if mean is None:
        return "n/a"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if n > 1 else text


def markdown(rows: list[dict], command: str, device: str) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Accuracy against measured latency and stored bytes", "",
             f"Device: {device}; one thread; torch.utils.benchmark medians. Produced by:", "", f"    {command}", "",
             f"Seeds {', '.join(map(str, seeds))}; each cell is the mean ± standard deviation over seeds. Latency: "
             "batch 1 is per image over the first 64 test images one at a time, batch B one batch of the first B "
             "(rtsearch/bench_deployed.py), of the faster of each model's forms at that batch size (form: eager is "
             "deployed.pt as loaded, TorchScript its compiled form, rtsearch/deploy/compiled.py; eager ms: the "
             "former). Stored bytes: the run's "
             "own figure (`stored_bytes` in metrics.json: "
             "float32 parameters of what it keeps; the ladder's rungs it re-runs on and its policy); deployed.pt "
             "bytes: the file a user loads. Definitions of the comparisons: rtsearch/bench_pareto.py.", ""]
    lines += ["## At Torch-Pruning L1's operating points", "",
              "Each method's accuracy on its own accuracy-latency front at the latency of Torch-Pruning L1 at budget "
              "0.08 and 0.15 (same backbone, batch, seed), minus Torch-Pruning L1's accuracy there; n/a where the "
              "method has no point that fast (its fastest point is then given, mean over seeds) or none that slow. "
              "Ahead: the mean gain exceeds the seed standard deviation.", "",
              "| backbone | batch | Torch-Pruning L1 budget | its latency ms | its accuracy | method | gain | "
              "verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for (model, batch, b, kind), group in sorted(grouped(operating_points(rows),
                                                         ("model", "batch", "budget", "kind")).items()):
        mean, std, n = mean_std([g["gain"] for g in group])
        fastest = mean_std([g["fastest_ms"] for g in group])[0]
        slower = fastest is not None and fastest > mean_std([g["latency_ms"] for g in group])[0]
        verdict = (f"slower: its fastest point takes {fastest:.3f} ms" if mean is None and slower
                   else "no point that slow" if mean is None else "ahead" if mean > std and mean > 0
                   else "behind" if mean < -std else "within the seed spread")
        if mean is not None and n < len(group):
            verdict += f" ({n} of {len(group)} seeds)"
        lines.append(f"| {model} | {batch} | {b:g} | {cell([g['latency_ms'] for g in group], 3)} | "
                     f"{cell([g['ref_accuracy'] for g in group])} | {kind} | "
                     f"{cell([g['gain'] for g in group], signed=True)} | {verdict} |")
    lines += ["", "## Every point", "",
              "Against Torch-Pruning L1 of the same seed: the accuracy its front reaches at the point's latency "
              "(gain = point minus that); latency over what Torch-Pruning L1's MACs-latency curve predicts at the "
              "point's MACs; stored bytes over what Torch-Pruning L1 stores at the point's accuracy.", "",
              "| backbone | method | budget | batch | test accuracy | MACs ratio | params ratio | stored bytes | "
              "deployed.pt bytes | form | median ms | IQR ms | eager ms | gain at equal latency | "
              "latency / MACs-predicted | bytes / at equal accuracy |", "|" + "---|" * 16]
    compared = grouped(against_reference(rows))
    for key, group in sorted(grouped(rows).items(), key=lambda kv: (kv[0][0], list(KINDS).index(kv[0][1]),
                                                                    -kv[0][2], kv[0][3])):
        model, kind, budget, batch = key
        cmp_ = compared.get(key, [])
        lines.append(f"| {model} | {kind} | {budget:g} | {batch} | {cell([g['accuracy'] for g in group])} | "
                     f"{cell([g['macs_ratio'] for g in group])} | {cell([g['params_ratio'] for g in group])} | "
                     f"{cell([g['stored_bytes'] for g in group], 0)} | {cell([g['file_bytes'] for g in group], 0)} | "
                     f"{group[0]['form']} | {cell([g['median_ms'] for g in group], 3)} | "
                     f"{cell([g['iqr_ms'] for g in group], 3)} | {cell([g['eager_ms'] for g in group], 3)} | "
                     f"{cell([c['accuracy_gain'] for c in cmp_], signed=True)} | "
                     f"{cell([c['latency_over_macs'] for c in cmp_], 2)} | "
                     f"{cell([c['bytes_over_ref'] for c in cmp_], 2)} |")
    return "\n".join(lines) + "\n"


def readable_log_axis(ax, unit: str) -> None:
    """A log x axis labelled in plain numbers (with SI prefixes where `unit` is given) at 1, 2 and 5 times each power of
    ten when the axis spans under three decades, at the powers alone otherwise; minor ticks unlabelled. Matplotlib's
    default labels minor ticks as 3x10^0 on short spans, wide enough to run into each other."""
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    axis = ax.xaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if high < 1000 * low else (1.0,)))
    axis.set_major_formatter(EngFormatter(unit=unit) if unit else FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot(rows: list[dict], model: str, path: str, where: str = "one thread") -> None:
    """Accuracy against latency (batch 1, batch 64) and against stored bytes; each kind's mean points over seeds
    (bars: standard deviation) and its front."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows if r["model"] == model})
    panels = [("median_ms", b, f"latency, batch {b} (ms per {'image' if b == 1 else 'batch'})") for b in batches]
    panels.append(("stored_bytes", batches[0], "stored bytes"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    for ax, (cost, batch, label) in zip(np.atleast_1d(axes), panels):
        for kind in KINDS:
            groups = [g for (m, k, _, b), g in grouped(rows).items() if m == model and k == kind and b == batch]
            if not groups:
                continue
            points = [{cost: mean_std([g[cost] for g in grp])[0], "accuracy": mean_std([g["accuracy"] for g in grp])[0],
                       "x_err": mean_std([g[cost] for g in grp])[1], "y_err": mean_std([g["accuracy"] for g in grp])[1]}
                      for grp in groups]
            bars = ax.errorbar([p[cost] for p in points], [p["accuracy"] for p in points],
                               xerr=[p["x_err"] for p in points], yerr=[p["y_err"] for p in points], fmt="o",
                               label=kind, capsize=2)
            line = front(points, cost)
            ax.plot([p[cost] for p in line], [p["accuracy"] for p in line], "-", color=bars[0].get_color())
        readable_log_axis(ax, "B" if cost == "stored_bytes" else "")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend()
    fig.suptitle(f"{model}: accuracy against what it costs ({where})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def saved_rows(path: str) -> dict:
    """What a --pareto run wrote to FILE.json; UsageError for a file that is missing or not one of those."""
    try:
        with open(path) as f:
            saved = json.load(f)
        rows, device = saved["rows"], saved["device"]
        if not rows or not all({"model", "kind", "batch", "median_ms", "stored_bytes", "accuracy"} <= set(r)
                               for r in rows):
            raise ValueError("no rows of measured runs")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--replot {path}: not the FILE.json of a --pareto run ({str(e).splitlines()[0][:120]}): "
                         f"pass the .json that --pareto wrote beside its .md") from None
    return {"rows": rows, "device": device}


def replot(path: str) -> list[str]:
    """Draw FILE-<model>.png again from the rows a --pareto run wrote to FILE.json (the figures as measured then);
    returns the pictures written."""
    saved = saved_rows(path)
    stem = path[:-5] if path.endswith(".json") else path
    where = "one thread" if saved["device"].startswith("CPU") else saved["device"]
    written = []
    for model in dict.fromkeys(r["model"] for r in saved["rows"]):
        plot(saved["rows"], model, f"{stem}-{model}.png", where)
        written.append(f"{stem}-{model}.png")
    return written


def run(args, command: str) -> None:
    """Make the missing runs, time them all, write FILE.md, FILE.json and FILE-<model>.png."""
    from rtsearch.bench_latency import device_name
    from rtsearch.device import resolve

    runs = plan(args)
    missing = []
    if args.no_train:       # time what is there; the report names what is not
        missing = [r["out"] for r in runs if not finished(r["out"])]
        runs = [r for r in runs if finished(r["out"])]
        print(f"--no-train: timing the {len(runs)} finished runs; {len(missing)} of the plan are not made")
    else:
        make_runs(runs, args.data_dir)
    if args.train_only:
        return
    where = resolve(args.device)
    failures = []
    rows = measure(runs, args.batch_sizes, args.runs, 1, where, failures)
    stem = args.out[:-3] if args.out.endswith(".md") else args.out
    with open(stem + ".md", "w") as f:
        f.write(markdown(rows, command, device_name(where)))
        if missing:
            f.write("\nRuns of the plan not made (`--no-train`), so not in the tables above: "
                    + ", ".join(f"`{m}`" for m in missing) + ".\n")
        agreement = [r["cpu_agreement"] for r in rows if "cpu_agreement" in r]
        if agreement:
            f.write(f"\nOn {where.type}, the form timed gives the same class as the CPU's eager model to at least "
                    f"{min(agreement):.4f} of each run's test images (rtsearch/bench_deployed.py).\n")
        if failures:
            f.write(f"\nForms that do not run on {where.type} (the faster of the others is timed; a run none of whose "
                    "forms runs is not in the tables):\n\n" + "".join(f"- `{out}` {form}, batch {b}: {error}\n"
                                                                   for out, form, b, error in failures))
    with open(stem + ".json", "w") as f:
        json.dump({"command": command, "device": device_name(where), "rows": rows, "failures": failures}, f, indent=1)
    for model in args.models:
        plot(rows, model, f"{stem}-{model}.png", "one thread" if where.type == "cpu" else device_name(where))
    print(f"wrote {stem}.md, {stem}.json and {', '.join(f'{stem}-{m}.png' for m in args.models)}")
