"""The search: `python -m rtsearch.tune --budget 0.5 [--num-samples N] [--max-iterations N] ...`.

Ray Tune runs one trial per sampled configuration (Optuna TPE, or random with --search random),
ASHA stops weak trials early on the validation score, every trial is a `rtsearch.train.run` that
reports and checkpoints each iteration, and MLflow records the sweep as a parent run with one
child run per trial. `--budget 0.3,0.5,0.7` runs one sweep per budget. Results land in
results/<name>/ (summary.md, summary.json, pareto.png, trials/); `--resume` continues a sweep
that was interrupted, even by kill -9 of this driver.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from rtsearch import report, space as spaces
from rtsearch.cli import ArgumentParser, UsageError, check_dataset_and_model, fraction, guarded, quiet_libraries
from rtsearch.config import RunConfig

STATE_FILE = "trial_state.json"      # inside a trial's run folder, so it travels with its checkpoints
SEARCHES = ("tpe", "random")
SCORE = "score"


# --------------------------------------------------------------------------------------------------
# the trial (runs in a Ray worker, possibly on another node)

def _write_state(out: str, state: dict) -> None:
    tmp = os.path.join(out, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(out, STATE_FILE))


def _read_state(out: str) -> dict | None:
    try:
        with open(os.path.join(out, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_folder(experiment: str, trial_id: str) -> str:
    """The trial's live run folder: node-local scratch, outside the trial folder that Tune uploads
    to storage every few seconds (a live folder there is copied while it is being written). What
    must survive the node travels in the checkpoints reported to Tune."""
    return os.path.join(tempfile.gettempdir(), "rtsearch-trials", f"{experiment}-{trial_id}")


def trainable(config: dict) -> None:
    """One trial: rtsearch.train.run with the sampled values, reporting every iteration to Tune
    (with the run folder as checkpoint) and to its MLflow child run."""
    from ray import tune

    from rtsearch import tracking
    from rtsearch.train import run

    settings = config["settings"]
    os.environ["RTSEARCH_CACHE"] = settings["cache_dir"]
    ctx = tune.get_context()
    trial_id, trial_dir = ctx.get_trial_id(), ctx.get_trial_dir()
    out = run_folder(settings["experiment"], trial_id)
    state = {"reported": 0, "mlflow_run_id": None, "final": None}
    on_disk = _read_state(out)
    if on_disk and on_disk.get("final"):
        # It had finished, but Tune's saved state predates that (its driver was killed): report it again.
        tune.report(on_disk["final"])
        return
    restored = tune.get_checkpoint()
    if restored is not None:        # Tune retries / resumes this trial: continue from its last checkpoint
        shutil.rmtree(out, ignore_errors=True)
        restored.to_directory(out)
        with open(os.path.join(out, STATE_FILE)) as f:
            state = json.load(f)
    os.makedirs(out, exist_ok=True)
    if state["final"] is not None:
        # It had finished, but the driver died before Tune recorded that: report it again, compute nothing.
        tune.report(state["final"])
        return
    searched = {k: config[k] for k in settings["searched"]}
    cfg = RunConfig.from_dict({**settings["run"], **searched, "out": out})

    tracker = None
    ml = settings.get("mlflow")
    if ml:
        tracker = tracking.TrialRun(ml["uri"], ml["experiment_id"], ml["parent_run_id"], trial_id,
                                    run_name=f"{settings['experiment']}/{trial_id}",
                                    params={**searched, "budget": cfg.budget, "param_budget": cfg.param_budget,
                                            "iterations": cfg.iterations, "dataset": cfg.dataset,
                                            "model": cfg.model, "seed": cfg.seed, "trial_id": trial_id,
                                            "fixed_ratios": cfg.fixed_ratios},
                                    tags={"rtsearch.budget": cfg.budget}, run_id=state["mlflow_run_id"])
        cfg.mlflow_run_id = state["mlflow_run_id"] = tracker.run_id
        _write_state(out, state)

    log_path = os.path.join(out, "train.log")

    def log(message: str) -> None:
        with open(log_path, "a") as f:
            f.write(message + "\n")

    fail_on = settings.get("fail_on_iteration")
    failed_marker = os.path.join(trial_dir, ".injected_failure")

    def on_iteration(row: dict) -> None:
        i = row["iteration"]
        if fail_on and i == fail_on and not os.path.exists(failed_marker):
            open(failed_marker, "w").close()
            raise RuntimeError(f"injected failure at iteration {i} (--fail-on-iteration, first attempt only)")
        if not math.isfinite(row["score"]):
            raise FloatingPointError(f"score is NaN at iteration {i}: the trial is marked failed and retried")
        if i <= state["reported"]:
            return          # a restarted run replays iterations Tune already has (fixed-ratios runs start over)
        if tracker:
            tracker.log_row(row)
        state["reported"] = i
        _write_state(out, state)
        tune.report({**row, "final": False, "mlflow_run_id": cfg.mlflow_run_id},
                    checkpoint=tune.Checkpoint.from_directory(out))

    try:
        metrics = run(cfg, on_iteration=on_iteration, log=log, resume=os.path.isfile(os.path.join(out, "checkpoint.pt")))
    except BaseException as e:
        if tracker:
            try:
                tracking.end_run(tracker.uri, tracker.run_id, "FAILED",
                                 {tracking.STATUS_TAG: "failed", "rtsearch.error": f"{type(e).__name__}: {e}"[:500]})
            except Exception:
                pass
        raise
    if tracker:
        tracker.finish(metrics, [os.path.join(out, f) for f in ("metrics.json", "best.pt", "model.pt", "train.log")])
    history = metrics.get("history") or []
    best = max(history, key=lambda r: r["score"]) if history else {}
    state["final"] = {"iteration": metrics["iterations"], SCORE: best.get("score", metrics["score"]), "final": True,
                      "mlflow_run_id": cfg.mlflow_run_id, "metrics_json": json.dumps(metrics),
                      **{f"test_{k}": metrics[k] for k in ("accuracy", "macs_ratio", "params_ratio", "score",
                                                            "feasible")}}
    _write_state(out, state)
    tune.report(state["final"], checkpoint=tune.Checkpoint.from_directory(out))
    shutil.rmtree(out, ignore_errors=True)      # its final state lives on in that checkpoint


# --------------------------------------------------------------------------------------------------
# the driver

class FinishingASHA(ASHAScheduler):
    """ASHA that never stops a trial at its last iteration: stopping there saves nothing and would
    cost the trial its test evaluation and exported model."""

    def on_trial_result(self, tune_controller, trial, result):
        if result.get(self._time_attr, 0) >= self._max_t:
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class Recorder(Callback):
    """Driver side: writes every result under results/<name>/trials/ as it arrives, prints one line
    per finished trial, and closes the MLflow runs of trials that ASHA stopped or that failed for good.

    A trial is written down as finished only once Tune's saved experiment state says so (checked
    at the end of each controller step, after Tune's own snapshot): a driver killed at any moment
    never leaves a trial that results/ calls finished but that Tune would run again on --resume."""

    def __init__(self, results_dir: str, budget: float, total: int, max_iterations: int, max_failures: int,
                 mlflow_uri: str | None, tag: str, experiment_path: str | None):
        self.results_dir, self.budget, self.total = results_dir, budget, total
        self.max_iterations, self.max_failures, self.mlflow_uri, self.tag = max_iterations, max_failures, mlflow_uri, tag
        self.experiment_path = experiment_path if experiment_path and os.path.isabs(experiment_path) else None
        self._pending: dict = {}

    def __getstate__(self):                 # Tune pickles its callbacks with the experiment
        return {**self.__dict__, "_pending": {}}

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
        self._say(f"trial {trial.trial_id} started ({running} running, {self._done()}/{self.total} done): "
                  f"{report.format_config(searched)}")

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
            from rtsearch import tracking
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
            from rtsearch import tracking
            try:
                tracking.end_run(self.mlflow_uri, run_id, "FAILED", {tracking.STATUS_TAG: "failed"})
            except Exception:
                pass
        self._pending[trial.trial_id] = {"status": "error", "error": _error_line(trial), "error_file": trial.error_file,
                                         "attempts_failed": trial.run_metadata.num_failures, "ended": time.time()}

    def on_step_end(self, iteration, trials, **info):
        if self._pending:
            if self.experiment_path is None:        # remote storage: no local copy of Tune's state to check
                self._flush(lambda trial_id: True)
                return
            stored = _stored_statuses(self.experiment_path) or {}
            self._flush(lambda trial_id: stored.get(trial_id) in ("TERMINATED", "ERROR"))

    def on_experiment_end(self, trials, **info):
        self._flush(lambda trial_id: True)      # Tune has just saved its final state

    def _flush(self, confirmed) -> None:
        for trial_id in [t for t in self._pending if confirmed(t)]:
            update = self._pending.pop(trial_id)
            record = report.read_trial(self.results_dir, trial_id)
            record.update({k: v for k, v in update.items() if k != "attempts_failed"})
            report.write_trial(self.results_dir, trial_id, record)
            done = f"[{self._done()}/{self.total}] trial {trial_id}"
            if update["status"] == "error":
                self._say(f"{done} failed for good after {update['attempts_failed']} attempt(s): {update['error']} "
                          f"(traceback: {update['error_file']})")
                continue
            t = report.trial_summary(self.results_dir, record)
            what = ("completed" if update["status"] == "completed"
                    else f"stopped early by ASHA after {t['iterations']}/{self.max_iterations} iterations")
            self._say(f"{done} {what}: {report.format_trial(t)}")


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


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def placement(num_env_runners: int, gpus_per_trial: float, cluster: bool):
    """Bundle 0: the trial driver, its learners and the fine-tuning (with the GPU, if any); one CPU
    bundle per env runner pair (the runtime and static agents' runner i, which take turns:
    agents.CPUS_PER_ENV_RUNNER), so rollouts spread over the nodes of a cluster (PACK on one machine)."""
    from ray.tune import PlacementGroupFactory
    head = {"CPU": 1.0, **({"GPU": float(gpus_per_trial)} if gpus_per_trial else {})}
    return PlacementGroupFactory([head] + [{"CPU": 1.0}] * num_env_runners,
                                 strategy="SPREAD" if cluster else "PACK")


def make_searcher(search: str, seed: int, num_samples: int):
    """Optuna drives both searches (TPE, or RandomSampler for --search random): the same space
    conversion, seeding and saved state on resume, so the two differ only in the sampler."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if search == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, num_samples // 3)))
    return OptunaSearch(metric=SCORE, mode="max", sampler=sampler)


