"""The sweep driver's Tune callback: writes every trial result under the sweep's --results-dir (trials/) as it
arrives, prints progress, and closes the MLflow runs of trials that stop early or fail for good."""
from __future__ import annotations

import json
import os
import re
import time
from types import SimpleNamespace

from ray.tune import Callback

from rtsearch.search import summary as report

WAIT_NOTE_S = 60

# The sweep's clock (time.time() when rtsearch.tune had parsed its arguments) and the trials of the budgets still to
# run after the running one, set by the driver. They live here, not on the Recorder: Tuner.restore brings back the
# Recorder pickled with the interrupted experiment, built by an earlier run with that run's clock.
progress = SimpleNamespace(started=None, later_trials=0)


def duration(seconds: float) -> str:
    """45s, 3m12s, 1h04m."""
    seconds = int(round(max(seconds, 0.0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def time_left(trial_seconds: list[float], remaining: int, parallel: int) -> str:
    """What is left, from the mean seconds of the trials finished so far: `remaining` trials, `parallel` at a time
    (the most seen running at once); past a minute, in whole minutes (it is an estimate). Before any trial has
    finished there is nothing to go on."""
    if remaining <= 0:
        return "no trial left"
    if not trial_seconds:
        return "time left: estimating..."
    left = sum(trial_seconds) / len(trial_seconds) * remaining / max(1, min(parallel, remaining))
    if left < 60:
        return f"about {duration(left)} left"
    minutes = int(round(left / 60))
    return f"about {minutes}m left" if minutes < 60 else f"about {minutes // 60}h{minutes % 60:02d}m left"


class Recorder(Callback):
    """Driver side: writes every result under the sweep's trials/ folder as it arrives, prints one line
    per finished trial, and closes the MLflow runs of trials that ASHA stopped or that failed for good.

    A trial is written down as finished only once Tune's saved experiment state says so (checked
    at the end of each controller step, after Tune's own snapshot): a driver killed at any moment
    never leaves a trial that its folder calls finished but that Tune would run again on --resume."""

    def __init__(self, results_dir: str, budget: float, total: int, max_iterations: int, max_failures: int,
                 mlflow_uri: str | None, tag: str, experiment_path: str | None):
        self.results_dir, self.budget, self.total = results_dir, budget, total
        self.max_iterations, self.max_failures = max_iterations, max_failures
        self.mlflow_uri, self.tag = mlflow_uri, tag
        self.experiment_path = experiment_path if experiment_path and os.path.isabs(experiment_path) else None
        self._pending: dict = {}
        self._idle_since: float | None = None     # when the sweep last had pending trials and none running
        self.__dict__.update(self._run_local())

    @staticmethod
    def _run_local() -> dict:
        """What this run of the driver has seen: finished trials not yet confirmed, when each trial first started
        here, the seconds of the trials that started and finished here, the most trials running at once. A Recorder
        restored with an interrupted experiment starts them afresh."""
        return {"_pending": {}, "_began": {}, "_seconds": [], "_peak": 1}

    def __getstate__(self):                 # Tune pickles its callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k not in self._run_local()}

    def __setstate__(self, state):
        self.__dict__.update({**self._run_local(), **state})

    def _done(self) -> int:
        return sum(1 for t in report.load_trials(self.results_dir)
                   if t.get("budget") == self.budget and t.get("status") in report.FINAL_STATES)

    def _say(self, message: str) -> None:
        print(f"[{self.tag}] {message}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._pending.pop(trial.trial_id, None)
        record = report.read_trial(self.results_dir, trial.trial_id)
        searched = {k: v for k, v in trial.config.items() if k != "settings"}
        record.update({"trial_id": trial.trial_id, "budget": self.budget, "config": searched, "status": "running",
                       "attempts": record.get("attempts", 0) + 1})
        record.setdefault("started", time.time())
        report.write_trial(self.results_dir, trial.trial_id, record)
        running = len({t.trial_id for t in trials if t.status == "RUNNING"} | {trial.trial_id})
        self._began.setdefault(trial.trial_id, time.time())
        self._peak = max(self._peak, running)
        done = self._done()
        self._say(f"trial {trial.trial_id} started ({running} running, {done}/{self.total} done): "
                  f"{report.format_config(searched)} · {self._clock(done)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final"):
            metrics = json.loads(result["metrics_json"])
            report.write_json(os.path.join(report.trial_dir(self.results_dir, trial.trial_id), "metrics.json"), metrics)
            record = report.read_trial(self.results_dir, trial.trial_id)
            record["mlflow_run_id"] = result.get("mlflow_run_id")
            report.write_trial(self.results_dir, trial.trial_id, record)
            return
        row = {k: v for k, v in result.items() if k in report.ROW_KEYS or k.startswith("seconds_")
               or k.endswith("_reward")}
        report.append_row(self.results_dir, trial.trial_id, row)
        record = report.read_trial(self.results_dir, trial.trial_id)
        if record.get("mlflow_run_id") != result.get("mlflow_run_id"):
            record["mlflow_run_id"] = result.get("mlflow_run_id")
            report.write_trial(self.results_dir, trial.trial_id, record)

    def on_trial_complete(self, iteration, trials, trial, **info):
        completed = bool((trial.last_result or {}).get("final"))
        run_id = report.read_trial(self.results_dir, trial.trial_id).get("mlflow_run_id")
        if not completed and self.mlflow_uri and run_id:
            from rtsearch.search import tracking
            try:
                tracking.end_run(self.mlflow_uri, run_id, "KILLED", {tracking.STATUS_TAG: "stopped early (ASHA)"},
                                 only_if_running=True)
            except Exception as e:
                self._say(f"warning: could not close MLflow run {run_id}: {type(e).__name__}: {e}")
        self._pending[trial.trial_id] = {"status": "completed" if completed else "stopped", "ended": time.time()}

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} failed ({_error_line(trial)}); retry "
                  f"{trial.run_metadata.num_failures}/{self.max_failures} from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = report.read_trial(self.results_dir, trial.trial_id).get("mlflow_run_id")
        if self.mlflow_uri and run_id:
            from rtsearch.search import tracking
            try:
                tracking.end_run(self.mlflow_uri, run_id, "FAILED", {tracking.STATUS_TAG: "failed"})
            except Exception:
                pass
        self._pending[trial.trial_id] = {"status": "error", "error": _error_line(trial), "error_file": trial.error_file,
                                         "attempts_failed": trial.run_metadata.num_failures, "ended": time.time()}

    def on_step_end(self, iteration, trials, **info):
        self.say_what_it_waits_for(trials)
        if self._pending:
            if self.experiment_path is None:        # remote storage: no local copy of Tune's state to check
                self._flush(lambda trial_id: True)
                return
            stored = _stored_statuses(self.experiment_path) or {}
            self._flush(lambda trial_id: stored.get(trial_id) in ("TERMINATED", "ERROR"))

    def say_what_it_waits_for(self, trials, now: float | None = None, free: dict | None = None) -> None:
        """Every WAIT_NOTE_S while trials wait and none runs (a cluster that may still scale up): the
        resources one trial needs against what the cluster has free (`free`: ray.available_resources())."""
        now = time.time() if now is None else now
        pending = [t for t in trials if t.status == "PENDING"]
        if not pending or any(t.status == "RUNNING" for t in trials):
            self._idle_since = None
            return
        if self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= WAIT_NOTE_S:
            self._idle_since = now
            needs = _total(pending[0].placement_group_factory.bundles)
            if free is None:
                import ray
                free = ray.available_resources()
            free = {k: v for k, v in free.items() if k in needs}
            self._say(f"waiting: {len(pending)} trial(s) pending and none running; one trial needs "
                      f"{_fmt(needs)}, the cluster has {_fmt(free) or 'none of that'} free (an autoscaling cluster "
                      f"may still add nodes)")

    def on_experiment_end(self, trials, **info):
        self._flush(lambda trial_id: True)      # Tune has just saved its final state

    def _flush(self, confirmed) -> None:
        for trial_id in [t for t in self._pending if confirmed(t)]:
            update = self._pending.pop(trial_id)
            record = report.read_trial(self.results_dir, trial_id)
            record.update({k: v for k, v in update.items() if k != "attempts_failed"})
            report.write_trial(self.results_dir, trial_id, record)
            if trial_id in self._began:
                self._seconds.append(update["ended"] - self._began[trial_id])
            self._say(self.finished_line(record, update))

    def finished_line(self, record: dict, update: dict) -> str:
        """The line of a trial that has just finished: how many of the budget's trials have, its best validation
        score and how it ended, the best so far, the sweep's clock and the time left."""
        done = self._done()
        head = f"trial {done} of {self.total} finished: {record['trial_id']}"
        if update["status"] == "error":
            what = (f"failed for good after {update['attempts_failed']} attempt(s): {update['error']} "
                    f"(traceback: {update['error_file']})")
        else:
            t = report.trial_summary(self.results_dir, record)
            ended = ("completed" if update["status"] == "completed"
                     else f"stopped early by ASHA after {t['iterations']}/{self.max_iterations} iterations")
            what = f"score {report._g(t['score'])} (val), {ended}"
        return f"{head} {what} · {self._best_so_far()} · {self._clock(done)}"

    def _best_so_far(self) -> str:
        """The budget's leader among its finished trials, in the summary's validation order (completed trials
        first, as the summary's choice of the best takes them first)."""
        finished = [report.trial_summary(self.results_dir, r) for r in report.load_trials(self.results_dir)
                    if r.get("budget") == self.budget and r.get("status") in ("completed", "stopped")]
        scored = [t for t in finished if t["score"] is not None]
        pool = [t for t in scored if t["status"] == "completed"] or scored
        if not pool:
            return "best so far: none scored"
        best = min(pool, key=report._rank_key)
        return f"best so far {report._g(best['score'])} (trial {best['trial_id']})"

    def _clock(self, done: int) -> str:
        """Elapsed on the sweep's clock, and the time left for this budget's trials and those of the budgets after
        it."""
        elapsed = time.time() - (progress.started or min(self._began.values(), default=time.time()))
        remaining = self.total - done + progress.later_trials
        return f"elapsed {duration(elapsed)} · {time_left(self._seconds, remaining, self._peak)}"


def _total(bundles: list[dict]) -> dict:
    out: dict = {}
    for bundle in bundles:
        for k, v in bundle.items():
            out[k] = out.get(k, 0) + v
    return out


def _fmt(resources: dict) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items()))


def _stored_statuses(experiment_path: str) -> dict:
    """trial id -> status in the newest experiment state Tune saved (empty if there is none yet)."""
    import glob
    files = glob.glob(os.path.join(experiment_path, "experiment_state-*.json"))
    if not files:
        return {}
    try:
        with open(max(files, key=os.path.getmtime)) as f:
            data = json.load(f)
        statuses = {}
        for entry in data["trial_data"]:
            trial = entry[0] if isinstance(entry[0], dict) else json.loads(entry[0])
            statuses[trial["trial_id"]] = trial["status"]
        return statuses
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}                            # being written: confirm at a later step


def _error_line(trial) -> str:
    """The last exception line of the trial's error file (the traceback stays in that file)."""
    path, text = trial.error_file, ""
    if path and os.path.isfile(path):
        with open(path) as f:
            text = f.read()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    exc = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", ln)]
    return (exc[-1] if exc else lines[-1] if lines else "unknown error")[:300]
