"""Per-iteration bookkeeping of one run: progress lines, checkpoints, best state, metrics.json."""
from __future__ import annotations

import os
import shutil
import time
from typing import Callable

import numpy as np

from rtsearch.config import RunConfig
from rtsearch.storage import write_json
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.surgery import export
from rtsearch.net.metrics import feasible, iters_to_best, score
from rtsearch.net.supervised import evaluate


class RunRecord:
    """Scores every iteration on validation, keeps the best state and writes the final metrics."""

    def __init__(self, cfg: RunConfig, dense_accuracy: float, on_iteration: Callable[[dict], None] | None = None,
                 log=print, history: list | None = None, seconds_before: float = 0.0):
        self.cfg, self.dense_accuracy, self.on_iteration, self.log = cfg, dense_accuracy, on_iteration, log
        self.history: list[dict] = history or []
        self.started = time.time() - seconds_before
        os.makedirs(cfg.out, exist_ok=True)
        self.checkpoint_path = os.path.join(cfg.out, "checkpoint.pt")
        self.best_path = os.path.join(cfg.out, "best.pt")

    @staticmethod
    def has_checkpoint(out: str) -> bool:
        """Whether the run in `out` checkpointed an iteration (so --resume has something to continue)."""
        return os.path.isfile(os.path.join(out, "checkpoint.pt"))

    @classmethod
    def resumed(cls, cfg: RunConfig, dense_accuracy: float, on_iteration=None, log=print) -> tuple["RunRecord", dict]:
        """The record of the run in cfg.out as its last checkpoint left it, and that checkpoint."""
        state = checkpoint.load(os.path.join(cfg.out, "checkpoint.pt"))
        record = cls(cfg, dense_accuracy, on_iteration, log, history=state["history"],
                     seconds_before=state["history"][-1]["seconds"])
        log(f"resumed {cfg.out} after iteration {len(record.history)}")
        return record, state

    @property
    def best_row(self) -> dict | None:
        return max(self.history, key=lambda r: r["score"]) if self.history else None

    @property
    def seconds(self) -> float:
        return time.time() - self.started

    def iteration(self, net, static_ratios, val: dict, params_ratio: float, extra: dict | None = None,
                  run_state: dict | None = None, before_checkpoint: Callable[[bool], None] | None = None) -> dict:
        """Record one finished iteration (validation metrics) and checkpoint it.

        `before_checkpoint(is_best)` runs before the checkpoint is written, so whatever it saves
        (the agents) is on disk before the checkpoint says the iteration is done."""
        row = self.scored(val, params_ratio, extra)
        if before_checkpoint:
            before_checkpoint(self.best_row is None or row["score"] > self.best_row["score"])
        self.history.append(row)
        checkpoint.save(self.checkpoint_path, net, static_ratios, history=self.history, config=self.cfg.to_dict(),
                        run_state=run_state or {}, dense_accuracy=self.dense_accuracy)
        if self.best_row is row:
            shutil.copyfile(self.checkpoint_path, self.best_path)
        self.announce(row)
        return row

    def scored(self, val: dict, params_ratio: float, extra: dict | None = None) -> dict:
        """One iteration's row from its validation metrics: score, feasibility, the best score so far."""
        cfg = self.cfg
        row = {"iteration": len(self.history) + 1, "accuracy": val["accuracy"], "macs_ratio": val["macs_ratio"],
               "macs_ratio_p95": val["macs_ratio_p95"], "params_ratio": params_ratio,
               "score": score(val["accuracy"], val["macs_ratio"], params_ratio, cfg.budget, cfg.param_budget),
               "feasible": feasible(val["macs_ratio"], params_ratio, cfg.budget, cfg.param_budget),
               "seconds": self.seconds, **(extra or {})}
        if "per_input" in val:      # the sweep's tie-breaker (search/summary.py): finer than accuracy on a small split
            per = val["per_input"]
            row["correct_confidence"] = float((per["correct"].float() * per["confidence"].float()).mean())
        # the best validation score so far: what a trial is ranked by, at every step
        row["best_score"] = max(row["score"], self.best_row["score"]) if self.best_row else row["score"]
        return row

    def announce(self, row: dict, total: int | None = None) -> None:
        """The progress line of a recorded row (of `total` iterations, default the run's), and the caller's
        `on_iteration` (a Tune trial reports it)."""
        self.log(progress_line(row, total or self.cfg.iterations))
        if self.on_iteration:
            self.on_iteration(row)

    def holdout(self, held: dict, size: int, params_ratio: float) -> dict:
        """metrics.json "holdout": the search's second look at its top trials (data.hold_out), from the held-out
        split's accuracy and MACs ratio."""
        cfg = self.cfg
        return {"size": size, "accuracy": held["accuracy"], "macs_ratio": held["macs_ratio"],
                "score": score(held["accuracy"], held["macs_ratio"], params_ratio, cfg.budget, cfg.param_budget)}

    def finish(self, test: dict, params_ratio: float, stored_bytes: int, extra: dict | None = None) -> dict:
        """Write metrics.json: test-set figures of the best iteration (docs/guide.md, "Run folders and what a run
        writes")."""
        cfg = self.cfg
        scores = [r["score"] for r in self.history]
        metrics = {"accuracy": test["accuracy"], "dense_accuracy": self.dense_accuracy,
                   "macs_ratio": test["macs_ratio"], "macs_ratio_p95": test["macs_ratio_p95"],
                   "macs_ratio_std": test["macs_ratio_std"],
                   "params_ratio": params_ratio, "stored_bytes": stored_bytes,
                   "score": score(test["accuracy"], test["macs_ratio"], params_ratio, cfg.budget, cfg.param_budget),
                   "feasible": feasible(test["macs_ratio"], params_ratio, cfg.budget, cfg.param_budget),
                   "iterations": len(self.history), "iters_to_best": iters_to_best(scores),
                   "best_iteration": max(range(len(scores)), key=scores.__getitem__) + 1 if scores else 0,
                   "seconds": self.seconds, "mlflow_run_id": cfg.mlflow_run_id,
                   "budget": cfg.budget, "param_budget": cfg.param_budget, "method": cfg.method,
                   "config": cfg.to_dict(), "history": self.history, **(extra or {})}
        write_json(os.path.join(cfg.out, "metrics.json"), metrics)
        return metrics


