"""Sweep results (`python -m rtsearch.report <results-dir>/<name>` regenerates summary.md, summary.json
and pareto.png from what the sweep stored under <results-dir>/<name>/).

Layout (written by the sweep driver, rtsearch.tune, as results arrive; <sweep> is <results-dir>/<name>):

    <sweep>/sweep.json                    settings, command, per-budget state (MLflow parent runs, Tune dirs)
    <sweep>/trials/<trial_id>/trial.json  budget, sampled config, status, start time, attempts, MLflow run id
    <sweep>/trials/<trial_id>/history.jsonl   one validation row per iteration, as reported to Tune
    <sweep>/trials/<trial_id>/metrics.json    the trial's metrics.json (test figures), once it completed
    <sweep>/baselines/b<budget>.json      the static-only baseline's test figures (search/sweep_baseline.py)
    <sweep>/trials/<trial_id>/latency.json, <sweep>/reference.json, <sweep>/front.png   a --front sweep's
                                          timings, Torch-Pruning L1's runs and its picture (search/front.py)

Trials are ranked by their best validation score (what the search maximised); trials tied on it
(a few hundred validation images make ties common) are ordered by the correct-class confidence of
that same iteration, on the validation split too: the mean over validation inputs of the softmax
probability of the predicted class where the prediction is right, 0 where it is wrong (between 0 and
the accuracy, and with a far finer resolution). `_rank_key` is that order. The top few completed
trials in it are then re-evaluated on held-out training images that no trial saw (their metrics.json
"holdout", rtsearch.data.hold_out) and `pick` names the best of them there. `SELECTION` says it in
words in every summary. The accuracy, MACs, params and test-score columns are on the test split for
completed trials; for trials ASHA stopped early they are the validation figures of their best
iteration (marked *), as no test evaluation ran.
"""
from __future__ import annotations

import json
import os
import time

from rtsearch import methods
from rtsearch.errors import UsageError
from rtsearch.net.metrics import iters_to_best, sweep_iters_to_best
from rtsearch.storage import replacing, save_plot, write_json
from rtsearch.search import front as fronts
from rtsearch.search import sweep_baseline as baselines
from rtsearch.search.names import sweep_method
from rtsearch.search.selection import (SELECTION, _g, _rank_key, chosen_by, format_config,  # noqa: F401 (re-exported)
                                      pick)

SWEEP_FILE = "sweep.json"
TRIALS = "trials"
FINAL_STATES = ("completed", "stopped", "error")
ROW_KEYS = ("iteration", "accuracy", "macs_ratio", "macs_ratio_p95", "params_ratio", "score", "feasible", "seconds",
            "beta_f", "env_steps", "rollout_macs_ratio", "env_runner_nodes", "correct_confidence", "curve")
PHASES = {"runtime": "runtime agent", "static": "static agent", "finetune": "fine-tuning", "eval": "evaluation",
          "rungs": "ladder: its rungs, made and run on every split",
          "agent": "ladder: its re-run agent, trained and scored"}
STATUS_TEXT = {"completed": "completed", "stopped": "stopped early (ASHA)", "error": "failed", "running": "unfinished"}


# ---------------------------------------------------------------------------------------------- storage

def trial_dir(results_dir: str, trial_id: str) -> str:
    return os.path.join(results_dir, TRIALS, trial_id)


