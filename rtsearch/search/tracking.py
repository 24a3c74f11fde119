"""MLflow helpers: the sweep is a parent run, each trial a child run (tag mlflow.parentRunId).

Logging goes through `MlflowClient` with explicit run ids, never the fluent `mlflow.start_run`
global state: the driver creates the parent run, and each trial creates (or, when Tune restarts
it, finds again) its own child run from inside the trial process, so it works the same on a
remote node as long as the tracking URI is reachable from there (an HTTP server on a cluster;
the default SQLite file only on one machine or a shared folder).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import time

DEFAULT_URI = "sqlite:///mlruns.db"
TRIAL_TAG = "rtsearch.trial_id"
STATUS_TAG = "rtsearch.status"
CHECK_TIMEOUT_S = 5
# MLflow 3's UI opens an experiment by its kind: model training (runs, metrics), not GenAI (traces)
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
SYSTEM_SAMPLE_S, SYSTEM_SAMPLES_PER_LOG = 5, 1      # system/* metrics: one value logged every 5 s

# A trial's metrics name their split, so that a reader never takes a validation figure for a test one:
# val_* per iteration (step = iteration), test_* once at the end, holdout_* for the second look at the top trials.
# What is not a figure of a split (seconds, env steps, the agents' rewards and multipliers) keeps its plain name.
VAL_KEYS = ("accuracy", "macs_ratio", "macs_ratio_p95", "params_ratio", "score", "feasible", "best_score",
            "correct_confidence", "runtime_sparsity", "rerun_share")
_FINAL_KEYS = ("accuracy", "dense_accuracy", "macs_ratio", "macs_ratio_p95", "params_ratio", "stored_bytes", "score",
               "feasible", "iters_to_best", "best_iteration", "seconds")
_FINAL_NAMES = {**{k: f"test_{k}" for k in ("accuracy", "dense_accuracy", "macs_ratio", "macs_ratio_p95",
                                           "params_ratio", "score", "feasible")}, "seconds": "run_seconds"}


def val_name(key: str) -> str:
    """The MLflow name of a per-iteration row's key: its validation figures as val_<key>."""
    return f"val_{key}" if key in VAL_KEYS else key


def resolve_uri(uri: str | None) -> str:
    """Absolute form of a tracking URI, so trial processes (whose working folder differs) reach the
    same store: `sqlite:///rel.db` -> `sqlite:////abs/rel.db`; a bare path -> file URI."""
    uri = uri or DEFAULT_URI
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return "sqlite:///" + os.path.abspath(path) if not path.startswith("/") else uri
    if "://" not in uri:
        return "file://" + os.path.abspath(uri)
    return uri


def shown_uri(uri: str | None, folder: str) -> str | None:
    """A tracking URI as written for users: a SQLite file or file:// folder under `folder` (the
    sweep's working folder) relative to it, so that a summary copied elsewhere still says where the
    store is; anything else unchanged."""
    if not uri:
        return uri
    for scheme in ("sqlite:///", "file://"):
        if uri.startswith(scheme) and os.path.isabs(uri[len(scheme):]):
            rel = os.path.relpath(uri[len(scheme):], folder)
            if not rel.startswith(os.pardir):
                return scheme + rel
    return uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: next to a SQLite file (absolute, so every process
    agrees); the server's own default for HTTP."""
    if uri.startswith("sqlite:///"):
        return "file://" + os.path.join(os.path.dirname(uri[len("sqlite:///"):]), "mlruns")
    return None


def _client(uri: str):
    import logging

    from mlflow.tracking import MlflowClient
    for noisy in ("mlflow", "alembic"):     # mlflow sets INFO on import; its DB set-up lines are noise here
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _env(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_reachable(uri: str) -> None:
    """Fail fast (one short request, no retries) with a UsageError if the store cannot be used."""
    from rtsearch.errors import UsageError
    if uri.startswith("sqlite:///"):
        folder = os.path.dirname(uri[len("sqlite:///"):])
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"MLflow store {uri}: folder {folder} does not exist or is not writable: "
                             f"pass --mlflow-uri sqlite:///<writable path>.db")
    try:
        with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, MLFLOW_HTTP_REQUEST_TIMEOUT=CHECK_TIMEOUT_S,
                  MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0):
            _client(uri).search_experiments(max_results=1)
    except Exception as e:  # any failure here means no trial could log either
        reason = _reason(e)
        if is_http(uri):
            raise UsageError(f"MLflow tracking server {uri} is unreachable ({reason}): "
                             f"start it (mlflow server --host 127.0.0.1 --port PORT) or pass another "
                             f"--mlflow-uri, e.g. sqlite:///mlruns.db") from None
        raise UsageError(f"MLflow store {uri} cannot be used ({type(e).__name__}: {reason}): "
                         f"pass another --mlflow-uri, e.g. sqlite:///mlruns.db") from None


def _reason(e: Exception) -> str:
    """A short cause for a failed request: the usual network failures by name, else the first line."""
    text = str(e)
    for needle, said in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
                         ("Temporary failure in name resolution", "unknown host"),
                         ("No route to host", "no route to host"), ("SSLError", "TLS error")):
        if needle in text:
            return said
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


def _retry(fn, attempts: int = 5):
    """SQLite stores written by several trial processes may be briefly locked: retry a few times."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def experiment_id(uri: str, name: str) -> str:
    client = _client(uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        if found.tags.get(KIND_TAG) != KIND_TRAINING:
            client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND_TRAINING)
        return found.experiment_id
    root = artifact_root(uri)
    tags = {KIND_TAG: KIND_TRAINING}
    return client.create_experiment(name, artifact_location=root, tags=tags) if root else \
        client.create_experiment(name, tags=tags)


def start_parent(uri: str, experiment: str, run_name: str, params: dict, tags: dict) -> tuple[str, str]:
    """Create the sweep's parent run; returns (experiment id, run id)."""
    client = _client(uri)
    exp_id = experiment_id(uri, experiment)
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
    _log_params(client, run.info.run_id, params)
    return exp_id, run.info.run_id


