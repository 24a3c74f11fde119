"""The front of a multi-objective sweep (`rtsearch.tune --front LO:HI [--objectives accuracy,latency,bytes]`): the
MACs budget is searched with the other settings, and Optuna's multi-objective sampler (multi-objective TPE, or
random search) looks for the configurations that no other beats on every objective at once.

Objectives (OBJECTIVES): validation accuracy (higher), deployed latency (lower: one thread, batch 64, the bench's
measurement, rtsearch.bench_pareto.measure: the faster of deployed.pt as loaded and its TorchScript form) and stored
bytes (lower: the run's `stored_bytes`).

Why the sampler never sees a timing: trials run side by side on shared cores, so a latency measured inside a trial
is noise. Each trial reports deterministic stand-ins instead, its validation MACs ratio for latency and its params
ratio for bytes (stored bytes are its float32 parameters, so that one is exact up to a constant). After the last
trial the driver times every completed trial's deployed model one after the other, and the front is taken on the
measured latency (`members`). The front is chosen on the validation split; its table gives the test figures
beside it, and the test split chooses nothing.

The budget's values (`budget_grid`): the readable numbers 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8 per decade within
LO:HI. The ladder's rung factors are products of 2, 1.5 and 1.25 (rtsearch.methods.ladder), so trials at
neighbouring budgets share rungs through the rung cache; a continuous budget would share none.

Torch-Pruning L1's curve beside the front: fixed-ratio runs at the bench's budgets that span LO:HI
(`reference_budgets`), made and timed as `rtsearch.bench --pareto` makes and times them, in its runs folder, so that
runs the bench made already are reused. The making and timing are the bench's own functions (rtsearch.bench_pareto,
`bench` below), handed in by the command (rtsearch.tune): the search layer does not import the entry points.
"""
from __future__ import annotations

import json
import math
import os

from rtsearch.errors import UsageError
from rtsearch.storage import save_plot, write_json

# name: (what each trial reports to the sampler, its direction, what the front is taken on)
OBJECTIVES = {"accuracy": ("accuracy", "max", "val_accuracy"),
              "latency": ("macs_ratio", "min", "latency_ms"),
              "bytes": ("params_ratio", "min", "stored_bytes")}
DEFAULT_OBJECTIVES = "accuracy,latency,bytes"
GRID = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)      # budgets per decade (module docstring)
BATCH, THREADS, TIMED_RUNS = 64, 1, 30                          # the bench's measurement (rtsearch.bench_pareto)
REFERENCE_KIND = "tp-l1"
REFERENCE_DIR = os.path.join("runs", "pareto")                  # the bench's runs folder (rtsearch.bench --pareto)
LATENCY_FILE = "latency.json"       # in a trial's results folder
REFERENCE_FILE = "reference.json"   # in the sweep's results folder
PICTURE = "front.png"
ALIAS_PREFIX = "front-"


# ---------------------------------------------------------------------------------------------- the settings

def parse_span(text: str) -> tuple[float, float]:
    """'LO:HI' -> (lo, hi), 0 < lo < hi <= 1, or a UsageError naming --front and the fix."""
    try:
        lo, hi = (float(part) for part in text.split(":"))
    except ValueError:
        raise UsageError(f"--front must be LO:HI, the MACs budgets searched, e.g. --front 0.03:0.3; got {text!r}") \
            from None
    if not (0.0 < lo <= 1.0 and 0.0 < hi <= 1.0) or math.isnan(lo) or math.isnan(hi):
        raise UsageError(f"--front {text}: both ends must be in (0, 1]; pass e.g. --front 0.03:0.3")
    if lo >= hi:
        raise UsageError(f"--front {text} is empty or inverted: pass LO:HI with LO < HI, e.g. --front 0.03:0.3")
    if len(budget_grid(lo, hi)) < 2:
        grid = ", ".join(f"{g:g}" for g in GRID)
        raise UsageError(f"--front {text} holds fewer than two of the searched budgets ({grid} "
                         f"per decade): widen it, e.g. --front {lo:g}:{min(1.0, 4 * lo):g}")
    return lo, hi


def parse_objectives(text: str | None) -> list[str]:
    """The objectives named in `text` (None: all three), accuracy first; a UsageError for an unknown or repeated
    name, or a front without accuracy or without a cost."""
    names = [n.strip() for n in (text or DEFAULT_OBJECTIVES).split(",")]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise UsageError(f"--objectives: unknown objective {unknown[0]!r}: choose from {', '.join(OBJECTIVES)}, "
                         f"e.g. --objectives {DEFAULT_OBJECTIVES}")
    if len(set(names)) != len(names):
        raise UsageError(f"--objectives {text} names an objective twice: name each once")
    if "accuracy" not in names or len(names) < 2:
        raise UsageError(f"--objectives {text}: a front trades accuracy against a cost: pass accuracy and latency, "
                         f"bytes or both, e.g. --objectives {DEFAULT_OBJECTIVES}")
    return ["accuracy"] + [n for n in OBJECTIVES if n in names and n != "accuracy"]


