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


def trial_run(uri, exp_id, parent, run_id=None, params=None):
    return tracking.TrialRun(uri, exp_id, parent, "t1", "demo/t1", params or {"lam": 0.5}, run_id=run_id)


# what a trial of `--method both` at budget 0.5 logs as parameters (the registry reads dataset, model, budgets)
BOTH_PARAMS = {"dataset": "digits", "model": "small", "method": "both", "budget": 0.5, "param_budget": 1.0}
TEST_FIGURES = {"score": 0.9, "accuracy": 0.9, "macs_ratio": 0.49, "params_ratio": 0.6, "feasible": True,
                "iterations": 1}


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
    history = MlflowClient(uri).get_metric_history(first.run_id, "val_score")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.6), (3, 0.8)]
    assert "score" not in MlflowClient(uri).get_run(first.run_id).data.metrics
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
def test_a_trial_names_the_split_of_each_metric(tmp_path):
    """Per iteration: validation figures as val_*, the rest plain; at the end: test_* (and run_seconds)."""
    from mlflow.tracking import MlflowClient
    uri = store(tmp_path)
    exp_id, parent = tracking.start_parent(uri, "demo", "demo budget 0.5", {"budget": 0.5}, {})
    run = trial_run(uri, exp_id, parent, params=BOTH_PARAMS)
    run.log_row({"iteration": 1, "score": 0.5, "best_score": 0.5, "accuracy": 0.6, "macs_ratio": 0.5,
                 "macs_ratio_p95": 0.7, "params_ratio": 0.6, "feasible": True, "correct_confidence": 0.4,
                 "seconds": 3.0, "beta_f": 1.5, "static_ratios": [0.1, 0.2]})
    run.finish({**TEST_FIGURES, "dense_accuracy": 0.95, "seconds": 9.0}, [])
    logged = MlflowClient(uri).get_run(run.run_id).data.metrics
    assert set(logged) == {"val_score", "val_best_score", "val_accuracy", "val_macs_ratio", "val_macs_ratio_p95",
                           "val_params_ratio", "val_feasible", "val_correct_confidence", "seconds", "beta_f",
                           "test_score", "test_accuracy", "test_macs_ratio", "test_params_ratio", "test_feasible",
                           "test_dense_accuracy", "run_seconds"}, sorted(logged)
    assert (logged["val_feasible"], logged["val_accuracy"], logged["test_accuracy"]) == (1.0, 0.6, 0.9)


@pytest.mark.slow
def test_a_run_logged_before_the_val_names_is_resumed_without_a_second_value(tmp_path):
    """A sweep resumed across the rename: its run has `score` at step 1, so iteration 1 is not logged again."""
    uri = store(tmp_path)
    exp_id, parent = tracking.start_parent(uri, "demo", "demo budget 0.5", {"budget": 0.5}, {})
    first = trial_run(uri, exp_id, parent)
    tracking.log_metrics(uri, first.run_id, {"score": 0.5}, step=1)
    again = trial_run(uri, exp_id, parent, run_id=first.run_id)
    assert not again.log_row({"iteration": 1, "score": 0.7}) and again.log_row({"iteration": 2, "score": 0.8})


def test_a_trial_logs_only_the_parameters_its_method_uses():
    """A ladder trial has no lam, lr_runtime or fixed_ratios; a fixed-ratio trial of both drops the agents'
    searched keys its run ignores but keeps lam, which its fixed-ratio run uses."""
    from rtsearch.config import RunConfig
    searched = {"lr_finetune": 1e-3, "lr_rerun": 1e-3, "entropy_rerun": 0.01}
    ladder = methods.get("ladder")
    params = ladder.trial_params(RunConfig(method="ladder", agent_iterations=2), {**searched, "lam": 0.5})
    assert not {"lam", "lr_runtime", "fixed_ratios"} & set(params), params
    assert set(searched) <= set(params) and params["agent_iterations"] == 2 and params["method"] == "ladder"
    both = methods.get("both")
    cfg = RunConfig(method="both", fixed_ratios=True)
    params = both.trial_params(cfg, {"lr_runtime": 1e-4, "beta_f": 1.0, "lam": 0.3, "lr_finetune": 1e-3})
    assert {"lam", "lr_finetune", "fixed_ratios"} <= set(params) and not {"lr_runtime", "beta_f"} & set(params)
    assert set(params) <= both.uses(cfg)
    agents = both.trial_params(RunConfig(method="both"), {"lr_runtime": 1e-4, "lam": 0.3})
    assert {"lr_runtime", "lam"} <= set(agents) and "fixed_ratios" not in agents


