"""The Tune trial: what runs in a Ray worker, possibly on another node. One trial is one
`rtsearch.methods.run` with the sampled values, reporting every iteration to Tune (with the run folder
as checkpoint) and to its MLflow child run."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

import ray

from rtsearch import device
from rtsearch.config import RunConfig
from rtsearch.methods.base import MANIFEST, has_manifest
from rtsearch.search import tracking
from rtsearch.storage import replacing

STATE_FILE = "trial_state.json"      # inside a trial's run folder, so it travels with its checkpoints
SCORE = "score"


def _write_state(out: str, state: dict) -> None:
    with replacing(os.path.join(out, STATE_FILE)) as tmp, open(tmp, "w") as f:
        json.dump(state, f)


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


def _stop(monitor) -> None:
    """Stop the system metrics monitor (flushing its last values); never fails the trial."""
    try:
        if monitor is not None:
            monitor.finish()
    except Exception:
        pass


def trainable(config: dict) -> None:
    """One trial: its method's run with the sampled values, reporting every iteration to Tune (with the run folder
    as checkpoint) and to its MLflow child run, as named phases: restore, track, run, report the final figures."""
    from ray import tune

    from rtsearch import methods

    settings = config["settings"]
    os.environ["RTSEARCH_CACHE"] = settings["cache_dir"]
    ctx = tune.get_context()
    trial_id, trial_dir = ctx.get_trial_id(), ctx.get_trial_dir()
    out = run_folder(settings["experiment"], trial_id)
    state = restored_state(out)
    if state["final"] is not None:
        # It had finished, but the driver died before Tune recorded that: report it again, compute nothing.
        tune.report(state["final"])
        return
    searched = {k: config[k] for k in settings["searched"]}
    cfg = RunConfig.from_dict({**settings["run"], **searched, "out": out}).check()
    cfg.device = str(device.resolve(cfg.device, ray.get_gpu_ids()))      # auto: the GPU Tune gave this trial, if any
    method = methods.get(cfg.method)
    tracker = open_tracker(settings, cfg, method.trial_params(cfg, searched), trial_id, state, out)
    # CPU and memory of this trial's node as system/* metrics of its run, where MLflow can sample them
    monitor = tracking.system_metrics(tracker.uri, tracker.run_id, tracker.resumed) if tracker else None
    try:
        metrics = method.start(cfg, on_iteration=reporter(settings, trial_dir, state, out, tracker, cfg),
                               log=file_log(os.path.join(out, "train.log")), resume=has_manifest(out))
    except BaseException as e:
        _stop(monitor)
        if tracker:
            fail_run(tracker, e)
        raise
    _stop(monitor)
    if tracker:
        tracker.finish(metrics, [os.path.join(out, f) for f in ("metrics.json", MANIFEST, "best.pt", "model.pt",
                                                                      "deployed.pt", "train.log")])
    report_final(metrics, state, out, cfg)


def restored_state(out: str) -> dict:
    """The trial's state in its fresh scratch folder `out`, with Tune's checkpoint restored there if it has one.

    Tune's checkpoint is the truth: what the scratch folder holds beyond it (a failed attempt's checkpoint of an
    iteration never reported, a NaN one say) is dropped, so a retry without a checkpoint starts over and one with a
    checkpoint continues right after its last report."""
    from ray import tune
    state = {"reported": 0, "mlflow_run_id": None, "final": None}
    on_disk = _read_state(out)
    if on_disk and on_disk.get("final"):
        return on_disk      # it had finished, but Tune's saved state predates that (its driver was killed)
    shutil.rmtree(out, ignore_errors=True)
    restored = tune.get_checkpoint()
    if restored is not None:        # Tune retries / resumes this trial: continue from its last checkpoint
        restored.to_directory(out)
        with open(os.path.join(out, STATE_FILE)) as f:
            state = json.load(f)
    os.makedirs(out, exist_ok=True)
    return state


def open_tracker(settings: dict, cfg: RunConfig, params: dict, trial_id: str, state: dict, out: str):
    """The trial's MLflow child run (None without MLflow), reopened on a retry; its id kept in the trial state."""
    ml = settings.get("mlflow")
    if not ml:
        return None
    if ml["uri"].startswith("sqlite:///") and not os.path.isfile(ml["uri"][len("sqlite:///"):]):
        # the driver created it: missing here means this node cannot see the driver's file
        raise RuntimeError(f"MLflow store {ml['uri']} is not on this node: run the sweep with --mlflow-uri "
                           f"http://... of an mlflow server every node reaches")
    tracker = tracking.TrialRun(ml["uri"], ml["experiment_id"], ml["parent_run_id"], trial_id,
                                run_name=f"{settings['experiment']}/{trial_id}",
                                params={**params, "trial_id": trial_id},
                                tags={"rtsearch.budget": cfg.budget}, run_id=state["mlflow_run_id"])
    cfg.mlflow_run_id = state["mlflow_run_id"] = tracker.run_id
    _write_state(out, state)
    return tracker