def budget_grid(lo: float, hi: float) -> list[float]:
    """The budgets a front sweep searches: GRID's values per decade within [lo, hi]."""
    values = set()
    for decade in range(-6, 1):
        for g in GRID:
            b = float(f"{g * 10.0 ** decade:.10g}")
            if lo - 1e-12 <= b <= hi + 1e-12 and b <= 1.0:
                values.add(b)
    return sorted(values)


def sampler_objectives(objectives: list[str]) -> tuple[list[str], list[str]]:
    """(metrics, modes) of Ray Tune's OptunaSearch: the keys every trial reports in their place (OBJECTIVES)."""
    return [OBJECTIVES[o][0] for o in objectives], [OBJECTIVES[o][1] for o in objectives]


def reference_budgets(lo: float, hi: float, available) -> list[float]:
    """Of the bench's Torch-Pruning L1 budgets (`available`), those within [lo, hi], and its nearest ones outside
    where an end is not among them, so that the curve spans the front."""
    budgets = sorted(available)
    inside = [b for b in budgets if lo <= b <= hi]
    below = [b for b in budgets if b < lo]
    above = [b for b in budgets if b > hi]
    if below and lo not in inside:
        inside.insert(0, below[-1])
    if above and hi not in inside:
        inside.append(above[0])
    return inside


# ---------------------------------------------------------------------------------------------- the front

def dominates(p: dict, q: dict, keys: list[tuple[str, str]]) -> bool:
    """p is at least as good as q on every (key, "max"|"min") and better on one."""
    better = False
    for key, mode in keys:
        a, b = (p[key], q[key]) if mode == "max" else (-p[key], -q[key])
        if a < b:
            return False
        better = better or a > b
    return better


def undominated(points: list[dict], keys: list[tuple[str, str]]) -> list[dict]:
    """The points no other point dominates on `keys`, in the given order; points equal on every key are all kept."""
    return [p for p in points if not any(dominates(q, p, keys) for q in points if q is not p)]


def non_dominated(points: list[dict], objectives: list[str]) -> list[dict]:
    """The points no other point dominates on the objectives' front keys (OBJECTIVES)."""
    return undominated(points, [(OBJECTIVES[o][2], OBJECTIVES[o][1]) for o in objectives])


def members(trials: list[dict], objectives: list[str]) -> list[dict]:
    """The front among the completed trials with every figure it is taken on, highest validation accuracy first."""
    keys = [OBJECTIVES[o][2] for o in objectives]
    pool = [t for t in trials if t["status"] == "completed" and all(t.get(k) is not None for k in keys)]
    return sorted(non_dominated(pool, objectives), key=lambda t: (-t["val_accuracy"], t["config"].get("budget", 0)))


def aliases(front: list[dict]) -> dict:
    """trial id -> its alias in the Model Registry: front-<budget>, the budget's point written "_", and for a second
    member at the same budget front-<budget>-2 and so on (`front` in its order)."""
    from rtsearch.search.registry import alias
    out, seen = {}, {}
    for t in front:
        name = alias(f"{t['config']['budget']:g}", ALIAS_PREFIX)
        seen[name] = seen.get(name, 0) + 1
        out[t["trial_id"]] = name + ("" if seen[name] == 1 else f"-{seen[name]}")
    return out


# ---------------------------------------------------------------------------------------------- measurement