def closing_sweep(tmp_path, feasible=True, macs=0.05, params=0.6, param_budget=None, status="completed",
                  finished=True):
    """A stored sweep of the ladder at budget 0.08 with one trial `a` of these test figures; its closing lines."""
    from rtsearch.search import summary as report
    folder = tmp_path / "results" / "s"
    report.write_json(str(folder / report.SWEEP_FILE), {
        "name": "s", "mlflow_experiment_id": "1", "sweeps": {"0.08": {"finished": finished, "seconds": 1.0}},
        "settings": {"budgets": [0.08], "param_budget": param_budget, "dataset": "mnist5k", "model": "small",
                     "method": "ladder", "space_path": "/x/ladder.yaml", "space": {}, "num_samples": 1,
                     "max_iterations": 1, "search": "tpe", "seed": 0, "num_env_runners": 0,
                     "mlflow_uri": "sqlite:///mlruns.db", "fixed_ratios": False, "baseline": False}})
    report.write_trial(str(folder), "a", {"trial_id": "a", "budget": 0.08, "config": {}, "status": status,
                                          "started": 1.0, "attempts": 1})
    report.append_row(str(folder), "a", {"iteration": 1, "accuracy": 0.9, "macs_ratio": macs, "params_ratio": params,
                                         "score": 0.9, "feasible": feasible, "seconds": 1.0})
    if status == "completed":
        report.write_json(str(folder / "trials" / "a" / "metrics.json"), {
            "accuracy": 0.9, "macs_ratio": macs, "params_ratio": params, "score": 0.9, "feasible": feasible})
    summary = report.summarize(str(folder))
    return report.closing_lines(summary, str(folder), "sqlite:///mlruns.db", 1.0).splitlines()


def test_the_closing_lines_name_the_registered_model_or_why_the_best_is_not_registered(tmp_path):
    lines = closing_sweep(tmp_path)
    assert "MLflow model, budget 0.08: models:/rtsearch-mnist5k-small-ladder@best-0_08 (trial a)" in lines, lines
    assert ("MLflow model, budget 0.08: not registered: trial a misses the budget on test (MACs 0.093 > 0.08 + 0.01)"
            in closing_sweep(tmp_path, feasible=False, macs=0.093))
    assert ("MLflow model, budget 0.08: not registered: trial a misses the budget on test (params 0.700 > 0.5 + 0.01)"
            in closing_sweep(tmp_path, feasible=False, params=0.7, param_budget=0.5))
    assert "MLflow model, budget 0.08: not registered: no trial completed" in closing_sweep(tmp_path, status="stopped")
    unfinished = closing_sweep(tmp_path, finished=False)
    assert any(line.startswith("MLflow model, budget 0.08: not registered: the budget's sweep did not finish")
               for line in unfinished), unfinished


def test_a_registered_model_is_named_by_dataset_model_and_method():
    assert registry.model_name("mnist5k", "small", "ladder") == "rtsearch-mnist5k-small-ladder"
    assert registry.model_name("digits", "small", "both", fixed_ratios=True) == "rtsearch-digits-small-both-fixed"
    assert registry.alias("0.08") == "best-0_08" and registry.alias("0.5") == "best-0_5"