def file_log(path: str):
    """A run's log lines appended to `path` (the trial's train.log)."""
    def log(message: str) -> None:
        with open(path, "a") as f:
            f.write(message + "\n")
    return log


def reporter(settings: dict, trial_dir: str, state: dict, out: str, tracker, cfg: RunConfig):
    """What the run calls after every iteration: the row to MLflow and to Tune (with the run folder as checkpoint),
    once each; a NaN score fails the trial (Tune retries it). --fail-on-iteration and --nan-on-iteration inject a
    failure or a NaN on the first attempt only (tests)."""
    from ray import tune
    fail_on, nan_on = settings.get("fail_on_iteration"), settings.get("nan_on_iteration")
    failed_marker = os.path.join(trial_dir, ".injected_failure")
    nan_marker = os.path.join(trial_dir, ".injected_nan")

    def on_iteration(row: dict) -> None:
        i = row["iteration"]
        if fail_on and i == fail_on and not os.path.exists(failed_marker):
            open(failed_marker, "w").close()
            raise RuntimeError(f"injected failure at iteration {i} (--fail-on-iteration, first attempt only)")
        if nan_on and i == nan_on and not os.path.exists(nan_marker):
            open(nan_marker, "w").close()
            row["score"] = float("nan")         # as a diverged run reports it (--nan-on-iteration, first attempt only)
        if not math.isfinite(row["score"]):
            raise FloatingPointError(f"score is NaN at iteration {i}: the trial is marked failed and retried")
        if i <= state["reported"]:
            return          # an iteration Tune already has
        if tracker:
            tracker.log_row(row)
        state["reported"] = i
        _write_state(out, state)
        tune.report({**row, "final": False, "mlflow_run_id": cfg.mlflow_run_id},
                    checkpoint=tune.Checkpoint.from_directory(out))
    return on_iteration


def fail_run(tracker, error: BaseException) -> None:
    """Mark the trial's MLflow run failed with the error; never raises over the error itself."""
    try:
        tracking.end_run(tracker.uri, tracker.run_id, "FAILED",
                         {tracking.STATUS_TAG: "failed", "rtsearch.error": f"{type(error).__name__}: {error}"[:500]})
    except Exception:
        pass


def report_final(metrics: dict, state: dict, out: str, cfg: RunConfig) -> None:
    """The trial's final report: its best validation score and its test figures, checkpointed with the run. The best
    iteration's validation accuracy, MACs and params ratios go with it under their per-iteration names: what a
    multi-objective sampler reads when the trial completes (rtsearch.search.front), never a test figure."""
    from ray import tune
    history = metrics.get("history") or []
    best = max(history, key=lambda r: r["score"]) if history else {}
    state["final"] = {"iteration": metrics["iterations"], SCORE: best.get("score", metrics["score"]), "final": True,
                      **{k: best.get(k) for k in ("accuracy", "macs_ratio", "params_ratio")},
                      "mlflow_run_id": cfg.mlflow_run_id, "metrics_json": json.dumps(metrics),
                      **{f"test_{k}": metrics[k] for k in ("accuracy", "macs_ratio", "params_ratio", "score",
                                                            "feasible")}}
    _write_state(out, state)
    tune.report(state["final"], checkpoint=tune.Checkpoint.from_directory(out))
    shutil.rmtree(out, ignore_errors=True)      # its final state lives on in that checkpoint
