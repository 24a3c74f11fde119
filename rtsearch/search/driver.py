"""The sweep driver: one Ray Tune experiment per MACs budget (Optuna TPE, or random with
--search random; ASHA on the validation score; MLflow parent run per budget), resumable after any
interruption; or, with --front, one multi-objective experiment over a searched budget whose front
is timed, set beside Torch-Pruning L1 and registered after its trials (rtsearch.search.front).
The command line is rtsearch.tune; each trial runs rtsearch.search.trial.trainable.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import time

from ray.tune.schedulers import ASHAScheduler

from rtsearch import device, methods, storage
from rtsearch.errors import UsageError
from rtsearch.logs import quiet_libraries
from rtsearch.rl.ray_session import init_local
from rtsearch.search import front as fronts
from rtsearch.search import sweep_baseline as baselines
from rtsearch.search import summary as report, space as spaces
from rtsearch.search.names import budget_key, sweep_method
from rtsearch.search.recorder import Recorder, progress
from rtsearch.search.trial import SCORE, trainable

class FinishingASHA(ASHAScheduler):
    """ASHA that never stops a trial at its last iteration: stopping there saves nothing and would
    cost the trial its test evaluation and exported model."""

    def on_trial_result(self, tune_controller, trial, result):
        if result.get(self._time_attr, 0) >= self._max_t:
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


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


def make_searcher(search: str, seed: int, num_samples: int, first: dict | None = None,
                  objectives: list[str] | None = None):
    """Optuna drives both searches (TPE, or RandomSampler for --search random): the same space
    conversion, seeding and saved state on resume, so the two differ only in the sampler. `first`,
    the run's defaults, is the first trial of either (an enqueued Optuna trial). With `objectives` (a
    --front sweep) the study has one direction per objective, and TPE is Optuna's multi-objective TPE:
    it reads each trial's final report (rtsearch.search.front.OBJECTIVES says which keys)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if search == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, num_samples // 3)))
    metric, mode = fronts.sampler_objectives(objectives) if objectives else (SCORE, "max")
    return OptunaSearch(metric=metric, mode=mode, sampler=sampler, points_to_evaluate=[first] if first else None)


