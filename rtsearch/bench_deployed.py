"""Latency of runs' deployed models on their own test images, behind `python -m rtsearch.bench --deployed RUN ...`.

Each run's deployed.pt is what a user ships: a ladder run's `LadderModel` (cheap rung, policy, the dearer rung
for the inputs it re-runs), any other run's `DeployedModel`. It is timed with torch.utils.benchmark (median and
interquartile range after warm-up, rtsearch.bench_latency.timed) on the first test images of its own split:
- batch 1: POOL images one at a time, per image. A ladder's re-run images count as often as they occur among
  them.
- batch B: one batch of the first B images.
Beside each latency are the MACs ratio of the images timed (from the run's test_per_input.npz) and the latency
ratio against the first run given, at the same batch size and threads. On the CPU by default; with a GPU
(`--device cuda`) model and images move there first, and a form that cannot run there is reported with its error
instead of a time (an agent that is an RLlib module, for instance).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from rtsearch.errors import UsageError

POOL = 64


def check(run_dirs: list[str]) -> None:
    """Every run folder holds what is timed: exit 2 before any timing otherwise."""
    for d in run_dirs:
        for name in ("deployed.pt", "metrics.json", "test_per_input.npz"):
            if not os.path.isfile(os.path.join(d, name)):
                raise UsageError(f"--deployed {d}: no {name} there; pass the output folder of a finished run")
        loaded(d)


def loaded(run_dir: str) -> torch.nn.Module:
    """The run's deployed.pt in eval mode; a truncated or foreign file is a UsageError naming the fix."""
    path = os.path.join(run_dir, "deployed.pt")
    try:
        model = torch.load(path, weights_only=False, map_location="cpu")     # a run's own pickle
    except Exception as e:      # truncated, foreign or from another version: torch and pickle raise many kinds
        raise UsageError(f"{path} cannot be read as a deployed model ({type(e).__name__}): make the run again "
                         f"(rtsearch.train --resume --out {run_dir}) or pass another run") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{path} holds a {type(model).__name__}, not a deployed model: pass a run's output folder")
    return model.eval()


def forms(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The deployed model as loaded ("eager") and, where it has one, its TorchScript form (rtsearch.deploy.compiled),
    compiled on the device where the model lives."""
    compiled = model.compiled() if hasattr(model, "compiled") else None
    return [("eager", model)] + ([("TorchScript", compiled)] if compiled is not None else [])


def time_model(model, x: torch.Tensor, batch: int, runs: int, threads: int) -> dict:
    """Median and IQR (ms) of one batch of the first `batch` images; batch 1: per image over the first POOL."""
    from rtsearch.bench_latency import timed     # torch.utils.benchmark: imported once there is timing to do
    if batch == 1:
        pool = x[:POOL]
        fn = lambda: [model(pool[i:i + 1]) for i in range(len(pool))]   # noqa: E731
        return timed(torch.no_grad()(fn), runs, threads, per=len(pool))
    xb = x[:batch]
    return timed(torch.no_grad()(lambda: model(xb)), runs, threads)


def measure(run_dirs: list[str], batch_sizes: list[int], runs: int, thread_counts: list[int],
            compiled: bool = False, device: torch.device = torch.device("cpu")) -> list[dict]:
    """A row per run, form (with `compiled`, also the TorchScript form where there is one), threads and batch. Off
    the CPU, a form that fails is a row with its `error` and no time (on the CPU a failure is a bug: it is raised)."""
    from rtsearch import data
    rows = []
    for d in run_dirs:
        with open(os.path.join(d, "metrics.json")) as f:
            metrics = json.load(f)
        cfg = metrics["config"]
        model = loaded(d)
        images = data.load(cfg["dataset"], cfg["seed"], cfg.get("data_dir")).test[0]
        on_cpu = None if device.type == "cpu" else answers(model, images)   # what each form must agree with
        model, x = model.to(device), images.to(device)
        per_input = np.load(os.path.join(d, "test_per_input.npz"))["macs_ratio"]
        head = {"run": d, "method": metrics["method"], "test_accuracy": metrics["accuracy"]}
        candidates = [("eager", model)]
        if compiled:
            try:
                candidates = forms(model)
            except Exception as e:         # no compiled form on this device: said once per batch size
                rows += [{**head, "form": "TorchScript", "batch": b, "threads": t, "error": failed(e, device)}
                         for t in thread_counts for b in batch_sizes]
        for form, fn in candidates:
            for threads in thread_counts:
                for b in batch_sizes:
                    try:
                        stats = time_model(fn, x, b, runs, threads)
                        if on_cpu is not None:      # the share of test images whose class matches the CPU's answer
                            stats["cpu_agreement"] = float((answers(fn, x).cpu() == on_cpu).float().mean())
                    except Exception as e:
                        rows.append({**head, "form": form, "batch": b, "threads": threads, "error": failed(e, device)})
                        print(f"{d} ({metrics['method']}, {form}), batch {b}: does not run on {device.type}: "
                              f"{rows[-1]['error']}", flush=True)
                        continue
                    print(f"{d} ({metrics['method']}, {form}), batch {b}, {threads} thread(s): "
                          f"{stats['median_ms']:.3f} ms", flush=True)
                    rows.append({**head, "form": form, "batch": b, "threads": threads,
                                 "macs_ratio": float(per_input[:POOL if b == 1 else b].mean()), **stats})
    for row in timed_rows(rows):
        first = [r for r in timed_rows(rows) if r["run"] == run_dirs[0] and r["batch"] == row["batch"]
                 and r["threads"] == row["threads"] and r["form"] == "eager"]
        row["latency_ratio"] = row["median_ms"] / first[0]["median_ms"] if first else None
    return rows


def answers(model, x: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """The class each image is given, in batches of `chunk`."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)])


def failed(error: Exception, device: torch.device) -> str:
    """A form's failure off the CPU, in one line; on the CPU the error is raised (a bug, not a finding)."""
    if device.type == "cpu":
        raise error
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:200]


