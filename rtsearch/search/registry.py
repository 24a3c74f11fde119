"""The sweeps' best models in the MLflow Model Registry.

One registered model per (dataset, model, method), named by `model_name`: rtsearch-<dataset>-<model>-<method>,
e.g. rtsearch-mnist5k-small-ladder (a sweep of the fixed-ratio peers, --fixed-ratios, adds "-fixed": they are the
baselines, not the method). When a budget's sweep finishes, its best completed trial's deployed model (below; its
child run holds it as deployed.pt) is logged to the budget's parent run as an MLflow PyTorch model, with a
signature and an input example, and becomes a new version of that model: every sweep adds versions, none makes a
model of its own. The version's description names the sweep (its MLflow experiment), the trial and its test
figures; the alias `best-<budget>`, the budget's point written "_" (MLflow aliases allow no "."; aliases, not the
deprecated stages), moves to it, so it always names the latest sweep's best at that budget:

    mlflow.pytorch.load_model("models:/rtsearch-mnist5k-small-ladder@best-0_5")(x)   # logits, (batch, classes)

A front sweep (`rtsearch.tune --front LO:HI`, rtsearch.search.front) registers every member of its front the same
way, under the alias front-<budget> of the member's own budget (front-<budget>-2 ... where several members share
one), so that each names the latest front sweep's member at that budget.

A best trial whose test figures miss its budget (not `feasible`, rtsearch.net.metrics) is not registered:
`refusal` says why, in the sweep's closing lines and as NotRegistered here.

What is packaged is the trial's deployed model, deployed.pt (rtsearch.deploy.deployed.DeployedModel, written
by every run), in the masked form MLflow can store as a torch.export program (`TraceableModel`): the
network of its best iteration with the statically pruned channels removed, and its runtime policy
(the runtime agent with its calibration shift, or a baseline's uniform ratios) choosing per input
which channels count. It predicts what the trial evaluated; loading it needs neither rtsearch nor
pickle. For the speed of the skip path, load deployed.pt itself (an artifact of the trial's run). A method without
a fixed-shape form (`--method paper`, whose runtime agent is recurrent) is registered as its deployed model itself,
pickled: loading that one needs rtsearch installed (`Method.registered`).
"""
from __future__ import annotations

import contextlib
import io
import tempfile

from rtsearch.config import RunConfig
from rtsearch.methods.base import Method
from rtsearch.net.metrics import FEASIBLE_SLACK, overshoot
from rtsearch.search import tracking

ALIAS_PREFIX = "best-"
NAME_PREFIX = "rtsearch"


class NotRegistered(Exception):
    """The best trial is not registered; the message says why (see `refusal`)."""


def model_name(dataset: str, model: str, method: str, fixed_ratios: bool = False) -> str:
    """The registered model of every sweep of (dataset, model, method): rtsearch-<dataset>-<model>-<method>, with
    "-fixed" for the method's fixed-ratio peers (so a baseline's sweep never moves the method's aliases)."""
    return f"{NAME_PREFIX}-{dataset}-{model}-{method}" + ("-fixed" if fixed_ratios else "")


def alias(budget_key: str, prefix: str = ALIAS_PREFIX) -> str:
    """best-<budget> (or another `prefix`), the budget's point as "_": MLflow aliases allow only letters, digits,
    "_" and "-" (budget 0.5 -> best-0_5)."""
    return prefix + budget_key.replace(".", "_")


def refusal(trial: dict, budget: float, param_budget: float | None) -> str | None:
    """Why the best `trial` (its trial_id and test figures: feasible, macs_ratio, params_ratio, and a range run's
    curve) is not registered, in words with the figures that miss; None where it is registered. Infeasible is the
    project's `feasible`: over a budget by more than FEASIBLE_SLACK."""
    if trial.get("feasible") is None:
        return f"trial {trial['trial_id']} has no test figures (it did not complete)"
    if trial["feasible"]:
        return None
    misses = {}
    points = [(budget, trial.get("macs_ratio"))] + [(p["budget"], p["macs_ratio"]) for p in trial.get("curve") or []]
    for b, macs in points:
        if macs is not None and overshoot(macs, b) > FEASIBLE_SLACK:
            misses.setdefault(f"{b:g}", f"MACs {macs:.3f} > {b:g} + {FEASIBLE_SLACK:g}")
    params = trial.get("params_ratio")
    if params is not None and param_budget is not None and overshoot(params, param_budget) > FEASIBLE_SLACK:
        misses["params"] = f"params {params:.3f} > {param_budget:g} + {FEASIBLE_SLACK:g}"
    said = "; ".join(misses.values()) or "its test figures are marked infeasible"
    return f"trial {trial['trial_id']} misses the budget on test ({said})"


