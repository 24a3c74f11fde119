"""The one-line baseline every sweep is set against: fixed-ratio static-only pruning at the sweep's budget.

After a budget's trials the driver runs it once: the same uniform static pruning ratio on every layer,
the largest that meets the MACs budget, no agents, fine-tuned as many epochs as a trial that runs every
iteration (its warm-up plus one per iteration) at the default fine-tuning learning rate, with the
sweep's seed, data and held-out share. Its test figures land in <results-dir>/<name>/baselines/b<budget>.json
and the summary sets the best trial's test accuracy against it: a search that cannot beat this run has
bought nothing. A sweep of fixed-ratio trials, or of one model for a budget range, has no such baseline.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import time

from rtsearch import data, methods
from rtsearch.config import RunConfig
from rtsearch.search.names import budget_key, sweep_method
from rtsearch.storage import write_json

FOLDER = "baselines"
KEYS = ("accuracy", "macs_ratio", "params_ratio", "score", "feasible")


def path(results_dir: str, budget: float) -> str:
    return os.path.join(results_dir, FOLDER, f"b{budget_key(budget)}.json")


def wanted(settings: dict) -> bool:
    return (bool(settings.get("baseline", True)) and not settings.get("fixed_ratios")
            and not settings.get("budget_range"))


def config(settings: dict, budget: float, out: str) -> RunConfig:
    """The baseline's run: the sweep's data, seed and held-out share; the epochs of a full trial."""
    return RunConfig(dataset=settings["dataset"], model=settings["model"], budget=budget, seed=settings["seed"],
                     data_dir=settings["data_dir"], holdout_share=settings.get("holdout_share", 0.0),
                     dense_epochs=settings.get("dense_epochs"), method="static-only", fixed_ratios=True,
                     iterations=trial_finetuning(settings) + RunConfig.warmup_epochs, out=out,
                     device="cpu" if settings.get("device") == "cpu" else "auto")    # the driver's GPU, if any


def trial_finetuning(settings: dict) -> int:
    """A full trial's fine-tuning iterations, warm-up aside: the sweep's iterations, or for the ladder (whose
    iterations are its agent's) its rungs' RunConfig default."""
    return methods.get(sweep_method(settings)).trial_finetuning(settings["max_iterations"])


def command(cfg: RunConfig) -> str:
    """The rtsearch.train command that runs the same baseline on its own."""
    args = ["--dataset", cfg.dataset, "--model", cfg.model, "--budget", f"{cfg.budget:g}", "--seed", str(cfg.seed),
            "--iterations", str(cfg.iterations), "--fixed-ratios", "--method", "static-only", "--out", cfg.out]
    if cfg.data_dir:
        args += ["--data-dir", cfg.data_dir]
    if cfg.holdout_share:
        args += ["--holdout-share", f"{cfg.holdout_share:g}"]
    if cfg.dense_epochs:
        args += ["--dense-epochs", str(cfg.dense_epochs)]
    return "python -m rtsearch.train " + shlex.join(args)


def standard_error(accuracy: float, other: float, images: int) -> float:
    """One standard error of the difference of two accuracies, each on `images` test images (binomial)."""
    return math.sqrt((accuracy * (1 - accuracy) + other * (1 - other)) / images)


def compare(best_accuracy: float, record: dict) -> tuple[float, float, str]:
    """The best trial against the baseline `record`: (difference, one standard error of it, the call),
    'better' or 'worse' only beyond two standard errors, else 'within noise'."""
    gain = best_accuracy - record["accuracy"]
    se = standard_error(best_accuracy, record["accuracy"], record["test_images"])
    return gain, se, "within noise" if abs(gain) < 2 * se else ("better" if gain > 0 else "worse")


def read(results_dir: str, budget: float) -> dict | None:
    try:
        with open(path(results_dir, budget)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_once(state: dict, budget: float, results_dir: str) -> dict | None:
    """Run the budget's baseline unless the sweep has it already (a resumed sweep runs it once)."""
    from rtsearch.methods import run

    settings, done = state["settings"], read(results_dir, budget)
    if not wanted(settings) or done is not None:
        return done
    key = budget_key(budget)
    cfg = config(settings, budget, os.path.join("runs", FOLDER, f"{state['name']}-b{key}"))
    print(f"[budget {key}] baseline: fixed-ratio static-only pruning, {cfg.iterations} fine-tuning epochs "
          f"({command(cfg)})", flush=True)
    started = time.time()
    metrics = run(cfg, log=lambda message: print(f"[budget {key}] baseline: {message}", flush=True))
    test_images = len(data.load(cfg.dataset, cfg.seed, cfg.data_dir).test[1])
    record = {**{k: metrics[k] for k in KEYS}, "budget": budget, "epochs": cfg.iterations, "test_images": test_images,
              "seconds": time.time() - started, "run_dir": os.path.abspath(cfg.out), "command": command(cfg)}
    write_json(path(results_dir, budget), record)
    return record
