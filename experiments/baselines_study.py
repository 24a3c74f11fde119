"""Sweeps against their static-only baselines, one table: `python -m experiments.baselines_study
results/<sweep> [results/<sweep> ...] --report results/archive/make-run.md`.

Reads each sweep's summary.json (rtsearch.tune writes it, with the fixed-ratio static-only baseline it
ran after the trials) and lists per sweep and budget: the best trial's test accuracy and MACs ratio, the
baseline's, their difference, one binomial standard error of that difference, and the call the
summary makes (better or worse only beyond two standard errors). With several seeds of one setting it
adds their mean difference. Nothing is trained here; every figure is read back from the sweeps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from rtsearch.search import sweep_baseline as baselines


def rows(folders: list[str]) -> list[dict]:
    found = []
    for folder in folders:
        with open(os.path.join(folder, "summary.json")) as f:
            summary = json.load(f)
        for key, sweep in summary["sweeps"].items():
            best, base = sweep.get("best") or {}, sweep.get("baseline")
            if not base or sweep.get("best_minus_baseline") is None:
                continue
            gain, se, call = baselines.compare(best["accuracy"], base)
            found.append({"sweep": summary["name"], "command": summary.get("command"), "budget": key,
                          "seed": summary["settings"]["seed"], "method": summary["settings"].get("method", "both"),
                          "best": best, "baseline": base, "gain": gain, "se": se,
                          "call": call, "wall": sweep.get("wall_seconds")})
    return found


METHOD_TEXT = {"both": "both agents", "ladder": "ladder"}


def markdown(found: list[dict], command: str) -> str:
    lines = ["# Searches against the fixed-ratio static-only baseline", "",
             f"Produced by `{command}`: every figure is read back from the sweeps' summary.json. Each sweep ran "
             "its baseline itself after its trials (`rtsearch/search/sweep_baseline.py`): the same uniform static "
             "ratio "
             "on every layer, no agents, as many fine-tuning epochs as a full trial (in a ladder sweep, as one of its "
             "rungs), the sweep's seed, data and "
             f"held-out share. Test split: {' or '.join(sorted({str(r['baseline']['test_images']) for r in found}))} "
             "images. The call is 'better' or 'worse' only where the difference exceeds two binomial standard "
             "errors.", "",
             "| sweep | method | budget | seed | best trial | best: test accuracy | MACs ratio | baseline: test "
             "accuracy | MACs ratio | best - baseline | standard error | call | trials' wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        b, base = r["best"], r["baseline"]
        wall = f"{r['wall']:.0f} s" if r["wall"] is not None else "-"
        lines.append(f"| `{r['sweep']}` | {METHOD_TEXT[r['method']]} | {r['budget']} | {r['seed']} | "
                     f"`{b['trial_id']}` | "
                     f"{b['accuracy']:.4f} | {b['macs_ratio']:.4f} | {base['accuracy']:.4f} | "
                     f"{base['macs_ratio']:.4f} | {r['gain']:+.4f} | "
                     f"{r['se']:.4f} | {r['call']} | {wall} |")
    for method, budget in sorted({(r["method"], r["budget"]) for r in found}, key=lambda m: (m[0], float(m[1]))):
        gains = [r["gain"] for r in found if r["budget"] == budget and r["method"] == method]
        if len(gains) > 1:
            lines += ["", f"{METHOD_TEXT[method].capitalize()}, budget {budget}, {len(gains)} sweeps: mean best - "
                          f"baseline {statistics.mean(gains):+.4f} "
                          f"(sample standard deviation {statistics.stdev(gains):.4f}); per sweep "
                          + ", ".join(f"{g:+.4f}" for g in gains) + "."]
    lines += ["", "Sweep commands:", ""] + [f"- `{r['command']}`" for r in found if r["command"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.baselines_study", description=__doc__.splitlines()[0])
    p.add_argument("sweeps", nargs="+", help="results/<name> folders of finished sweeps")
    p.add_argument("--report", default=os.path.join("results", "make-run.md"))
    args = p.parse_args(argv)
    missing = [s for s in args.sweeps if not os.path.isfile(os.path.join(s, "summary.json"))]
    if missing:
        print(f"{missing[0]} holds no summary.json: pass results/<name> folders that rtsearch.tune wrote",
              file=sys.stderr)
        return 2
    found = rows(args.sweeps)
    if not found:
        print("none of these sweeps ran a static-only baseline (sweeps before it, --no-baseline, --fixed-ratios or "
              "--budget-range): pass sweeps that did", file=sys.stderr)
        return 2
    command = "python -m experiments.baselines_study " + " ".join(args.sweeps) + f" --report {args.report}"
    with open(args.report, "w") as f:
        f.write(markdown(found, command))
    print(f"{len(found)} sweep budget(s) written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
