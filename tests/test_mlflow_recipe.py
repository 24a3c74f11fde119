"""MLflow as a user reads it after real sweeps (tiny ones on digits, a real SQLite store): the README's recipe
runs as written for a sweep of any method (tests/test_tune.py reads its ladder sweep with it), each (dataset,
model, method) has one registered model that every sweep adds a version to, and a trial's metrics and parameters
say what they are."""
import contextlib
import io
import os
import re

import pytest

from conftest import ok, tune
from rtsearch import methods
from rtsearch.config import RunConfig

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
# the smallest sweeps tests/test_tune.py runs: one trial of one iteration, no baseline beside it
TINY = ["--dataset", "digits", "--model", "small", "--dense-epochs", "1", "--num-cpus", "2", "--max-iterations", "1",
        "--num-samples", "1", "--no-baseline"]
BOTH = [*TINY, "--method", "both", "--budget", "0.5", "--param-budget", "0.8"]
VAL = {"val_score", "val_best_score", "val_accuracy", "val_macs_ratio", "val_macs_ratio_p95", "val_params_ratio",
       "val_feasible"}
TEST = {"test_score", "test_accuracy", "test_macs_ratio", "test_params_ratio", "test_feasible"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A dense-model cache for these sweeps only (their 1-epoch dense model must not serve other tests)."""
    return str(tmp_path_factory.mktemp("recipe-dense-cache"))


def recipe() -> str:
    """The python block of README.md between <!-- mlflow-recipe --> and <!-- /mlflow-recipe -->."""
    with open(README) as f:
        text = f.read()
    found = re.search(r"<!-- mlflow-recipe -->\s*```python\n(.*?)```\s*<!-- /mlflow-recipe -->", text, re.S)
    assert found, "README.md has no python block between <!-- mlflow-recipe --> and <!-- /mlflow-recipe -->"
    return found.group(1)


def run_recipe(cwd, name: str, method: str) -> tuple[dict, str]:
    """The recipe as written for the sweep `name` run in `cwd`: its variables and what it printed. Its store,
    sqlite:///mlruns.db of the working folder, is written out as that folder's absolute path (MLflow keeps one
    store per URI for the whole process, so the same relative URI would reach an earlier test's folder)."""
    code = recipe()
    for placeholder, value in (("<name>", name), ("<dataset>", "digits"), ("<model>", "small"), ("<method>", method),
                               ("sqlite:///mlruns.db", f"sqlite:///{cwd}/mlruns.db")):
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


@pytest.mark.slow
def test_a_second_sweep_of_both_agents_adds_a_version_and_moves_the_alias(tmp_path, cache):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    name = "rtsearch-digits-small-both"
    first = ok(tune(tmp_path, cache, *BOTH, "--name", "b1"))
    assert f"MLflow model, budget 0.5: models:/{name}@best-0_5 (trial " in first, first
    second = ok(tune(tmp_path, cache, *BOTH, "--name", "b2"))
    assert f"MLflow model, budget 0.5: models:/{name}@best-0_5 (trial " in second, second
    for sweep in ("b1", "b2"):
        check_trial_run(uri, sweep, "both")
    assert {"lam", "lr_runtime", "lr_static", "beta_f"} <= set(child(uri, "b1").data.params)
    assert "fixed_ratios" not in child(uri, "b1").data.params

    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    assert [m.name for m in client.search_registered_models()] == [name]     # one model, not one per sweep
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == ["1", "2"]
    assert str(client.get_model_version_by_alias(name, "best-0_5").version) == "2"
    assert client.get_model_version(name, "1").aliases == [] and client.get_model_version(name, "2").aliases == [
        "best-0_5"]
    for number, sweep in (("1", "b1"), ("2", "b2")):
        run = child(uri, sweep)
        assert versions[number].description.startswith(f"Sweep '{sweep}' (MLflow experiment {sweep}), budget 0.5: "
                                                        f"its best trial {run.data.tags['rtsearch.trial_id']} ")
        assert versions[number].tags["rtsearch.trial_run_id"] == run.info.run_id

    names, printed = run_recipe(tmp_path, "b1", "both")
    assert {"params.lam", "params.lr_runtime"} <= set(names["params"]) and "params.fixed_ratios" not in names["params"]
    assert child(uri, "b1").data.tags["rtsearch.trial_id"] in printed
    assert "{'best-0_5': 2}" in printed, printed
    assert "2 Sweep 'b2' (MLflow experiment b2)" in printed and "1 Sweep 'b1' (MLflow experiment b1)" in printed