@pytest.mark.slow
def test_an_infeasible_best_is_not_registered(tmp_path):
    """Test figures over the budget by more than the slack: nothing logged or registered, the reason raised."""
    from mlflow.tracking import MlflowClient
    uri = store(tmp_path)
    exp_id, parent = tracking.start_parent(uri, "demo", "demo budget 0.08", {"budget": 0.08}, {})
    child = trial_run(uri, exp_id, parent, params={**BOTH_PARAMS, "budget": 0.08})
    child.finish({**TEST_FIGURES, "macs_ratio": 0.093, "feasible": False}, [])
    with pytest.raises(registry.NotRegistered, match=r"^trial t1 misses the budget on test \(MACs 0.093 > 0.08 "
                                                     r"\+ 0.01\)$"):
        registry.register_best(uri, exp_id, parent, "demo", "0.08", child.run_id, methods.get("both"))
    client = MlflowClient(uri)
    assert client.search_registered_models() == [] and not client.list_artifacts(parent)


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
    child = trial_run(uri, exp_id, parent, params=BOTH_PARAMS)
    child.finish(TEST_FIGURES, [str(files / "deployed.pt")])
    version = registry.register_best(uri, exp_id, parent, "demo", "0.5", child.run_id, methods.get("both"))
    client = MlflowClient(uri)
    name = "rtsearch-digits-small-both"             # the model of (dataset, model, method), not of the sweep
    assert [m.name for m in client.search_registered_models()] == [name]
    first = client.get_model_version_by_alias(name, "best-0_5")
    assert str(first.version) == version == "1"
    assert first.description.startswith("Sweep 'demo' (MLflow experiment demo), budget 0.5: its best trial t1 (run ")
    assert "Test split: accuracy 0.9000, MACs ratio 0.4900, params ratio 0.6000, score 0.9000." in first.description
    assert (first.tags["rtsearch.sweep"], first.tags["rtsearch.trial_id"]) == ("demo", "t1")
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"models:/{name}@best-0_5")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        got = model(x)
        masked = net(x, torch.tensor(static), torch.tensor(runtime))     # the masked network before export
        skip = deployed(x)                                               # the skip path of deployed.pt
    assert got.shape == (4, 10)
    torch.testing.assert_close(got, masked, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got, skip, atol=1e-5, rtol=1e-4)
    info = mlflow.models.get_model_info(f"models:/{name}@best-0_5")
    assert info.signature is not None and info.saved_input_example_info is not None
    stored = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@best-0_5", dst_path=str(tmp_path / "m"))
    assert os.listdir(os.path.join(stored, "data")) == ["model.pt2"]          # a torch.export program, not a pickle
    # another sweep of the same dataset, model and method adds a version and moves the alias to it
    exp2, parent2 = tracking.start_parent(uri, "demo2", "demo2 budget 0.5", {"budget": 0.5}, {})
    child2 = trial_run(uri, exp2, parent2, params=BOTH_PARAMS)
    child2.finish(TEST_FIGURES, [str(files / "deployed.pt")])
    again = registry.register_best(uri, exp2, parent2, "demo2", "0.5", child2.run_id, methods.get("both"))
    assert again == "2" and [m.name for m in client.search_registered_models()] == [name]
    latest = client.get_model_version_by_alias(name, "best-0_5")
    assert str(latest.version) == again and latest.description.startswith("Sweep 'demo2'")
    assert client.get_model_version(name, again).aliases == ["best-0_5"]
    assert client.get_model_version(name, version).aliases == []       # the first version stays, without it


def test_a_paper_runs_model_is_registered_pickled_and_answers_as_its_deployed_model(tmp_path):
    """`--method paper` has no fixed-shape form (its runtime agent is recurrent): its deployed model itself is
    registered, pickled, and loads by alias answering as deployed.pt does."""
    import gymnasium as gym
    import mlflow.pytorch
    import numpy as np
    from mlflow.tracking import MlflowClient
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rtsearch.net.tradeoff import PaperNet
    from rtsearch.rl.paper_agents import model_config
    from rtsearch.rl.paper_env import Layout, layer_inputs
    from rtsearch.rl.paper_policy import PaperModel
    uri = store(tmp_path)
    torch.manual_seed(0)
    net = build_model("small", (1, 8, 8), 10)
    layout = Layout(layer_inputs(net), [g.out_channels for g in net.gates], "blocks")
    module = RLModuleSpec(module_class=DefaultPPOTorchRLModule,
                          observation_space=gym.spaces.Box(-np.inf, np.inf, (layout.dim,), np.float32),
                          action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
                          model_config=model_config(net.num_layers, True)).build()
    deployed = PaperModel(PaperNet(net), module, [0.6] * net.num_layers, 0.5, 0.5, "blocks").eval()
    files = tmp_path / "trial"
    files.mkdir()
    torch.save(deployed, files / "deployed.pt")
    exp_id, parent = tracking.start_parent(uri, "demo", "demo budget 0.3", {"budget": 0.3}, {})
    child = trial_run(uri, exp_id, parent, params={**BOTH_PARAMS, "method": "paper", "budget": 0.3})
    child.finish({**TEST_FIGURES, "macs_ratio": 0.29}, [str(files / "deployed.pt")])
    version = registry.register_best(uri, exp_id, parent, "demo", "0.3", child.run_id, methods.get("paper"))
    name = "rtsearch-digits-small-paper"
    assert str(MlflowClient(uri).get_model_version_by_alias(name, "best-0_3").version) == version == "1"
    mlflow.set_tracking_uri(uri)
    stored = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@best-0_3", dst_path=str(tmp_path / "m"))
    assert "model.pth" in os.listdir(os.path.join(stored, "data"))                # pickled
    model = mlflow.pytorch.load_model(f"models:/{name}@best-0_3")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), deployed(x))
