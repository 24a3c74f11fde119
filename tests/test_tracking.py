"""MLflow tracking rules against a real (SQLite) MLflow store: no server, no Ray, no training."""
import os

import pytest
import torch

from rtsearch.net.surgery import prune_static
from rtsearch.net.fast import SkipNet
from rtsearch.net.models import build_model
from rtsearch.deploy.deployed import DeployedModel, FixedRatios
from rtsearch import methods
from rtsearch.search import registry, tracking


def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlruns.db"


def trial_run(uri, exp_id, parent, run_id=None):
    return tracking.TrialRun(uri, exp_id, parent, "t1", "demo/t1", {"lam": 0.5}, run_id=run_id)


def test_shown_uri_is_relative_to_the_working_folder_or_left_as_given(tmp_path):
    folder = str(tmp_path)
    assert tracking.shown_uri(f"sqlite:///{folder}/mlruns.db", folder) == "sqlite:///mlruns.db"
    assert tracking.shown_uri(f"sqlite:///{folder}/sub/x.db", folder) == "sqlite:///sub/x.db"
    assert tracking.shown_uri(f"file://{folder}/mlruns", folder) == "file://mlruns"
    assert tracking.shown_uri("sqlite:////elsewhere/x.db", folder) == "sqlite:////elsewhere/x.db"   # not under it
    assert tracking.shown_uri("http://127.0.0.1:5000", folder) == "http://127.0.0.1:5000"
    assert tracking.shown_uri(None, folder) is None


@pytest.mark.slow
def test_the_experiment_is_marked_as_model_training(tmp_path):
    from mlflow.tracking import MlflowClient
    uri = store(tmp_path)
    client = MlflowClient(uri)
    exp_id = tracking.experiment_id(uri, "demo")
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("older")                 # an experiment made before the tag existed
    assert tracking.experiment_id(uri, "older") == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_a_rerun_iteration_leaves_one_value_per_step(tmp_path):
    from mlflow.tracking import MlflowClient
    uri = store(tmp_path)
    exp_id, parent = tracking.start_parent(uri, "demo", "demo budget 0.5", {"budget": 0.5}, {})
    first = trial_run(uri, exp_id, parent)
    assert first.log_row({"iteration": 1, "score": 0.5}) and first.log_row({"iteration": 2, "score": 0.6})
    # killed during iteration 2's report: the resumed trial (found by its tag, or by its stored id) runs 2 again
    for again in (trial_run(uri, exp_id, parent), trial_run(uri, exp_id, parent, run_id=first.run_id)):
        assert again.run_id == first.run_id and again.resumed
        assert not again.log_row({"iteration": 2, "score": 0.7})
    assert again.log_row({"iteration": 3, "score": 0.8})
    history = MlflowClient(uri).get_metric_history(first.run_id, "score")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.6), (3, 0.8)]
    # the final test metrics, too, are logged once when finishing is run again
    metrics = {"score": 0.9, "accuracy": 0.91, "iterations": 3}
    again.finish(metrics, [])
    trial_run(uri, exp_id, parent, run_id=first.run_id).finish({**metrics, "score": 0.1}, [])
    assert [m.value for m in MlflowClient(uri).get_metric_history(first.run_id, "test_score")] == [0.9]


@pytest.mark.slow
def test_system_metrics_of_a_run(tmp_path):
    import time

    from mlflow.tracking import MlflowClient
    uri = store(tmp_path)
    exp_id, parent = tracking.start_parent(uri, "demo", "demo budget 0.5", {"budget": 0.5}, {})
    run = trial_run(uri, exp_id, parent)
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.2"
    try:
        monitor = tracking.system_metrics(uri, run.run_id, resumed=False)
        assert monitor is not None
        time.sleep(1.5)
        monitor.finish()
    finally:
        del os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"]
    keys = MlflowClient(uri).get_run(run.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(keys), keys


@pytest.mark.slow
def test_the_best_model_is_registered_and_loads_by_alias(tmp_path):
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient
    uri = store(tmp_path)
    torch.manual_seed(0)
    net = build_model("small", (1, 8, 8), 10).eval()
    static = [0.5, 0.25, 0.0, 0.5, 0.25]
    runtime = [0.2] * net.num_layers
    files = tmp_path / "trial"
    files.mkdir()
    deployed = DeployedModel(SkipNet(net, static), FixedRatios(runtime), net.input_shape, prune_static(net, static))
    torch.save(deployed, files / "deployed.pt")
    exp_id, parent = tracking.start_parent(uri, "demo", "demo budget 0.5", {"budget": 0.5}, {})
    child = trial_run(uri, exp_id, parent)
    tracking.log_artifacts(uri, child.run_id, [str(files / "deployed.pt")])
    version = registry.register_best(uri, exp_id, parent, "demo", "0.5", child.run_id, methods.get("both"))
    assert str(MlflowClient(uri).get_model_version_by_alias("demo", "best-0_5").version) == version
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/demo@best-0_5")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        got = model(x)
        masked = net(x, torch.tensor(static), torch.tensor(runtime))     # the masked network before export
        skip = deployed(x)                                               # the skip path of deployed.pt
    assert got.shape == (4, 10)
    torch.testing.assert_close(got, masked, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got, skip, atol=1e-5, rtol=1e-4)
    info = mlflow.models.get_model_info("models:/demo@best-0_5")
    assert info.signature is not None and info.saved_input_example_info is not None
    # a second registration (another sweep of the same name) moves the alias to its new version
    again = registry.register_best(uri, exp_id, parent, "demo", "0.5", child.run_id, methods.get("both"))
    assert again != version and str(MlflowClient(uri).get_model_version_by_alias("demo", "best-0_5").version) == again