def closing_line(settings: dict, key: str, sweep: dict) -> str:
    """One line of a sweep's closing lines per budget: where its best model is registered, or why it is not."""
    from rtsearch.search.names import sweep_method
    best = sweep.get("best")
    head = f"MLflow model, budget {key}: "
    if not best or best.get("status") != "completed":
        return head + "not registered: no trial completed"
    if not sweep.get("finished"):
        return head + "not registered: the budget's sweep did not finish (--resume registers its best)"
    param_budget = best["config"].get("param_budget", settings.get("param_budget"))
    why = refusal(best, sweep["budget"], RunConfig.param_budget if param_budget is None else param_budget)
    if why:
        return head + f"not registered: {why}"
    name = model_name(settings["dataset"], settings["model"], sweep_method(settings),
                      bool(settings.get("fixed_ratios")))
    return head + f"models:/{name}@{alias(key)} (trial {best['trial_id']})"


def front_line(settings: dict, member: dict) -> str:
    """One closing line per front member (rtsearch.search.front): where it is registered, or why it is not."""
    from rtsearch.search.names import sweep_method
    head = f"MLflow model, front member at budget {member['config']['budget']:g}: "
    if member.get("refused"):
        return head + f"not registered: {member['refused']}"
    name = model_name(settings["dataset"], settings["model"], sweep_method(settings),
                      bool(settings.get("fixed_ratios")))
    return head + f"models:/{name}@{member['alias']} (trial {member['trial_id']})"


def _checked(run, budget_key: str) -> dict:
    """The trial's test figures as `refusal` reads them, from its MLflow run (NotRegistered where it refuses)."""
    metrics, params = run.data.metrics, run.data.params
    trial = {"trial_id": run.data.tags.get(tracking.TRIAL_TAG, run.info.run_id),
             "feasible": metrics.get("test_feasible"), "macs_ratio": metrics.get("test_macs_ratio"),
             "params_ratio": metrics.get("test_params_ratio")}
    budget = float(params.get("budget", budget_key))
    why = refusal(trial, budget, float(params.get("param_budget", RunConfig.param_budget)))
    if why:
        raise NotRegistered(why)
    return trial


def register_best(uri: str, experiment_id: str, parent_run_id: str, sweep: str, budget_key: str,
                  trial_run_id: str, method: Method, alias_name: str | None = None,
                  role: str = "its best trial") -> str:
    """Log the best trial's model (a run of `method` in the sweep `sweep`, its MLflow experiment) to the parent run,
    register it as a new version of its (dataset, model, method)'s model (`model_name`), describe the version and
    point the alias best-<budget> (or `alias_name`: a front member's, with `role` saying what it is) at it; returns
    the version. A trial that misses its budget on test raises NotRegistered, before anything is logged."""
    import mlflow.pytorch
    import torch
    from mlflow.artifacts import download_artifacts
    from mlflow.models import infer_signature
    client = tracking._client(uri)
    run = client.get_run(trial_run_id)
    trial = _checked(run, budget_key)
    params = run.data.params
    name = model_name(params["dataset"], params["model"], method.name, params.get("fixed_ratios") == "True")
    # quiet: no progress bars, no "Created version" lines (the driver prints one line of its own)
    with tempfile.TemporaryDirectory() as folder, tracking._env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), \
            contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        def fetch(path: str) -> str:
            return download_artifacts(run_id=trial_run_id, artifact_path=path, dst_path=folder, tracking_uri=uri)
        model, form = method.registered(torch.load(fetch("deployed.pt"), weights_only=False))   # our own pickle
        example = torch.zeros(2, *model.input_shape)
        with torch.no_grad():
            output = model(example).numpy()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=experiment_id)      # where the logged model is kept
        info = mlflow.pytorch.log_model(
            model, name="model", run_id=parent_run_id, registered_model_name=name, serialization_format=form,
            signature=infer_signature(example.numpy(), output), input_example=example.numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            tags={"rtsearch.trial_run_id": trial_run_id, "rtsearch.budget": budget_key})
    version = str(info.registered_model_version)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=(
            f"The best models of rtsearch sweeps of {params['dataset']} / {params['model']}, method {method.name}"
            f"{' at fixed ratios (the baseline)' if name.endswith('-fixed') else ''}: one version per sweep and "
            f"budget, its description naming the sweep and the trial; the alias best-<budget> is the latest "
            f"sweep's best at that budget."))
    m = run.data.metrics
    client.update_model_version(name, version, description=(
        f"Sweep {sweep!r} (MLflow experiment {sweep}), budget {budget_key}: {role} {trial['trial_id']} "
        f"(run {trial_run_id}). Test split: accuracy {m.get('test_accuracy', float('nan')):.4f}, MACs ratio "
        f"{m.get('test_macs_ratio', float('nan')):.4f}, params ratio {m.get('test_params_ratio', float('nan')):.4f}, "
        f"score {m.get('test_score', float('nan')):.4f}."))
    for tag, value in (("rtsearch.trial_run_id", trial_run_id), ("rtsearch.trial_id", trial["trial_id"]),
                       ("rtsearch.sweep", sweep), ("rtsearch.budget", budget_key)):
        client.set_model_version_tag(name, version, tag, value)
    client.set_registered_model_alias(name, alias_name or alias(budget_key), version)
    return version
