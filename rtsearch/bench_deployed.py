"""Latency of runs' deployed models on their own test images, behind `python -m rtsearch.bench --deployed RUN ...`.

Each run's deployed.pt is what a user ships: a ladder run's `LadderModel` (cheap rung, policy, the dearer rung
for the inputs it re-runs), any other run's `DeployedModel`. It is timed with torch.utils.benchmark (median and
interquartile range after warm-up, rtsearch.bench_latency.timed) on the first test images of its own split:
- batch 1: POOL images one at a time, per image. A ladder's re-run images count as often as they occur among
  them.
- batch B: one batch of the first B images.
Beside each latency are the MACs ratio of the images timed (from the run's test_per_input.npz) and the latency
ratio against the first run given, at the same batch size and threads.
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


def measure(run_dirs: list[str], batch_sizes: list[int], runs: int, thread_counts: list[int]) -> list[dict]:
    from rtsearch import data
    from rtsearch.bench_latency import timed     # torch.utils.benchmark: imported once there is timing to do
    rows = []
    for d in run_dirs:
        with open(os.path.join(d, "metrics.json")) as f:
            metrics = json.load(f)
        cfg = metrics["config"]
        model = torch.load(os.path.join(d, "deployed.pt"), weights_only=False, map_location="cpu").eval()
        x = data.load(cfg["dataset"], cfg["seed"], cfg.get("data_dir")).test[0]
        per_input = np.load(os.path.join(d, "test_per_input.npz"))["macs_ratio"]
        for threads in thread_counts:
            for b in batch_sizes:
                if b == 1:
                    pool = x[:POOL]
                    fn = lambda: [model(pool[i:i + 1]) for i in range(len(pool))]   # noqa: E731
                    macs, stats = per_input[:POOL].mean(), timed(torch.no_grad()(fn), runs, threads, per=len(pool))
                else:
                    xb = x[:b]
                    macs, stats = per_input[:b].mean(), timed(torch.no_grad()(lambda: model(xb)), runs, threads)
                print(f"{d} ({metrics['method']}), batch {b}, {threads} thread(s): {stats['median_ms']:.3f} ms",
                      flush=True)
                rows.append({"run": d, "method": metrics["method"], "batch": b, "threads": threads,
                             "macs_ratio": float(macs), "test_accuracy": metrics["accuracy"], **stats})
    for row in rows:
        first = next(r for r in rows if r["run"] == run_dirs[0] and r["batch"] == row["batch"]
                     and r["threads"] == row["threads"])
        row["latency_ratio"] = row["median_ms"] / first["median_ms"]
    return rows


def markdown(rows: list[dict], command: str) -> str:
    from rtsearch.bench_latency import device_name
    lines = ["# Latency of deployed models on their own test images", "",
             f"Device: {device_name(torch.device('cpu'))}; torch {torch.__version__}. Produced by:", "",
             f"    {command}", "",
             f"Batch 1: per image over the first {POOL} test images, one at a time. Batch B: one batch of the first "
             "B test images. MACs ratio: the mean over the images timed (test_per_input.npz). Latency ratio: against "
             "the first run at the same batch size and threads. Medians and interquartile ranges of the timed runs "
             "(torch.utils.benchmark, rtsearch/bench_deployed.py).", "",
             "| run | method | test accuracy | batch | threads | MACs ratio | median ms | IQR ms | latency ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {r['test_accuracy']:.4f} | {r['batch']} | {r['threads']} | "
                     f"{r['macs_ratio']:.4f} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {r['latency_ratio']:.2f} |")
    return "\n".join(lines) + "\n"