def read_latency(trial_folder: str) -> dict | None:
    try:
        with open(os.path.join(trial_folder, LATENCY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def measure_trials(bench, settings: dict, trials: dict, log=print) -> int:
    """Time each completed trial's deployed model, one after the other (the bench's measurement, `bench.measure`);
    `trials`: trial id -> (its run folder, from its last checkpoint; its results folder), where latency.json is
    written. A trial timed before (a resumed sweep) is not timed again. Returns how many were timed now."""
    timed = 0
    for trial_id, (run_dir, folder) in trials.items():
        if read_latency(folder) is not None:
            continue
        with open(os.path.join(run_dir, "metrics.json")) as f:
            budget = json.load(f)["config"]["budget"]
        row = bench.measure([{"model": settings["model"], "kind": "front", "budget": budget,
                                     "seed": settings["seed"], "out": run_dir}], [BATCH], TIMED_RUNS, THREADS)[0]
        write_json(os.path.join(folder, LATENCY_FILE), {k: row[k] for k in (
            "batch", "form", "median_ms", "iqr_ms", "eager_ms", "file_bytes")} | {"threads": THREADS})
        timed += 1
        log(f"trial {trial_id} (budget {budget:g}): {row['median_ms']:.3f} ms per batch of {BATCH} ({row['form']})")
    return timed


def reference_runs(bench, settings: dict, span: list[float]) -> list[dict]:
    """Torch-Pruning L1's runs beside the front, laid out as the bench lays them out (`bench.folder`)."""
    return [{"dataset": settings["dataset"], "model": settings["model"], "kind": REFERENCE_KIND, "budget": b,
             "seed": settings["seed"],
             "out": bench.folder(REFERENCE_DIR, settings["dataset"], settings["model"], REFERENCE_KIND, b,
                                 settings["seed"])}
            for b in reference_budgets(*span, bench.KINDS[REFERENCE_KIND][1])]


def make_reference(bench, settings: dict, results_dir: str, log=print) -> list[dict]:
    """Make (or reuse) and time Torch-Pruning L1's runs at `reference_budgets` with the bench's own functions
    (`bench.make_runs`, `bench.measure`); written to reference.json once."""
    path = os.path.join(results_dir, REFERENCE_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)["rows"]
    runs = reference_runs(bench, settings, settings["front"]["span"])
    listed = ", ".join(f"{r['budget']:g}" for r in runs)
    log(f"Torch-Pruning L1 beside the front: budgets {listed} in "
        f"{REFERENCE_DIR}/ (made as rtsearch.bench --pareto makes them, reused where it made them)")
    bench.make_runs(runs, settings["data_dir"], log=log)
    rows = bench.measure(runs, [BATCH], TIMED_RUNS, THREADS)
    for row, run in zip(rows, runs):
        row["command"] = reference_command(bench, run, settings["data_dir"])
    write_json(path, {"rows": rows})
    return rows


def reference_command(bench, run: dict, data_dir: str | None) -> str:
    """The rtsearch.train command of one reference run, as the bench runs it."""
    return " ".join(["python -m rtsearch.train", "--dataset", run["dataset"], "--model", run["model"], "--seed",
                     str(run["seed"]), "--budget", f"{run['budget']:g}", *bench.KINDS[REFERENCE_KIND][0],
                     "--out", run["out"], *(["--data-dir", "DIR"] if data_dir else [])])


def read_reference(results_dir: str) -> list[dict]:
    try:
        with open(os.path.join(results_dir, REFERENCE_FILE)) as f:
            return json.load(f)["rows"]
    except (OSError, ValueError, KeyError):
        return []


# ---------------------------------------------------------------------------------------------- the report

def refused(settings: dict, member: dict) -> str | None:
    """Why a member is not registered (it misses its own budget on test, rtsearch.search.registry.refusal), or None."""
    from rtsearch.config import RunConfig
    from rtsearch.search.registry import refusal
    param_budget = member["config"].get("param_budget", settings.get("param_budget"))
    return refusal(member, member["config"]["budget"], RunConfig.param_budget if param_budget is None else param_budget)


def summarize(results_dir: str, settings: dict, trials: list[dict]) -> dict:
    """The front's part of summary.json: its objectives, members (highest validation accuracy first, with the alias
    each is registered under, or why it is not), how many trials were timed, and Torch-Pruning L1's timed runs."""
    objectives = settings["front"]["objectives"]
    front = [{**t, "refused": refused(settings, t)} for t in members(trials, objectives)]
    named = aliases([t for t in front if not t["refused"]])
    return {"span": settings["front"]["span"], "objectives": objectives, "grid": settings["front"]["grid"],
            "members": [{**t, "alias": named.get(t["trial_id"])} for t in front],
            "timed": sum(1 for t in trials if t.get("latency_ms") is not None),
            "completed": sum(1 for t in trials if t["status"] == "completed"),
            "reference": read_reference(results_dir)}


def _g(value, fmt=".4f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown_lines(front: dict) -> list[str]:
    """The front's section of summary.md: how it was chosen, its table, Torch-Pruning L1's runs and the picture."""
    lo, hi = front["span"]
    said = {"accuracy": "validation accuracy (higher)", "latency": f"deployed latency (lower; batch {BATCH}, "
            f"{THREADS} thread, timed after the sweep, one trial at a time)", "bytes": "stored bytes (lower)"}
    lines = ["## Front", "",
             f"The MACs budget was searched in {lo:g}:{hi:g} ({', '.join(f'{b:g}' for b in front['grid'])}) with "
             f"the other settings. The front: the completed trials that no other completed trial beats on every "
             f"one of {', '.join(said[o] for o in front['objectives'])}; chosen on the validation split, the test "
             f"figures beside them. The sampler saw validation accuracy, MACs ratio (for latency) and params ratio "
             f"(for bytes): latency timed while trials share the cores is noise (rtsearch/search/front.py). "
             f"{front['timed']} of {front['completed']} completed trial(s) timed; {len(front['members'])} on the "
             f"front. Latency: the faster of deployed.pt as loaded and its TorchScript form, median of "
             f"{TIMED_RUNS} timed runs on the first {BATCH} test images (rtsearch/bench_pareto.py).", ""]
    keys = sorted({k for t in front["members"] for k in t["config"] if k != "budget"})
    lines += ["| budget | trial | val accuracy | test accuracy | MACs ratio (test) | latency ms (batch 64) | "
              "stored bytes | alias | " + " | ".join(keys) + " |", "|" + "---|" * (8 + len(keys))]
    for t in front["members"]:
        alias = f"`{t['alias']}`" if t["alias"] else "not registered: misses its budget on test"
        lines.append(f"| {t['config']['budget']:g} | `{t['trial_id']}` | {_g(t['val_accuracy'])} | "
                     f"{_g(t['accuracy'])} | {_g(t['macs_ratio'])} | {_g(t['latency_ms'], '.3f')} | "
                     f"{_g(t['stored_bytes'], '.0f')} | {alias} | "
                     + " | ".join(_g(t["config"].get(k), ".3g") for k in keys) + " |")
    if not front["members"]:
        lines.append("| - | no completed trial with every figure | | | | | | |" + " |" * len(keys))
    if front["reference"]:
        lines += ["", "Torch-Pruning L1 beside it (fixed-ratio runs, test split, timed the same way):", "",
                  "| budget | test accuracy | MACs ratio | latency ms (batch 64) | stored bytes | run |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['budget']:g} | {_g(r['accuracy'])} | {_g(r['macs_ratio'])} | {_g(r['median_ms'], '.3f')} | "
                  f"{_g(r['stored_bytes'], '.0f')} | `{r['command']}` |" for r in front["reference"]]
    return lines + ["", f"![test accuracy against deployed latency: the front and Torch-Pruning L1]({PICTURE})", ""]


def plot(front: dict, trials: list[dict], name: str, path: str) -> None:
    """Test accuracy against measured latency: every timed trial, the front's members (chosen on validation, on up
    to three objectives, so points rather than a line through them) and Torch-Pruning L1's runs with their own
    front."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    timed = [t for t in trials if t.get("latency_ms") is not None and t.get("accuracy") is not None]
    if timed:
        ax.scatter([t["latency_ms"] for t in timed], [t["accuracy"] for t in timed], s=28, facecolors="none",
                   edgecolors="gray", label="trials")
    on = [t for t in front["members"] if t.get("latency_ms") is not None and t.get("accuracy") is not None]
    if on:
        ax.scatter([t["latency_ms"] for t in on], [t["accuracy"] for t in on], s=36, color="C0", zorder=3,
                   label="front members, by budget (chosen on validation)")
        for t in on:
            ax.annotate(f"{t['config']['budget']:g}", (t["latency_ms"], t["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ref = front["reference"]
    if ref:
        ax.scatter([r["median_ms"] for r in ref], [r["accuracy"] for r in ref], marker="s", color="C1", s=30)
        line = sorted(undominated(ref, [("accuracy", "max"), ("median_ms", "min")]), key=lambda r: r["median_ms"])
        ax.plot([r["median_ms"] for r in line], [r["accuracy"] for r in line], "-", color="C1",
                label="Torch-Pruning L1 (its front)")
    ax.set_xlabel(f"deployed latency, ms per batch of {BATCH} ({THREADS} thread)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{name}: accuracy against latency", fontsize=9)
    save_plot(fig, ax, path)


def closing_lines(front: dict) -> list[str]:
    lines = [f"front ({', '.join(front['objectives'])}; chosen on validation): {len(front['members'])} of "
             f"{front['completed']} completed trial(s)"]
    for t in front["members"]:
        lines.append(f"  budget {t['config']['budget']:g}: trial {t['trial_id']}, val accuracy {_g(t['val_accuracy'])}"
                     f", test accuracy {_g(t['accuracy'])}, {_g(t['latency_ms'], '.3f')} ms, "
                     f"{_g(t['stored_bytes'], '.0f')} bytes")
    return lines