def make_scheduler(max_iterations: int):
    # time_attr is our own iteration counter (Tune's training_iteration also counts the final report);
    # stop_last_trials=False and FinishingASHA let a trial that reached max_t finish and write its test metrics.
    return FinishingASHA(time_attr="iteration", metric=SCORE, mode="max", max_t=max_iterations,
                         grace_period=max(1, max_iterations // 4), reduction_factor=3, stop_last_trials=False)


def budget_key(budget: float) -> str:
    return f"{budget:g}"


def run_budget(state: dict, budget: float, results_dir: str, cluster: bool) -> None:
    """One sweep (one budget): a fresh Tuner, or Tuner.restore of an interrupted one."""
    from ray import tune

    from rtsearch import tracking

    s = state["settings"]
    key = budget_key(budget)
    sweep = state["sweeps"].setdefault(key, {"finished": False, "seconds": 0.0})
    name = f"{state['name']}-b{key}"
    exp_path = os.path.join(s["storage_path"], name)
    sweep["experiment_path"] = exp_path
    uri = s["mlflow_uri"]
    if uri and not sweep.get("parent_run_id"):
        exp_id, parent = tracking.start_parent(
            uri, state["name"], f"{state['name']} budget {key}",
            params={"budget": budget, "param_budget": s["param_budget"], "num_samples": s["num_samples"],
                    "max_iterations": s["max_iterations"], "search": s["search"], "seed": s["seed"],
                    "dataset": s["dataset"], "model": s["model"], "space": s["space_path"],
                    **{f"space.{k}": v for k, v in s["space"].items()}},
            tags={"rtsearch.sweep": state["name"], "rtsearch.budget": key, "rtsearch.role": "sweep"})
        state["mlflow_experiment_id"], sweep["parent_run_id"] = exp_id, parent
        save_state(results_dir, state)
    elif uri:
        tracking.reopen(uri, sweep["parent_run_id"])

    space = spaces.for_sweep(spaces.from_dict(s["space_dims"], s["space_path"]), s["param_budget"])
    settings = {
        "searched": space.searched, "cache_dir": s["cache_dir"], "experiment": name,
        "fail_on_iteration": s.get("fail_on_iteration"),
        "run": {"dataset": s["dataset"], "model": s["model"], "budget": budget,
                "iterations": s["max_iterations"], "seed": s["seed"], "data_dir": s["data_dir"],
                "num_env_runners": s["num_env_runners"], "fixed_ratios": s["fixed_ratios"],
                **({"param_budget": s["param_budget"]} if s["param_budget"] is not None else {}),
                **({"dense_epochs": s["dense_epochs"]} if s.get("dense_epochs") else {}),
                **{k: d.values[0] for k, d in space.items() if d.distribution == "fixed"}},
        "mlflow": {"uri": uri, "experiment_id": state["mlflow_experiment_id"],
                   "parent_run_id": sweep["parent_run_id"]} if uri else None,
    }
    wrapped = tune.with_resources(trainable, placement(s["num_env_runners"], s["gpus_per_trial"], cluster))
    recorder = Recorder(results_dir, budget, s["num_samples"], s["max_iterations"], s["max_failures"], uri,
                        f"budget {key}", exp_path)
    started = time.time()
    if tune.Tuner.can_restore(exp_path):
        print(f"[budget {key}] resuming the Tune experiment in {exp_path}", flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable=wrapped, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            wrapped,
            param_space={**space.to_tune(), "settings": settings},
            tune_config=tune.TuneConfig(search_alg=make_searcher(s["search"], s["seed"], s["num_samples"]),
                                        scheduler=make_scheduler(s["max_iterations"]), num_samples=s["num_samples"],
                                        max_concurrent_trials=s["max_concurrent"],
                                        trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=s["storage_path"], verbose=0, callbacks=[recorder],
                failure_config=tune.FailureConfig(max_failures=s["max_failures"]),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    print(f"[budget {key}] sweep of {s['num_samples']} trial(s) x up to {s['max_iterations']} iteration(s), "
          f"{s['search']} search, ASHA on the validation score; Tune experiment {exp_path}", flush=True)
    grid = tuner.fit()
    sweep["seconds"] = sweep.get("seconds", 0.0) + time.time() - started
    known = {r.metrics.get("trial_id") for r in grid if r.metrics}
    known |= {t.trial_id for t in getattr(grid, "_experiment_analysis").trials}
    finished = report.reconcile(results_dir, budget, known)
    sweep["finished"] = finished >= s["num_samples"]
    save_state(results_dir, state)
    if uri:
        summary = report.write(results_dir)
        per = summary["sweeps"].get(key, {})
        best = per.get("best") or {}
        tracking.log_metrics(uri, sweep["parent_run_id"], {
            "best_score": best.get("score"), "best_test_accuracy": best.get("accuracy"),
            "best_test_macs_ratio": best.get("macs_ratio"), "best_test_params_ratio": best.get("params_ratio"),
            "sweep_iters_to_best": per.get("sweep_iters_to_best"), "trials": len(per.get("trials", [])),
            "wall_seconds": sweep["seconds"]})
        tracking.log_artifacts(uri, sweep["parent_run_id"],
                               [os.path.join(results_dir, f) for f in ("summary.md", "summary.json", "pareto.png")])
        if sweep["finished"]:
            tracking.end_run(uri, sweep["parent_run_id"], "FINISHED")


def save_state(results_dir: str, state: dict) -> None:
    report.write_json(os.path.join(results_dir, report.SWEEP_FILE), state)


def parse_budgets(text: str) -> list[float]:
    parse = fraction("--budget")
    try:
        budgets = [parse(part.strip()) for part in text.split(",")]
    except Exception as e:
        raise UsageError(f"{e}; several budgets are comma-separated, e.g. --budget 0.3,0.5,0.7") from None
    if len(set(budgets)) != len(budgets):
        raise UsageError(f"--budget lists a budget twice ({text}): list each once")
    return budgets


def parse_args(argv=None):
    import argparse
    p = ArgumentParser(prog="python -m rtsearch.tune", description=__doc__.splitlines()[0])
    p.add_argument("--budget", required=True, help="MACs budget(s), fractions of the dense MACs: 0.5 or 0.3,0.5,0.7")
    p.add_argument("--param-budget", type=fraction("--param-budget"), default=None,
                   help="fix the parameter budget (otherwise searched, if the space has param_budget)")
    p.add_argument("--space", default=None, help="search space YAML (default search_spaces/default.yaml)")
    p.add_argument("--num-samples", type=int, default=8, help="trials per budget")
    p.add_argument("--max-iterations", type=int, default=10, help="iterations of a trial that ASHA lets finish")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="small")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default sqlite:///mlruns.db here)")
    p.add_argument("--name", default=None, help="sweep name: results/<name>/, MLflow experiment <name>")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray on this machine)")
    p.add_argument("--search", choices=SEARCHES, default="tpe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-env-runners", type=int, default=0, help="RLlib rollout workers per trial (1 CPU each)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--storage-path", default=None,
                   help="Tune experiment folder, shared by the nodes of a cluster (default runs/tune)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at a time (default: as resources allow)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all of this machine)")
    # hidden: tests and baselines
    p.add_argument("--fixed-ratios", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dense-epochs", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fail-on-iteration", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    budgets = parse_budgets(args.budget)
    for flag, value, low in (("--num-samples", args.num_samples, 1), ("--max-iterations", args.max_iterations, 1),
                             ("--num-env-runners", args.num_env_runners, 0), ("--max-failures", args.max_failures, 0),
                             ("--gpus-per-trial", args.gpus_per_trial, 0)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value:g}")
    for flag, value in (("--max-concurrent", args.max_concurrent), ("--num-cpus", args.num_cpus),
                        ("--dense-epochs", args.dense_epochs)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise UsageError(f"--name {args.name!r} may hold only letters, digits, '.', '_' and '-': pass e.g. --name sweep1")
    name = args.name or f"{args.dataset}-{args.model}-b{'_'.join(budget_key(b) for b in budgets)}"
    return args, budgets, name


def new_state(args, budgets: list[float], name: str) -> dict:
    from rtsearch import dense, tracking
    check_dataset_and_model(args.dataset, args.model, args.data_dir)
    space = spaces.for_sweep(spaces.load(args.space), args.param_budget)
    cpus = args.num_cpus or os.cpu_count() or 1
    if args.address is None and 1 + args.num_env_runners > cpus:
        raise UsageError(f"--num-env-runners {args.num_env_runners} needs {1 + args.num_env_runners} CPUs per trial, "
                         f"this machine has {cpus}: lower it, or join a cluster with --address")
    storage = os.path.abspath(args.storage_path or os.path.join("runs", "tune"))
    cache = os.path.join(storage, "cache") if args.storage_path else dense.cache_dir()
    return {"name": name, "created": time.time(), "mlflow_experiment_id": None, "sweeps": {}, "settings": {
        "budgets": budgets, "param_budget": args.param_budget, "dataset": args.dataset, "model": args.model,
        "data_dir": os.path.abspath(args.data_dir) if args.data_dir else None,
        "space_path": os.path.abspath(space.path), "space": space.describe(), "space_dims": space.to_dict(),
        "num_samples": args.num_samples, "max_iterations": args.max_iterations, "search": args.search,
        "seed": args.seed, "num_env_runners": args.num_env_runners, "gpus_per_trial": args.gpus_per_trial,
        "storage_path": storage, "storage_path_given": bool(args.storage_path), "cache_dir": os.path.abspath(cache), "max_concurrent": args.max_concurrent,
        "max_failures": args.max_failures, "mlflow_uri": tracking.resolve_uri(args.mlflow_uri),
        "fixed_ratios": args.fixed_ratios, "dense_epochs": args.dense_epochs,
        "fail_on_iteration": args.fail_on_iteration, "method": "both"}}


class _StaleCheckpointFilter(logging.Filter):
    """After a resume from an experiment snapshot a little older than the trial's checkpoints, Tune
    tries to delete a checkpoint it already deleted (num_to_keep) and logs a traceback, then goes on
    unharmed. Drop that one record; every other error still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (str(record.msg).startswith("Trial %s: Error handling checkpoint")
                    and isinstance(exc, FileNotFoundError))


def start_ray(address: str | None, num_cpus: int | None) -> None:
    import ray
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")            # experiment state saved every 2 s
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")          # one line per failure, ours
    quiet_libraries()
    for noisy in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_StaleCheckpointFilter())
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)


def pretrain_dense(s: dict) -> None:
    """The dense model is trained once, here, before any trial; trials find it in the cache."""
    from rtsearch import data, dense
    os.environ["RTSEARCH_CACHE"] = s["cache_dir"]
    splits = data.load(s["dataset"], s["seed"], s["data_dir"])
    epochs = s.get("dense_epochs") or RunConfig.dense_epochs
    dense.pretrained(s["dataset"], s["model"], s["seed"], splits, epochs, log=lambda m: print(m, flush=True))


@guarded
def main(argv=None) -> int:
    from rtsearch import tracking
    args, budgets, name = parse_args(argv)
    results_dir = os.path.abspath(os.path.join("results", name))
    state_path = os.path.join(results_dir, report.SWEEP_FILE)
    if args.resume:
        if not os.path.isfile(state_path):
            raise UsageError(f"--resume: no sweep named {name!r} in {results_dir}: pass the --name of an "
                             f"interrupted sweep, or start one without --resume")
        with open(state_path) as f:
            state = json.load(f)
        s = state["settings"]
        print(f"resuming sweep {name!r} with its stored settings (budgets {', '.join(map(budget_key, s['budgets']))})",
              flush=True)
    else:
        if os.path.exists(state_path):
            raise UsageError(f"sweep {name!r} already exists in {results_dir}: pass --resume to continue it, "
                             f"or --name to start another")
        state = new_state(args, budgets, name)
        state["command"] = "python -m rtsearch.tune " + shlex.join(sys.argv[1:] if argv is None else argv)
        s = state["settings"]
    if s["mlflow_uri"]:
        tracking.check_reachable(s["mlflow_uri"])        # an unreachable server fails here, before any compute
    os.makedirs(results_dir, exist_ok=True)
    save_state(results_dir, state)
    todo = [b for b in s["budgets"] if not state["sweeps"].get(budget_key(b), {}).get("finished")]
    for budget in set(s["budgets"]) - set(todo):
        print(f"[budget {budget_key(budget)}] already finished", flush=True)
    started = time.time()
    if todo:
        pretrain_dense(s)
        if args.address and not s["storage_path_given"]:
            print("note: with --address, pass --storage-path on a folder every node shares, so that trials find "
                  "the dense model and each other's checkpoints", flush=True)
        start_ray(args.address, args.num_cpus)
        try:
            for budget in todo:
                run_budget(state, budget, results_dir, cluster=bool(args.address))
        finally:
            import ray
            ray.shutdown()
    summary = report.write(results_dir)
    unfinished = [k for k, v in state["sweeps"].items() if not v.get("finished")]
    print(report.closing_lines(summary, results_dir, s["mlflow_uri"], time.time() - started), flush=True)
    if unfinished:
        print(f"sweep {name!r} did not finish budget(s) {', '.join(unfinished)}: continue it with "
              f"python -m rtsearch.tune --budget {args.budget} --name {name} --resume", file=sys.stderr, flush=True)
        return 1
    if not any(t["status"] == "completed" for sw in summary["sweeps"].values() for t in sw["trials"]):
        print("no trial completed: see the errors above", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