def make_scheduler(max_iterations: int, front: bool = False):
    """ASHA on the validation score; none for a --front sweep, whose trials at different budgets one score would
    rank rather than trade (every trial then runs to its end)."""
    if front:
        return None
    # time_attr is our own iteration counter (Tune's training_iteration also counts the final report);
    # stop_last_trials=False and FinishingASHA let a trial that reached max_t finish and write its test metrics.
    return FinishingASHA(time_attr="iteration", metric=SCORE, mode="max", max_t=max_iterations,
                         grace_period=max(1, max_iterations // 4), reduction_factor=3, stop_last_trials=False)


def run_budget(state: dict, budget: float, results_dir: str, cluster: bool, later_trials: int = 0,
               bench=None) -> None:
    """One sweep (one budget): a fresh Tuner, or Tuner.restore of an interrupted one. `later_trials`: the trials of
    the budgets still to run after this one, counted in the progress lines' time left; `bench`: what a --front sweep
    makes and times runs with (`sweep`)."""
    from ray import tune

    from rtsearch.search import tracking

    s = state["settings"]
    key = budget_key(budget)
    sweep = state["sweeps"].setdefault(key, {"finished": False, "seconds": 0.0})
    name = f"{state['name']}-b{key}"
    exp_path = storage.join(s["storage_path"], name)
    sweep["experiment_path"] = exp_path
    uri = s["mlflow_uri"]
    if uri and not sweep.get("parent_run_id"):
        exp_id, parent = tracking.start_parent(
            uri, state["name"], f"{state['name']} budget {key}",
            params={"budget": budget, "param_budget": s["param_budget"], "num_samples": s["num_samples"],
                    **({"front": ":".join(f"{b:g}" for b in s["front"]["span"]),
                        "objectives": ",".join(s["front"]["objectives"])} if s.get("front") else {}),
                    "max_iterations": s["max_iterations"], "search": s["search"], "seed": s["seed"],
                    "method": sweep_method(s),
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
        "fail_on_iteration": s.get("fail_on_iteration"), "nan_on_iteration": s.get("nan_on_iteration"),
        "run": {"dataset": s["dataset"], "model": s["model"], "budget": budget, "method": sweep_method(s),
                **iterations(s), "seed": s["seed"], "data_dir": s["data_dir"],
                "num_env_runners": s["num_env_runners"], "fixed_ratios": s["fixed_ratios"],
                "device": s.get("device", "auto"), "holdout_share": s.get("holdout_share", 0.0),
                "budget_range": s.get("budget_range"),
                **({"param_budget": s["param_budget"]} if s["param_budget"] is not None else {}),
                **({"dense_epochs": s["dense_epochs"]} if s.get("dense_epochs") else {}),
                **{k: d.values[0] for k, d in space.items() if d.distribution == "fixed"}},
        "mlflow": {"uri": uri, "experiment_id": state["mlflow_experiment_id"],
                   "parent_run_id": sweep["parent_run_id"]} if uri else None,
    }
    wrapped = tune.with_resources(trainable, placement(s["num_env_runners"], s["gpus_per_trial"], cluster))
    recorder = Recorder(results_dir, budget, s["num_samples"], s["max_iterations"], s["max_failures"], uri,
                        f"budget {key}", exp_path)
    progress.later_trials = later_trials      # a restored experiment brings its own (unpickled) Recorder
    started = time.time()
    if tune.Tuner.can_restore(exp_path):
        print(f"[budget {key}] resuming the Tune experiment in {exp_path}", flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable=wrapped, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            wrapped,
            param_space={**space.to_tune(), "settings": settings},
            tune_config=tune.TuneConfig(search_alg=make_searcher(
                                            s["search"], s["seed"], s["num_samples"],
                                            space.defaults() if s.get("defaults_first") else None,
                                            (s.get("front") or {}).get("objectives")),
                                        scheduler=make_scheduler(s["max_iterations"], bool(s.get("front"))),
                                        num_samples=s["num_samples"],
                                        max_concurrent_trials=s["max_concurrent"],
                                        trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=s["storage_path"], verbose=0, callbacks=[recorder],
                failure_config=tune.FailureConfig(max_failures=s["max_failures"]),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    how = (f"multi-objective ({', '.join(s['front']['objectives'])}), budget searched, no ASHA" if s.get("front")
           else "ASHA on the validation score")
    print(f"[budget {key}] sweep of {s['num_samples']} trial(s) x up to {s['max_iterations']} iteration(s), "
          f"{s['search']} search, {how}; Tune experiment {exp_path}", flush=True)
    grid = tuner.fit()
    sweep["seconds"] = sweep.get("seconds", 0.0) + time.time() - started
    known = {r.metrics.get("trial_id") for r in grid if r.metrics}
    known |= {t.trial_id for t in getattr(grid, "_experiment_analysis").trials}
    finished = report.reconcile(results_dir, budget, known) >= s["num_samples"]
    if finished:        # before the budget counts as finished, so a sweep killed here does it on --resume
        after_trials(state, budget, results_dir, grid, bench)
    sweep["finished"] = finished
    save_state(results_dir, state)
    if uri:
        close_parent(state, key, results_dir)


def after_trials(state: dict, budget: float, results_dir: str, grid, bench) -> None:
    """What follows a budget's trials: its static-only baseline, or a --front sweep's timings and Torch-Pruning
    L1's runs beside them (`time_the_front`)."""
    key = budget_key(budget)
    if state["settings"].get("front"):
        time_the_front(state, results_dir, grid, budget, bench)
        return
    try:
        baselines.run_once(state, budget, results_dir)
    except Exception as e:      # the trials' results stand without it
        warn(key, "the static-only baseline did not run", e)


def close_parent(state: dict, key: str, results_dir: str) -> None:
    """The budget's MLflow parent run: the sweep's figures and files; once the sweep finished, its best model (a
    --front sweep: every member of its front) registered and the run ended."""
    from rtsearch.search import tracking
    uri, sweep = state["settings"]["mlflow_uri"], state["sweeps"][key]
    summary = report.write(results_dir)
    per = summary["sweeps"].get(key, {})
    best = per.get("best") or {}
    tracking.log_metrics(uri, sweep["parent_run_id"], {
        "best_score": best.get("score"), "best_test_accuracy": best.get("accuracy"),
        "best_test_macs_ratio": best.get("macs_ratio"), "best_test_params_ratio": best.get("params_ratio"),
        "sweep_iters_to_best": per.get("sweep_iters_to_best"), "trials": len(per.get("trials", [])),
        "wall_seconds": sweep["seconds"], **baseline_metrics(per)} if not summary.get("front") else {
        "trials": len(per.get("trials", [])), "wall_seconds": sweep["seconds"]})
    tracking.log_artifacts(uri, sweep["parent_run_id"],
                           [os.path.join(results_dir, f) for f in ("summary.md", "summary.json", "pareto.png",
                                                                   fronts.PICTURE, fronts.REFERENCE_FILE)])
    if sweep["finished"] and summary.get("front"):
        register_front(state, key, summary["front"])
    elif sweep["finished"] and best.get("status") == "completed" and best.get("mlflow_run_id"):
        register_best(state, key, best)
    if sweep["finished"]:
        tracking.end_run(uri, sweep["parent_run_id"], "FINISHED")


def iterations(s: dict) -> dict:
    """What a trial's iterations are: fine-tuning iterations of the two agents' run, or PPO iterations of the ladder's
    re-run agent (its rungs fine-tune as long as `rtsearch.train --method ladder` does by default)."""
    return {methods.get(sweep_method(s)).iteration_field: s["max_iterations"]}


def warn(key: str, what: str, error: Exception) -> None:
    """A step after a budget's trials failed: one line on stderr, never the end of a sweep whose results are written."""
    detail = str(error).splitlines()[0][:200] if str(error) else ""
    print(f"[budget {key}] warning: {what} ({type(error).__name__}: {detail})", file=sys.stderr, flush=True)


def baseline_metrics(per: dict) -> dict:
    """The budget's static-only baseline as metrics of its MLflow parent run (none where it did not run)."""
    if not per.get("baseline"):
        return {}
    return {"baseline_test_accuracy": per["baseline"]["accuracy"],
            "baseline_test_macs_ratio": per["baseline"]["macs_ratio"],
            **({"best_minus_baseline_accuracy": per["best_minus_baseline"]}
               if per.get("best_minus_baseline") is not None else {})}


def catch_up_baselines(state: dict, results_dir: str, budgets: list[float]) -> None:
    """Budgets that finished before their baseline ran (a sweep of an older version, or one killed right
    then) run it on --resume, and their MLflow parent run gets its figures."""
    from rtsearch.search import tracking
    s = state["settings"]
    pretrain_dense(s)        # the cached dense model, found again (and RTSEARCH_CACHE set) for the baselines
    for budget in budgets:
        baselines.run_once(state, budget, results_dir)
    summary = report.write(results_dir)
    for budget in budgets:
        parent = state["sweeps"].get(budget_key(budget), {}).get("parent_run_id")
        if s["mlflow_uri"] and parent:
            tracking.log_metrics(s["mlflow_uri"], parent, baseline_metrics(summary["sweeps"][budget_key(budget)]))


def register_best(state: dict, key: str, best: dict) -> None:
    """The best trial's model into the Model Registry as a new version of its (dataset, model, method)'s model,
    aliased best-<budget> (search/registry.py); an infeasible best is not registered (one line says why), and a
    failure there is a warning, never the end of a sweep whose results are all written."""
    from rtsearch.search import registry
    s, sweep = state["settings"], state["sweeps"][key]
    name = registry.model_name(s["dataset"], s["model"], sweep_method(s), bool(s.get("fixed_ratios")))
    try:
        version = registry.register_best(s["mlflow_uri"], state["mlflow_experiment_id"], sweep["parent_run_id"],
                                         state["name"], key, best["mlflow_run_id"], methods.get(sweep_method(s)))
    except registry.NotRegistered as e:
        print(f"[budget {key}] best model not registered in MLflow: {e}", flush=True)
        return
    except Exception as e:
        warn(key, "the best model was not registered in MLflow", e)
        return
    print(f"[budget {key}] best model (trial {best['trial_id']}) registered: "
          f"models:/{name}@{registry.alias(key)} (version {version})", flush=True)


def time_the_front(state: dict, results_dir: str, grid, budget: float, bench) -> None:
    """A --front sweep after its trials: every completed trial's deployed model timed, one at a time on the idle
    machine, then Torch-Pruning L1's runs beside it made (or reused) and timed (rtsearch.search.front). A failure
    is a warning: the trials' results stand, and the summary shows the front without what is missing."""
    from rtsearch.search import tracking
    s, key = state["settings"], budget_key(budget)

    def log(message: str) -> None:
        print(f"[budget {key}] {message}", flush=True)
    completed = [r["trial_id"] for r in report.load_trials(results_dir)
                 if r.get("budget") == budget and r.get("status") == "completed"]
    log(f"timing the deployed models of {len(completed)} completed trial(s), one at a time "
        f"(batch {fronts.BATCH}, {fronts.THREADS} thread)")
    for trial_id in completed:
        try:
            time_trial(state, results_dir, grid, key, trial_id, bench, log)
        except Exception as e:      # the others are still timed
            warn(key, f"trial {trial_id}'s deployed model was not timed", e)
    try:        # its runs find the dense model where the trials do (RTSEARCH_CACHE, set by pretrain_dense)
        fronts.make_reference(bench, s, results_dir, log=log)
    except Exception as e:
        warn(key, "Torch-Pruning L1's runs beside the front were not made", e)
    uri = s["mlflow_uri"]
    if uri:
        for trial_id in completed:
            t = report.trial_summary(results_dir, report.read_trial(results_dir, trial_id))
            if t["latency_ms"] is not None and t["mlflow_run_id"]:
                tracking.log_metrics(uri, t["mlflow_run_id"], {"deployed_latency_ms": t["latency_ms"]})


def time_trial(state: dict, results_dir: str, grid, key: str, trial_id: str, bench, log) -> None:
    """One completed trial's deployed model timed (not again where it was: a resumed sweep), from the run folder of
    its final checkpoint: the one Tune's results name, or, where the driver was killed before its saved state
    recorded that checkpoint, the newest one in the trial's Tune folder that holds the run's metrics.json."""
    folder = report.trial_dir(results_dir, trial_id)
    if fronts.read_latency(folder) is not None:
        return
    named = [r.checkpoint for r in grid if (r.metrics or {}).get("trial_id") == trial_id and r.checkpoint is not None]
    stored = storage.latest_checkpoint(storage.join(state["sweeps"][key]["experiment_path"], f"trial_{trial_id}"),
                                       "metrics.json")
    for checkpoint in [*named, stored]:
        if checkpoint is None:
            continue
        with checkpoint.as_directory() as run_dir:
            if os.path.isfile(os.path.join(run_dir, "metrics.json")):
                fronts.measure_trials(bench, state["settings"], {trial_id: (run_dir, folder)}, log=log)
                return
    raise RuntimeError("no checkpoint of it holds its finished run (metrics.json)")


def register_front(state: dict, key: str, front: dict) -> None:
    """Each front member into the Model Registry under front-<its budget> (search/registry.py), its child run tagged
    as a front member; one that misses its budget on test is not registered (one line says why), and a failure is a
    warning, never the end of a sweep whose results are all written."""
    from rtsearch.search import registry, tracking
    s, sweep = state["settings"], state["sweeps"][key]
    name = registry.model_name(s["dataset"], s["model"], sweep_method(s), bool(s.get("fixed_ratios")))
    tracking.log_metrics(s["mlflow_uri"], sweep["parent_run_id"], {"front_size": len(front["members"])})
    for t in front["members"]:
        budget = f"{t['config']['budget']:g}"
        if t["refused"]:
            print(f"[budget {key}] front member at budget {budget} not registered in MLflow: {t['refused']}",
                  flush=True)
            continue
        try:
            tracking.set_tags(s["mlflow_uri"], t["mlflow_run_id"], {"rtsearch.front": t["alias"]})
            version = registry.register_best(s["mlflow_uri"], state["mlflow_experiment_id"], sweep["parent_run_id"],
                                             state["name"], budget, t["mlflow_run_id"], methods.get(sweep_method(s)),
                                             alias_name=t["alias"], role="a member of its front,")
        except registry.NotRegistered as e:
            print(f"[budget {key}] front member at budget {budget} not registered in MLflow: {e}", flush=True)
            continue
        except Exception as e:
            warn(key, f"the front member at budget {budget} was not registered in MLflow", e)
            continue
        print(f"[budget {key}] front member at budget {budget} (trial {t['trial_id']}) registered: "
              f"models:/{name}@{t['alias']} (version {version})", flush=True)


def save_state(results_dir: str, state: dict) -> None:
    os.makedirs(results_dir, exist_ok=True)
    report.write_json(os.path.join(results_dir, report.SWEEP_FILE), state)


def new_state(args, budgets: list[float], name: str) -> dict:
    from rtsearch.net import dense
    from rtsearch.search import tracking
    method = methods.get(args.method)
    space = spaces.for_sweep(spaces.check_method(spaces.load(args.space or spaces.default_path(method)), method),
                             args.param_budget)
    front = None
    if args.front:          # the budget joins the searched settings (rtsearch.search.front)
        front = {"span": list(args.front), "grid": fronts.budget_grid(*args.front), "objectives": args.objectives}
        space = spaces.with_budget(space, front["grid"])
    cpus = args.num_cpus or os.cpu_count() or 1
    if args.address is None and 1 + args.num_env_runners > cpus:
        raise UsageError(f"--num-env-runners {args.num_env_runners} needs {1 + args.num_env_runners} CPUs per trial, "
                         f"this machine has {cpus}: lower it, or join a cluster with --address")
    store = storage.normalise(args.storage_path or os.path.join("runs", "tune"))
    cache = storage.join(store, "cache") if args.storage_path else storage.normalise(dense.cache_dir())
    return {"name": name, "created": time.time(), "mlflow_experiment_id": None, "sweeps": {}, "settings": {
        "budgets": budgets, "param_budget": args.param_budget, "dataset": args.dataset, "model": args.model,
        "data_dir": os.path.abspath(args.data_dir) if args.data_dir else None,
        "space_path": os.path.abspath(space.path), "space": space.describe(), "space_dims": space.to_dict(),
        "num_samples": args.num_samples, "max_iterations": args.max_iterations, "search": args.search,
        "seed": args.seed, "num_env_runners": args.num_env_runners, "gpus_per_trial": args.gpus_per_trial,
        "storage_path": store, "storage_path_given": bool(args.storage_path), "cache_dir": cache,
        "max_concurrent": args.max_concurrent,
        "max_failures": args.max_failures, "mlflow_uri": tracking.resolve_uri(args.mlflow_uri),
        "mlflow_uri_shown": args.mlflow_uri or tracking.DEFAULT_URI,      # as the user gave it, for summaries
        "fixed_ratios": args.fixed_ratios, "dense_epochs": args.dense_epochs,
        "fail_on_iteration": args.fail_on_iteration, "nan_on_iteration": args.nan_on_iteration, "method": args.method,
        "device": args.device, "holdout_share": args.holdout_share, "budget_range": args.budget_range,
        "baseline": args.baseline and not front, "defaults_first": args.defaults_first,
        "results_dir": args.results_dir, "front": front}}


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
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"--address {address}: cannot join a Ray cluster there ({str(e).splitlines()[0][:150]}): "
                             f"start one with `ray start --head`, or pass the address it printed") from None
    else:
        init_local(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                   logging_level=logging.WARNING)


def check_address(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT address must answer within `timeout` seconds (ray.init would wait much longer)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address} is not HOST:PORT: pass e.g. --address 10.0.0.5:6379, or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UsageError(f"--address {address}: nothing answers there ({e.strerror or type(e).__name__}): start the "
                         f"head with `ray start --head --port {port}`, or pass the address it printed") from None


def check_store_shared(uri: str) -> None:
    """On a cluster, trials on other machines must reach the MLflow store. A local SQLite file (or
    file:// folder) is accepted only while every node Ray lists runs on this machine (same node IP as
    the driver); otherwise the store must be a server."""
    if not uri.startswith(("sqlite:", "file:")):
        return
    import ray
    this_node = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = next((n["NodeManagerAddress"] for n in nodes if n["NodeID"] == this_node), None)
    elsewhere = sorted({n["NodeManagerAddress"] for n in nodes} - {here})
    if elsewhere:
        raise UsageError(f"MLflow store {uri} is a file on this machine that the cluster's nodes on "
                         f"{', '.join(elsewhere)} cannot open: start a server every node reaches (mlflow server "
                         f"--backend-store-uri sqlite:///mlruns.db --host 0.0.0.0 --port 5000) and pass "
                         f"--mlflow-uri http://<this-host>:5000")


def pretrain_dense(s: dict) -> None:
    """The dense model is trained once, here, before any trial; trials find it in the cache."""
    from rtsearch import data
    from rtsearch.net import dense
    os.environ["RTSEARCH_CACHE"] = s["cache_dir"]
    splits = data.hold_out(data.load(s["dataset"], s["seed"], s["data_dir"]), s.get("holdout_share", 0.0), s["seed"])
    where = device.resolve("cpu" if s.get("device") == "cpu" else "auto")   # the driver's own GPU, if any
    dense.pretrained(s["dataset"], s["model"], s["seed"], splits, s.get("dense_epochs"),
                     log=lambda m: print(m, flush=True), device=where)


def sweep(args, budgets: list[float], name: str, argv: list[str], started: float | None = None, bench=None) -> int:
    """Run (or with args.resume continue) the sweep `name` over `budgets`, as named phases: its state, every check,
    the budgets' Tune experiments, the summary; the exit status. `started`: the sweep's one wall clock (time.time()
    when rtsearch.tune had parsed its arguments), read by the progress lines, the closing lines and summary.md.
    `bench`: how a --front sweep makes and times runs (rtsearch.bench_pareto, handed in by the command: the search
    layer imports no entry point)."""
    started = time.time() if started is None else started
    progress.started = started
    results_dir = os.path.abspath(os.path.join(args.results_dir, name))
    state = resumed_state(args, budgets, name, results_dir) if args.resume else fresh_state(args, budgets, name,
                                                                                           results_dir, argv)
    s = state["settings"]
    check_reachable(args, s)
    todo = [b for b in s["budgets"] if not state["sweeps"].get(budget_key(b), {}).get("finished")]
    for budget in set(s["budgets"]) - set(todo):
        print(f"[budget {budget_key(budget)}] already finished", flush=True)
    catch_up = [b for b in s["budgets"] if b not in todo and baselines.wanted(s)
                and baselines.read(results_dir, b) is None]
    if catch_up:
        catch_up_baselines(state, results_dir, catch_up)
    if todo:
        run_budgets(args, state, todo, results_dir, bench)
    else:
        save_state(results_dir, state)
    return close(state, name, results_dir, time.time() - started, resumed=bool(args.resume))


def resumed_state(args, budgets: list[float] | None, name: str, results_dir: str) -> dict:
    """The stored state of the interrupted sweep `name`; a method or budgets other than its own are refused."""
    state_path = os.path.join(results_dir, report.SWEEP_FILE)
    if not os.path.isfile(state_path):
        raise UsageError(f"--resume: no sweep named {name!r} in {results_dir}: pass the --name of an "
                         f"interrupted sweep, or start one without --resume")
    with open(state_path) as f:
        state = json.load(f)
    s = state["settings"]
    if args.method and args.method != sweep_method(s):
        raise UsageError(f"--resume continues sweep {name!r} with its stored method {sweep_method(s)}, "
                         f"not {args.method}: drop --method, or start a new sweep with another --name")
    if budgets is not None and sorted(budgets) != sorted(s["budgets"]):
        raise UsageError(f"--resume continues sweep {name!r} at its stored budgets "
                         f"{','.join(map(budget_key, s['budgets']))}, not {','.join(map(budget_key, budgets))}: "
                         f"drop --budget, or start a new sweep with another --name")
    print(f"resuming sweep {name!r} with its stored settings (budgets {', '.join(map(budget_key, s['budgets']))})",
          flush=True)
    return state


def fresh_state(args, budgets: list[float], name: str, results_dir: str, argv: list[str]) -> dict:
    """A new sweep's state; a name already taken is refused."""
    if os.path.exists(os.path.join(results_dir, report.SWEEP_FILE)):
        raise UsageError(f"sweep {name!r} already exists in {results_dir}: pass --resume to continue it, "
                         f"or --name to start another")
    state = new_state(args, budgets, name)
    state["command"] = "python -m rtsearch.tune " + shlex.join(argv)
    return state


def check_reachable(args, s: dict) -> None:
    """Every check before any compute, and before the sweep's folder exists: a refused sweep leaves nothing behind."""
    from rtsearch.search import tracking
    if args.address:
        check_address(args.address)                     # seconds, where ray.init would wait much longer
    if s["mlflow_uri"]:
        tracking.check_reachable(s["mlflow_uri"])        # an unreachable server fails here
    storage.check_writable(s["storage_path"])


def run_budgets(args, state: dict, todo: list[float], results_dir: str, bench=None) -> None:
    """Ray up, the dense model cached once, then one Tune experiment per budget left to do."""
    s = state["settings"]
    start_ray(args.address, args.num_cpus)
    try:
        if args.address:
            check_store_shared(s["mlflow_uri"])
            if not s["storage_path_given"]:
                print("note: with --address, pass --storage-path on a folder every node shares, so that trials "
                      "find the dense model and each other's checkpoints", flush=True)
        save_state(results_dir, state)
        pretrain_dense(s)
        for i, budget in enumerate(todo):
            run_budget(state, budget, results_dir, cluster=bool(args.address), bench=bench,
                       later_trials=s["num_samples"] * (len(todo) - 1 - i))
    finally:
        import ray
        ray.shutdown()


def close(state: dict, name: str, results_dir: str, seconds: float, resumed: bool = False) -> int:
    """The summary and its closing lines, both with the sweep's wall time `seconds` (stored with the sweep, so that
    summary.md, even regenerated, says what the closing lines say); the exit status (1 where a budget is
    unfinished or no trial completed)."""
    state["wall"] = {"seconds": seconds, "resumed": resumed}
    save_state(results_dir, state)
    summary = report.write(results_dir)
    unfinished = [k for k, v in state["sweeps"].items() if not v.get("finished")]
    print(report.closing_lines(summary, results_dir, summary["mlflow_uri"], seconds), flush=True)
    if unfinished:
        print(f"sweep {name!r} did not finish budget(s) {', '.join(unfinished)}: continue it with "
              f"python -m rtsearch.tune --name {name} --resume", file=sys.stderr, flush=True)
        return 1
    if not any(t["status"] == "completed" for sw in summary["sweeps"].values() for t in sw["trials"]):
        print("no trial completed: see the errors above", file=sys.stderr, flush=True)
        return 1
    return 0