def finish(record: RunRecord, net, splits, cost: CostModel, static_ratios, policy, extra=None) -> dict:
    """Evaluate the given state on the test split, export it, and write metrics.json."""
    test = evaluate(net, cost, *splits.test, static_ratios, policy)
    per_input = {k: v.numpy() for k, v in test.pop("per_input").items()}
    np.savez(os.path.join(record.cfg.out, "test_per_input.npz"), **per_input)  # for input-dependence analysis
    exported = export(net, static_ratios, os.path.join(record.cfg.out, "model.pt"),
                      drop_predictors=not record.cfg.predictors_kept)
    params_ratio = exported["params"] / cost.dense_params
    if splits.holdout is not None:      # the search's second look at its top trials (data.hold_out)
        held = evaluate(net, cost, *splits.holdout, static_ratios, policy)
        extra = {**(extra or {}), "holdout": record.holdout(held, len(splits.holdout[1]), params_ratio)}
    return record.finish(test, params_ratio, exported["bytes"], extra)


def progress_line(row: dict, total: int) -> str:
    rewards = "".join(f"  {k} {row[k]:+.3f}" for k in ("runtime_reward", "static_reward") if k in row)
    return (f"iter {row['iteration']:>3}/{total}  acc {row['accuracy']:.4f}  macs {row['macs_ratio']:.3f} "
            f"(p95 {row['macs_ratio_p95']:.3f})  params {row['params_ratio']:.3f}  score {row['score']:.4f}"
            f"{rewards}  {row['seconds']:.1f}s")
