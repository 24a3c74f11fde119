"""MLflow as a user reads it after real sweeps (tiny ones on digits): the README's recipe runs as written for a
sweep of any method, each (dataset, model, method) has one registered model that every sweep adds a version to, and a
trial's metrics and parameters say what they are. The sweeps are those of tests/test_tune.py, which calls these checks:
its ladder sweep on a SQLite store, and a second sweep of both agents after its sweep on an `mlflow server`."""
import contextlib
import io
import os
import re

from conftest import ok, tune
from rtsearch import methods
from rtsearch.config import RunConfig

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
VAL = {"val_score", "val_best_score", "val_accuracy", "val_macs_ratio", "val_macs_ratio_p95", "val_params_ratio",
       "val_feasible"}
TEST = {"test_score", "test_accuracy", "test_macs_ratio", "test_params_ratio", "test_feasible"}


def recipe() -> str:
    """The python block of README.md between <!-- mlflow-recipe --> and <!-- /mlflow-recipe -->."""
    with open(README) as f:
        text = f.read()
    found = re.search(r"<!-- mlflow-recipe -->\s*```python\n(.*?)```\s*<!-- /mlflow-recipe -->", text, re.S)
    assert found, "README.md has no python block between <!-- mlflow-recipe --> and <!-- /mlflow-recipe -->"
    return found.group(1)


def test_the_recipe_is_there_with_its_placeholders_and_is_python():
    """tests/test_tune.py runs it after real sweeps (slow); here only that it is found, names what `run_recipe` fills
    in, and compiles."""
    code = recipe()
    assert all(p in code for p in ("<name>", "<dataset>", "<model>", "<method>", "sqlite:///mlruns.db"))
    compile(code, "README.md mlflow-recipe", "exec")


def run_recipe(uri: str, name: str, method: str) -> tuple[dict, str]:
    """The recipe as written for the sweep `name` logged to `uri`: its variables and what it printed. Its store,
    sqlite:///mlruns.db of the working folder, is written out as `uri` (a SQLite store by its absolute path: MLflow
    keeps one store per URI for the whole process, so the same relative URI would reach an earlier test's folder)."""
    code = recipe()
    for placeholder, value in (("<name>", name), ("<dataset>", "digits"), ("<model>", "small"), ("<method>", method),
                               ("sqlite:///mlruns.db", uri)):
        assert placeholder in code, placeholder
        code = code.replace(placeholder, value)
    out, names = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md mlflow-recipe", "exec"), names)
    return names, out.getvalue()


def child(uri: str, name: str, trial_id: str | None = None):
    """The MLflow run of trial `trial_id` of the sweep `name` (None: of its one trial)."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                              filter_string=f"tags.`rtsearch.trial_id` = '{trial_id}'" if trial_id else
                              "tags.`rtsearch.trial_id` != ''")
    assert len(runs) == 1, runs
    return runs[0]


def check_trial_run(uri: str, name: str, method: str, trial_id: str | None = None, iterations: int = 1) -> None:
    """Validation figures as val_* at every iteration, test figures as test_*, none unprefixed; parameters only
    of settings the method uses."""
    from mlflow.tracking import MlflowClient
    run = child(uri, name, trial_id)
    metrics, params = run.data.metrics, run.data.params
    assert VAL | TEST <= set(metrics), sorted(metrics)
    assert not {"score", "best_score", "accuracy", "macs_ratio", "params_ratio", "feasible"} & set(metrics)
    steps = [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "val_score")]
    assert steps == list(range(1, iterations + 1)), steps
    cfg = RunConfig(method=method)
    assert set(params) - {"trial_id"} <= methods.get(method).uses(cfg), sorted(params)
    assert params["method"] == method and params["trial_id"] == run.data.tags["rtsearch.trial_id"]


def check_a_second_sweep_adds_a_version_and_moves_the_alias(cwd, cache, uri: str, first: str, common: list[str],
                                                            budgets=("--budget", "0.5")) -> str:
    """After the sweep `first` of both agents (`common` its flags but budgets, samples and store), a second sweep at
    budget 0.5 (`budgets`: or a budget range whose top is 0.5) adds a version to the one registered model of
    (digits, small, both) and moves best-0_5 onto it; the README's recipe reads it back. Returns what it printed."""
    from mlflow.tracking import MlflowClient
    name = "rtsearch-digits-small-both"
    client = MlflowClient(uri)
    before = sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)
    second = ok(tune(cwd, cache, *common, *budgets, "--num-samples", "1", "--no-baseline", "--name", "again",
                     "--mlflow-uri", uri))
    assert f"MLflow model, budget 0.5: models:/{name}@best-0_5 (trial " in second, second
    check_trial_run(uri, "again", "both")
    run = child(uri, "again")
    assert {"lam", "lr_runtime", "lr_static", "beta_f"} <= set(run.data.params)
    assert "fixed_ratios" not in run.data.params

    assert [m.name for m in client.search_registered_models()] == [name]     # one model, not one per sweep
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    new = str(len(before) + 1)
    assert sorted(versions, key=int) == [*before, new]
    assert str(client.get_model_version_by_alias(name, "best-0_5").version) == new
    assert [v for v in before if "best-0_5" in client.get_model_version(name, v).aliases] == []     # moved off
    assert versions[new].description.startswith(f"Sweep 'again' (MLflow experiment again), budget 0.5: its best "
                                                f"trial {run.data.tags['rtsearch.trial_id']} ")
    assert versions[new].tags["rtsearch.trial_run_id"] == run.info.run_id
    assert all(versions[v].description.startswith(f"Sweep '{first}' (MLflow experiment {first}), budget ")
               for v in before)

    names, printed = run_recipe(uri, "again", "both")
    assert {"params.lam", "params.lr_runtime"} <= set(names["params"]) and "params.fixed_ratios" not in names["params"]
    assert run.data.tags["rtsearch.trial_id"] in printed
    assert str(names["model"].aliases["best-0_5"]) == new and str(names["model"].aliases) in printed, printed
    assert f"{new} Sweep 'again' (MLflow experiment again)" in printed, printed
    assert all(f"{v} Sweep '{first}' (MLflow experiment {first})" in printed for v in before), printed
    return second