def read_trial(results_dir: str, trial_id: str) -> dict:
    path = os.path.join(trial_dir(results_dir, trial_id), "trial.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_trial(results_dir: str, trial_id: str, record: dict) -> None:
    write_json(os.path.join(trial_dir(results_dir, trial_id), "trial.json"), record)


def append_row(results_dir: str, trial_id: str, row: dict) -> None:
    """One iteration's row. A row for an iteration already recorded (Tune retried the trial from a checkpoint
    taken before that iteration, as when its node died before the checkpoint was saved) replaces that row and
    every later one, so the file holds each iteration once, from the attempt that counts."""
    folder = trial_dir(results_dir, trial_id)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "history.jsonl")
    kept = [r for r in read_history(results_dir, trial_id) if int(r["iteration"]) < int(row["iteration"])]
    with (replacing(path) as tmp, open(tmp, "w") as f):
        for r in [*kept, row]:
            f.write(json.dumps(r, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_history(results_dir: str, trial_id: str) -> list[dict]:
    """Rows by iteration; an iteration reported twice (a trial resumed after a crash) keeps its last row."""
    path = os.path.join(trial_dir(results_dir, trial_id), "history.jsonl")
    rows = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue        # a line cut short by a killed driver
                rows[int(row["iteration"])] = row
    return [rows[i] for i in sorted(rows)]


def load_trials(results_dir: str) -> list[dict]:
    folder = os.path.join(results_dir, TRIALS)
    if not os.path.isdir(folder):
        return []
    records = [read_trial(results_dir, name) for name in sorted(os.listdir(folder))]
    return [r for r in records if r.get("trial_id")]


def reconcile(results_dir: str, budget: float, known: set) -> int:
    """After a sweep: trials Tune does not know (started just before a killed driver's last state
    save, then re-sampled under a new id) are marked lost and left out. Returns how many trials of
    this budget have reached a final state."""
    done = 0
    for record in load_trials(results_dir):
        if record.get("budget") != budget:
            continue
        if record["trial_id"] not in known:
            if record.get("status") != "lost":
                record["status"] = "lost"
                write_trial(results_dir, record["trial_id"], record)
        elif record.get("status") in FINAL_STATES:
            done += 1
    return done


# ---------------------------------------------------------------------------------------------- figures

def trial_summary(results_dir: str, record: dict) -> dict:
    """One trial's headline figures (see the module doc for which split they come from)."""
    trial_id = record["trial_id"]
    history = read_history(results_dir, trial_id)
    metrics_path = os.path.join(trial_dir(results_dir, trial_id), "metrics.json")
    metrics = None
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
    scores = [r["score"] for r in history]
    best = max(history, key=lambda r: r["score"]) if history else None
    t = {"trial_id": trial_id, "budget": record.get("budget"), "status": record.get("status", "running"),
         "started": record.get("started"), "attempts": record.get("attempts", 1), "config": record.get("config", {}),
         "error": record.get("error"), "mlflow_run_id": record.get("mlflow_run_id"),
         "iterations": len(history), "scores": scores,
         "score": best["score"] if best else None, "best_iteration": best["iteration"] if best else None,
         "tiebreak": best.get("correct_confidence") if best else None,
         "val_accuracy": best.get("accuracy") if best else None,
         "val_macs_ratio": best.get("macs_ratio") if best else None,
         "iters_to_best": iters_to_best(scores) if history else None,
         "split": None, "accuracy": None, "macs_ratio": None, "macs_ratio_p95": None, "params_ratio": None,
         "test_score": None, "feasible": None, "stored_bytes": None, "holdout_score": None, "holdout_size": None,
         "seconds": history[-1].get("seconds") if history else None,
         "phase_seconds": {p: sum(r.get(f"seconds_{p}", 0.0) or 0.0 for r in history) for p in PHASES
                           if any(f"seconds_{p}" in r for r in history)}}
    if metrics is not None:
        t.update({k: metrics.get(k) for k in ("accuracy", "macs_ratio", "macs_ratio_p95", "params_ratio", "feasible",
                                              "stored_bytes", "iters_to_best", "seconds")})
        t.update(split="test", test_score=metrics.get("score"),
                 mlflow_run_id=metrics.get("mlflow_run_id") or t["mlflow_run_id"])
        held = metrics.get("holdout") or {}
        t.update(holdout_score=held.get("score"), holdout_size=held.get("size"), curve=metrics.get("curve"))
    elif best is not None:
        t.update({k: best.get(k) for k in ("accuracy", "macs_ratio", "macs_ratio_p95", "params_ratio", "feasible")})
        t["split"] = "validation"
    latency = fronts.read_latency(trial_dir(results_dir, trial_id))       # a --front sweep's timing, once made
    t.update(latency_ms=latency["median_ms"] if latency else None, latency_form=latency["form"] if latency else None)
    return t


def summarize(results_dir: str) -> dict:
    path = os.path.join(results_dir, SWEEP_FILE)
    if not os.path.isfile(path):
        raise UsageError(f"{results_dir} holds no sweep ({SWEEP_FILE} is missing): pass a <results-dir>/<name> folder "
                         f"that python -m rtsearch.tune wrote")
    try:
        with open(path) as f:
            state = json.load(f)
        settings = state["settings"]
    except (json.JSONDecodeError, KeyError, OSError) as e:
        raise UsageError(f"{path} is corrupt ({type(e).__name__}): re-run the sweep or restore the file") from None
    cpus_per_trial = 1 + int(settings.get("num_env_runners") or 0)
    records = [r for r in load_trials(results_dir) if r.get("status") != "lost"]
    sweeps = {}
    for budget in settings["budgets"]:
        key = f"{budget:g}"
        trials = [trial_summary(results_dir, r) for r in records if r.get("budget") == budget]
        by_start = sorted(trials, key=lambda t: t["started"] or 0.0)
        ranked = sorted(trials, key=_rank_key)
        completed = [t for t in ranked if t["status"] == "completed"]
        pool = completed if completed else [t for t in ranked if t["score"] is not None]
        best = pick(pool)
        best_feasible = pick([t for t in completed if t["feasible"]])
        with_rows = [t["scores"] for t in by_start if t["scores"]]
        phase = {p: sum(t["phase_seconds"].get(p, 0.0) for t in trials) for p in PHASES
                 if any(p in t["phase_seconds"] for t in trials)}
        trial_seconds = sum(t["seconds"] or 0.0 for t in trials)
        base = baselines.read(results_dir, budget)
        beaten = (best["accuracy"] - base["accuracy"] if base and best and best["status"] == "completed"
                  and best["accuracy"] is not None else None)
        sweeps[key] = {
            "budget": budget, "trials": ranked, "best": best, "best_feasible": best_feasible,
            "best_chosen_by": chosen_by(best, pool), "baseline": base, "best_minus_baseline": beaten,
            "counts": {s: sum(1 for t in trials if t["status"] == s) for s in STATUS_TEXT},
            "iterations": sum(t["iterations"] for t in trials),
            "sweep_iters_to_best": sweep_iters_to_best(with_rows) if with_rows else None,
            "wall_seconds": state.get("sweeps", {}).get(key, {}).get("seconds"),
            "finished": state.get("sweeps", {}).get(key, {}).get("finished", False),
            "trial_seconds": trial_seconds, "reserved_cpu_seconds": trial_seconds * cpus_per_trial,
            "phase_seconds": phase, "phase_cpu_seconds": {p: v * cpus_per_trial for p, v in phase.items()},
            "parent_run_id": state.get("sweeps", {}).get(key, {}).get("parent_run_id"),
            "experiment_path": state.get("sweeps", {}).get(key, {}).get("experiment_path"),
        }
    pareto = [{"budget": sw["budget"], **{k: sw["best_feasible"][k] for k in (
        "trial_id", "accuracy", "macs_ratio", "params_ratio", "test_score", "score", "config")}}
        for sw in sweeps.values() if sw["best_feasible"]]
    from rtsearch.search.tracking import shown_uri
    # the store as the user named it (or relative to the sweep's working folder), never this machine's absolute path
    shown = settings.get("mlflow_uri_shown") or shown_uri(settings.get("mlflow_uri"),
                                                          os.path.dirname(os.path.dirname(os.path.abspath(results_dir))))
    settings = {**settings, "mlflow_uri": shown}
    front = (fronts.summarize(results_dir, settings, next(iter(sweeps.values()))["trials"])
             if settings.get("front") and sweeps else None)
    return {"name": state["name"], "command": state.get("command"), "settings": settings, "front": front,
            "mlflow_uri": shown, "selection": SELECTION,
            "mlflow_experiment_id": state.get("mlflow_experiment_id"), "sweeps": sweeps, "pareto": pareto,
            "cpus_per_trial": cpus_per_trial, "wall": state.get("wall"), "generated": time.time()}


# ---------------------------------------------------------------------------------------------- output

def parameter_budget_text(s: dict) -> str:
    if s["param_budget"] is not None:
        return f"parameter budget {_g(s['param_budget'], 'g')}"
    if "param_budget" not in s["space"]:
        return methods.get(sweep_method(s)).unset_param_budget
    return "parameter budget searched"


def _intro_lines(summary: dict) -> list[str]:
    """The page's title, what was searched and how, its command, the MLflow experiment and how the best is chosen."""
    s = summary["settings"]
    how = ("multi-objective, every trial run to its end (no ASHA: its one score would rank budgets, not trade them)"
           if s.get("front") else "ASHA on the validation score")
    lines = [f"# Sweep `{summary['name']}`", "",
             f"{s['dataset']} / {s['model']}, {s['search']} search (Optuna, seed {s['seed']}), {how}, "
             f"{s['num_samples']} trial(s) per budget of up to {s['max_iterations']} iteration(s)"
             f"{methods.get(sweep_method(s)).sweep_note}"
             f"{', fixed ratios (baseline, no agents)' if s.get('fixed_ratios') else ''}; {parameter_budget_text(s)}; "
             f"space `{os.path.basename(s['space_path'])}`: "
             + "; ".join(f"{k} {v}" for k, v in s["space"].items()) + "."
             + (" The first trial of each budget runs `rtsearch.train`'s defaults of the searched keys (moved into "
                "the space where they lie outside it)." if s.get("defaults_first") else ""),
             ""]
    if summary.get("command"):
        lines += [f"Produced by `{summary['command']}`; regenerate this page with "
                  f"`python -m rtsearch.report {os.path.join(s.get('results_dir', 'results'), summary['name'])}`.", ""]
    if summary.get("wall"):
        lines += [wall_text(summary, summary["wall"]["seconds"]), ""]
    lines += [f"MLflow: experiment `{summary['name']}` in `{s['mlflow_uri']}` (one parent run per budget, one child "
              f"run per trial).", ""]
    if s.get("front"):
        return lines + ["A front sweep names no single best: its front (below) is what it returns. Trials are listed "
                        "in the order of their best validation score; accuracy, MACs ratio, params ratio and test "
                        "score are on the test split for completed trials.", ""]
    lines += [f"How the best is chosen: {SELECTION} Trials are listed in the validation order. Accuracy, MACs ratio, "
              "params ratio and test score are on the test split for completed trials; for trials ASHA stopped "
              "early they are the validation figures of their best iteration (marked *).", ""]
    return lines


def _best_lines(sw: dict) -> list[str]:
    """One budget's best trial: its config and figures, its curve over a budget range, the baseline beside it."""
    best = sw["best"]
    if not best:
        return []
    lines = [f"**Best config**: trial `{best['trial_id']}` ({STATUS_TEXT[best['status']]}): "
             f"{format_config(best['config'])}  ",
             f"score {_g(best['score'])} (validation), test score {_g(best['test_score'])}, accuracy "
             f"{_g(best['accuracy'])}, MACs ratio {_g(best['macs_ratio'], '.4f')}, params ratio "
             f"{_g(best['params_ratio'], '.4f')}, {'feasible' if best['feasible'] else 'infeasible'}, "
             f"iterations to best {_g(best['iters_to_best'], 'd')} of {best['iterations']}.  ",
             f"Chosen by: {sw['best_chosen_by']}.", ""]
    if best.get("curve"):       # one model for a range of budgets: its test figures at each
        lines += ["The best trial's model at each evaluation budget of its range (test split):", "",
                  "| budget | accuracy | MACs ratio | score |", "|---|---|---|---|"]
        lines += [f"| {p['budget']:.3f} | {_g(p['accuracy'])} | {_g(p['macs_ratio'])} | {_g(p['score'])} |"
                  for p in best["curve"]]
        lines.append("")
    if sw.get("baseline"):
        lines += [f"{baseline_text(sw)} Its run: `{sw['baseline']['command']}`.", ""]
    return lines


def _trials_lines(sw: dict) -> list[str]:
    """One budget's counts and iterations, then its table of trials and the failed trials' errors (the sweep's wall
    time is the page's, at its top: one clock)."""
    c = sw["counts"]
    lines = [f"{len(sw['trials'])} trial(s): {c['completed']} completed, {c['stopped']} stopped early by ASHA, "
             f"{c['error']} failed{', ' + str(c['running']) + ' unfinished' if c['running'] else ''}"
             f"{'' if sw['finished'] else ' (sweep not finished: continue it with --resume)'}. "
             f"{sw['iterations']} iterations in all; **iterations to best for the sweep: "
             f"{_g(sw['sweep_iters_to_best'], 'd')}** (trials in start order, until the best trial reached its "
             f"best).", ""]
    keys = sorted({k for t in sw["trials"] for k in t["config"]})
    lines += ["| rank | trial | status | score (val) | confidence (val) | score (held out) | accuracy | MACs ratio | "
              "params ratio | test score | feasible | iters to best | iterations | " + " | ".join(keys) + " |",
              "|" + "---|" * (13 + len(keys))]
    for rank, t in enumerate(sw["trials"], 1):
        m = "*" if t["split"] == "validation" else ""
        lines.append(f"| {rank} | `{t['trial_id']}` | {STATUS_TEXT.get(t['status'], t['status'])} | "
                     f"{_g(t['score'])} | {_g(t.get('tiebreak'))} | {_g(t.get('holdout_score'))} | "
                     f"{_g(t['accuracy'])}{m} | {_g(t['macs_ratio'])}{m} | "
                     f"{_g(t['params_ratio'])}{m} | {_g(t['test_score'])} | {_g(t['feasible'])}{m} | "
                     f"{_g(t['iters_to_best'], 'd')} | {t['iterations']} | "
                     + " | ".join(_g(t["config"].get(k), ".3g") for k in keys) + " |")
    failed = [t for t in sw["trials"] if t["status"] == "error"]
    for t in failed:
        lines.append(f"\nTrial `{t['trial_id']}` failed: {t['error']}")
    return lines


def _time_lines(sw: dict, cpus_per_trial) -> list[str]:
    """One budget's trial-seconds and reserved CPU-seconds, in all and per phase where the runs recorded them: sums
    over trials that ran side by side, so not a wall time."""
    lines = ["", f"Time: trial-seconds, summed over trials: {sw['trial_seconds']:.0f} s; reserved CPU-seconds: "
                 f"{sw['reserved_cpu_seconds']:.0f} ({cpus_per_trial} CPU(s) per trial).", ""]
    if sw["phase_seconds"]:
        lines += ["| phase | seconds (sum over trials) | reserved CPU-seconds |", "|---|---|---|"]
        lines += [f"| {PHASES[p]} | {v:.1f} | {sw['phase_cpu_seconds'][p]:.1f} |"
                  for p, v in sw["phase_seconds"].items()]
    else:
        lines.append("Time per phase (runtime agent, static agent, fine-tuning, evaluation): not recorded by "
                     "these runs (fixed-ratio runs time whole iterations only).")
    lines.append("")
    return lines


def _budget_lines(summary: dict, key: str, sw: dict) -> list[str]:
    """The section of one budget: its best trial, its trials and where the time went."""
    s = summary["settings"]
    if s.get("front"):      # one sweep over the searched budgets: its trials, then the front (not a best)
        lo, hi = s["front"]["span"]
        return ([f"## Trials (MACs budget searched in {lo:g}:{hi:g})", ""] + _trials_lines(sw)
                + _time_lines(sw, summary["cpus_per_trial"]))
    lines = [f"## Budget {key}", ""]
    if s.get("budget_range"):
        lo, hi = s["budget_range"]
        lines += [f"Every trial trains one model for every budget in {lo:g}:{hi:g} (`--budget-range`); its score "
                  f"is the mean over the range's evaluation budgets, and the accuracy and MACs columns are at "
                  f"the range's top, {hi:g}.", ""]
    return lines + _best_lines(sw) + _trials_lines(sw) + _time_lines(sw, summary["cpus_per_trial"])


def _pareto_lines(summary: dict) -> list[str]:
    lines = ["## Pareto: best feasible trial per budget", ""]
    if summary["pareto"]:
        lines += ["| budget | trial | accuracy | MACs ratio | params ratio | test score | score (val) |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {p['budget']:g} | `{p['trial_id']}` | {_g(p['accuracy'])} | {_g(p['macs_ratio'])} | "
                  f"{_g(p['params_ratio'])} | {_g(p['test_score'])} | {_g(p['score'])} |" for p in summary["pareto"]]
    else:
        lines.append("No completed trial met its budgets (within 0.01).")
    return lines + ["", "![accuracy against MACs ratio](pareto.png)", ""]


def markdown(summary: dict) -> str:
    lines = _intro_lines(summary)
    for key, sw in summary["sweeps"].items():
        lines += _budget_lines(summary, key, sw)
    lines += fronts.markdown_lines(summary["front"]) if summary.get("front") else _pareto_lines(summary)
    return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, sw) in enumerate(summary["sweeps"].items()):
        color = colors[i % len(colors)]
        pts = [t for t in sw["trials"] if t["accuracy"] is not None and t["macs_ratio"] is not None]
        for feasible, style in ((True, {"facecolors": color}), (False, {"facecolors": "none"})):
            sel = [t for t in pts if bool(t["feasible"]) == feasible]
            if sel:
                ax.scatter([t["macs_ratio"] for t in sel], [t["accuracy"] for t in sel], edgecolors=color, s=36,
                           label=f"budget {key}, {'feasible' if feasible else 'infeasible'}", **style)
        ax.axvline(sw["budget"], color=color, linestyle=":", linewidth=1)
        if sw["best_feasible"]:
            b = sw["best_feasible"]
            ax.scatter([b["macs_ratio"]], [b["accuracy"]], marker="*", s=180, color=color, edgecolors="black", zorder=3)
    front = sorted(summary["pareto"], key=lambda p: p["macs_ratio"])
    if len(front) > 1:
        ax.plot([p["macs_ratio"] for p in front], [p["accuracy"] for p in front], color="gray", linewidth=1, zorder=1)
    ax.set_xlabel("MACs ratio (of the dense model)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{summary['name']}: trials (star: best feasible per budget; dotted: budget)", fontsize=9)
    save_plot(fig, ax, path)


def write(results_dir: str) -> dict:
    """Regenerate summary.json, summary.md and pareto.png; returns the summary."""
    summary = summarize(results_dir)
    write_json(os.path.join(results_dir, "summary.json"), summary)
    with replacing(os.path.join(results_dir, "summary.md")) as tmp, open(tmp, "w") as f:
        f.write(markdown(summary))
    plot(summary, os.path.join(results_dir, "pareto.png"))
    if summary.get("front"):
        fronts.plot(summary["front"], next(iter(summary["sweeps"].values()))["trials"], summary["name"],
                    os.path.join(results_dir, fronts.PICTURE))
    return summary


def baseline_text(sw: dict) -> str:
    """The best trial against the budget's fixed-ratio static-only baseline, in one sentence."""
    b = sw["baseline"]
    if sw.get("best_minus_baseline") is None:
        verdict = "the best trial did not complete, so no test comparison"
    else:
        gain, se, call = baselines.compare(sw["best"]["accuracy"], b)
        verdict = (f"best config minus it: {gain:+.4f} test accuracy, {call} (one seed, {b['epochs']} fine-tuning "
                   f"epochs each; one standard error of the difference on {b['test_images']} test images: {se:.4f})")
    return (f"Fixed-ratio static-only baseline (no agents, same seed and data): test accuracy {_g(b['accuracy'])} at "
            f"MACs ratio {_g(b['macs_ratio'])}, params ratio {_g(b['params_ratio'])}; {verdict}.")


def wall_text(summary: dict, seconds: float) -> str:
    """The sweep's one wall clock, labelled alike in the closing lines and summary.md: from rtsearch.tune having
    parsed its arguments to its closing lines, pre-training and baselines included; a --resume run counts itself."""
    resumed = bool((summary.get("wall") or {}).get("resumed"))
    parts = "dense pre-training and baseline" if baselines.wanted(summary["settings"]) else "dense pre-training"
    if resumed:
        return f"wall time, this --resume run incl. {parts}: {seconds:.0f} s (earlier runs not counted)"
    return f"wall time, whole sweep incl. {parts}: {seconds:.0f} s"


def closing_lines(summary: dict, results_dir: str, mlflow_uri: str | None, seconds: float) -> str:
    lines = [f"sweep {summary['name']!r} done; {wall_text(summary, seconds)}"]
    if summary.get("front"):
        return "\n".join(lines + fronts.closing_lines(summary["front"]) + _front_tail(summary, results_dir,
                                                                                    mlflow_uri))
    for key, sw in summary["sweeps"].items():
        b = sw["best"]
        if not b:
            lines.append(f"budget {key}: no trial produced a result")
            continue
        lines.append(f"budget {key}: best config (trial {b['trial_id']}, {STATUS_TEXT[b['status']]}): "
                     f"{format_config(b['config'])}")
        lines.append(f"  score {_g(b['score'])} (validation; test {_g(b['test_score'])}), "
                     f"accuracy {_g(b['accuracy'])}, "
                     f"MACs ratio {_g(b['macs_ratio'])}, params ratio {_g(b['params_ratio'])}, "
                     f"{'feasible' if b['feasible'] else 'infeasible'}; "
                     f"iterations to best {_g(b['iters_to_best'], 'd')} "
                     f"(trial), {_g(sw['sweep_iters_to_best'], 'd')} (sweep)")
        lines.append(f"  chosen by: {sw['best_chosen_by']}")
        if sw.get("baseline"):
            lines.append(f"  {baseline_text(sw)}")
    if len(summary["sweeps"]) > 1:
        lines.append("pareto (best feasible per budget): " + (", ".join(
            f"{p['budget']:g}: acc {_g(p['accuracy'])} macs {_g(p['macs_ratio'], '.3f')}" for p in summary["pareto"])
            or "none feasible"))
    if mlflow_uri:
        ui = f"mlflow ui --backend-store-uri {mlflow_uri}" if not mlflow_uri.startswith("http") else mlflow_uri
        lines.append(f"MLflow runs: experiment {summary['name']!r} in {mlflow_uri} (open with: {ui})")
        from rtsearch.search.registry import closing_line     # each budget's best model, or why it is not registered
        lines += [closing_line(summary["settings"], key, sw) for key, sw in summary["sweeps"].items()]
    lines.append(f"summary: {os.path.join(results_dir, 'summary.md')} (also summary.json, pareto.png)")
    return "\n".join(lines)


def _front_tail(summary: dict, results_dir: str, mlflow_uri: str | None) -> list[str]:
    """Where a front sweep's runs and registered models are, and its summary."""
    lines = []
    if mlflow_uri:
        from rtsearch.search.registry import front_line
        lines.append(f"MLflow runs: experiment {summary['name']!r} in {mlflow_uri}")
        lines += [front_line(summary["settings"], t) for t in summary["front"]["members"]]
    lines.append(f"summary: {os.path.join(results_dir, 'summary.md')} (also summary.json, {fronts.PICTURE}, "
                 f"pareto.png)")
    return lines