def reopen(uri: str, run_id: str) -> None:
    """Mark a resumed run as running again."""
    _retry(lambda: _client(uri).update_run(run_id, status="RUNNING"))


def _log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param
    items = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None]
    for i in range(0, len(items), 100):
        _retry(lambda chunk=items[i:i + 100]: client.log_batch(run_id, params=chunk))


def _numeric(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


def system_metrics(uri: str, run_id: str, resumed: bool):
    """Start MLflow's system metrics monitor (CPU, memory, disk, network as system/* metrics) on
    `run_id` from this process; returns it (call .finish()), or None where it cannot run here
    (psutil missing, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false, or any error: the trial goes on
    without them)."""
    import importlib.util
    if importlib.util.find_spec("psutil") is None:      # MLflow's CPU and memory monitor needs it
        return None
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() in ("false", "0"):
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_SAMPLE_S,
                                       samples_before_logging=SYSTEM_SAMPLES_PER_LOG, resume_logging=resumed,
                                       tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception:
        return None


def log_metrics(uri: str, run_id: str, values: dict, step: int | None = None) -> None:
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step or 0) for k, v in _numeric(values).items()]
    if metrics:
        client = _client(uri)
        _retry(lambda: client.log_batch(run_id, metrics=metrics))


def log_artifacts(uri: str, run_id: str, paths: list[str], artifact_path: str | None = None) -> None:
    client = _client(uri)
    for path in paths:
        if os.path.isfile(path):
            _retry(lambda p=path: client.log_artifact(run_id, p, artifact_path))


def set_tags(uri: str, run_id: str, tags: dict) -> None:
    client = _client(uri)
    for k, v in tags.items():
        _retry(lambda k=k, v=v: client.set_tag(run_id, k, str(v)))


def end_run(uri: str, run_id: str, status: str = "FINISHED", tags: dict | None = None,
            only_if_running: bool = False) -> None:
    """Terminate a run (FINISHED, FAILED, KILLED); with only_if_running leave a finished one alone."""
    client = _client(uri)
    if only_if_running and client.get_run(run_id).info.status != "RUNNING":
        return
    if tags:
        set_tags(uri, run_id, tags)

    def terminate():
        with contextlib.redirect_stdout(io.StringIO()):     # MLflow prints run links on stdout for servers
            client.set_terminated(run_id, status=status)
    _retry(terminate)


class TrialRun:
    """A trial's child run, created from inside the trial process; a restarted trial finds its
    run again by the trial-id tag instead of creating a second one.

    One value per metric per step: an iteration run again after a resume (the one in flight when
    the sweep was killed) may already have its step in the run, and MLflow cannot delete a logged
    value, so a step already there is not logged again (the run keeps the first attempt's values for
    it; the trial's history.jsonl in results/ keeps the rerun's). Likewise the final test metrics."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, trial_id: str, run_name: str,
                 params: dict, tags: dict | None = None, run_id: str | None = None):
        self.uri = uri
        client = _client(uri)
        if run_id is None:
            found = _retry(lambda: client.search_runs(
                [experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' "
                                               f"and tags.`mlflow.parentRunId` = '{parent_run_id}'",
                max_results=1))
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            run = _retry(lambda: client.create_run(
                experiment_id, run_name=run_name,
                tags={"mlflow.parentRunId": parent_run_id, TRIAL_TAG: trial_id,
                      **{k: str(v) for k, v in (tags or {}).items()}}))
            run_id = run.info.run_id
            _log_params(client, run_id, params)
            self.resumed, self.logged_steps, self.finished_before = False, set(), False
        else:
            _retry(lambda: client.update_run(run_id, status="RUNNING"))
            self.resumed = True
            # steps already there: val_score, or score in a run logged before the val_ names
            self.logged_steps = {m.step for key in (val_name("score"), "score")
                                 for m in _retry(lambda key=key: client.get_metric_history(run_id, key))}
            self.finished_before = "test_score" in _retry(lambda: client.get_run(run_id)).data.metrics
        self.run_id = run_id

    def log_row(self, row: dict) -> bool:
        """One iteration's row, its validation figures as val_* (VAL_KEYS), step = iteration; False (nothing
        logged) if the run already has that step."""
        if row["iteration"] in self.logged_steps:
            return False
        log_metrics(self.uri, self.run_id, {val_name(k): v for k, v in row.items() if k != "iteration"},
                    step=row["iteration"])
        self.logged_steps.add(row["iteration"])
        return True

    def finish(self, metrics: dict, files: list[str]) -> None:
        """Final (test) metrics (once), the run's files, and FINISHED."""
        final = {_FINAL_NAMES.get(k, k): metrics.get(k) for k in _FINAL_KEYS}
        held = metrics.get("holdout") or {}     # the search's second look (rtsearch.data.hold_out)
        final.update({f"holdout_{k}": held.get(k) for k in ("accuracy", "macs_ratio", "score")})
        for point in metrics.get("curve") or []:     # a budget-range run: its test figures at each budget
            final.update({f"test_{k}_at_{point['budget']:.3f}": point[k] for k in ("accuracy", "macs_ratio")})
        final["test_curve_score"] = metrics.get("curve_score")
        if not self.finished_before:
            log_metrics(self.uri, self.run_id, final, step=int(metrics.get("iterations") or 0))
        log_artifacts(self.uri, self.run_id, files)
        end_run(self.uri, self.run_id, "FINISHED", {STATUS_TAG: "completed"})