def timed_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "error" not in r]


def markdown(rows: list[dict], command: str, device: torch.device = torch.device("cpu")) -> str:
    from rtsearch.bench_latency import device_name
    lines = ["# Latency of deployed models on their own test images", "",
             f"Device: {device_name(device)}; torch {torch.__version__}. Produced by:", "",
             f"    {command}", "",
             f"Batch 1: per image over the first {POOL} test images, one at a time. Batch B: one batch of the first "
             "B test images. MACs ratio: the mean over the images timed (test_per_input.npz). Latency ratio: against "
             "the first run's eager form at the same batch size and threads. Form: eager is deployed.pt as loaded, "
             "TorchScript its compiled form (rtsearch/deploy/compiled.py, `--compiled`). Medians and interquartile "
             "ranges of the timed runs (torch.utils.benchmark, rtsearch/bench_deployed.py).", ""]
    agreement = [r["cpu_agreement"] for r in timed_rows(rows) if "cpu_agreement" in r]
    if agreement:
        lines += [f"Off the CPU, each form's answers are checked against the CPU's eager model on the whole test "
                  f"split: the share of images given the same class is at least {min(agreement):.4f} here.", ""]
    lines += ["| run | method | form | test accuracy | batch | threads | MACs ratio | median ms | IQR ms | "
              "latency ratio |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['run']} | {r['method']} | {r['form']} | {r['test_accuracy']:.4f} | {r['batch']} | "
                         f"{r['threads']} | | does not run on {device.type}: {r['error']} | | |")
            continue
        ratio = "n/a" if r["latency_ratio"] is None else f"{r['latency_ratio']:.2f}"
        lines.append(f"| {r['run']} | {r['method']} | {r['form']} | {r['test_accuracy']:.4f} | {r['batch']} | "
                     f"{r['threads']} | "
                     f"{r['macs_ratio']:.4f} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {ratio} |")
    return "\n".join(lines) + "\n"


def profile(run_dirs: list[str], batch_sizes: list[int], calls: int = 20) -> str:
    """Where the time of each run's deployed model goes, eager and compiled, per batch size: the wall time of a
    call against the time torch.profiler finds inside operators (the rest is Python and dispatch between them),
    and the busiest operators (markdown)."""
    import time

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from rtsearch import data
    torch.set_num_threads(1)
    lines = [f"Per call, one thread, {calls} calls after warm-up: wall time under the profiler, time inside "
             "operators (self CPU time of every aten operator), and the rest (Python, TorchScript and dispatch between "
             "operators, and the profiler's own cost).", ""]
    for d in run_dirs:
        with open(os.path.join(d, "metrics.json")) as f:
            cfg = json.load(f)["config"]
        x = data.load(cfg["dataset"], cfg["seed"], cfg.get("data_dir")).test[0]
        for form, model in forms(loaded(d)):
            for b in batch_sizes:
                xb = x[:b]
                with torch.no_grad():
                    for _ in range(3):
                        model(xb)
                    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                        start = time.perf_counter()
                        for _ in range(calls):
                            model(xb)
                        wall = (time.perf_counter() - start) * 1e3 / calls     # the profiler's own cost included
                events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
                inside = sum(e.self_cpu_time_total for e in events if e.key != "forward") / calls / 1e3
                top = ", ".join(f"{e.key} {e.self_cpu_time_total / calls / 1e3:.3f} ms" for e in events[:4])
                lines.append(f"- {d} ({form}), batch {b}: {wall:.3f} ms per call under the profiler, {inside:.3f} ms "
                             f"inside operators, {wall - inside:.3f} ms between them; busiest: {top}")
    return "\n".join(lines) + "\n"
