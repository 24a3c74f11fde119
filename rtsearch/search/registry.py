"""The sweep's best model in the MLflow Model Registry.

When a budget's sweep finishes, the best completed trial's exported model (the storage-reduced
network `model.pt` its child run holds, rtsearch/net/export.py) is logged to the budget's parent run
as an MLflow PyTorch model, with a signature and an input example, registered under the
experiment's name, and given the alias `best-<budget>` with the budget's point written "_" (MLflow
aliases allow no "."; aliases, not the deprecated stages):

    mlflow.pytorch.load_model("models:/<name>@best-0_5")(x)      # budget 0.5; logits, shape (batch, classes)

What is packaged is `Deployed`: a plain `nn.Module` whose forward(x) is the exported network's
forward with fixed runtime ratios. A fixed-ratio run (the baseline) packages its own uniform runtime
ratios, so the model computes exactly what the trial evaluated. A run with agents decides runtime
ratios per input with its runtime agent (an RLlib policy reading the network's importances layer by
layer), which is not packaged: its model runs the statically pruned channels in full (runtime ratio
0 on every layer), i.e. the trial's static pruning without its runtime gating, so it predicts at
least as many MACs as the trial reported. Loading needs the rtsearch package importable (the
pickled module's classes live in it).
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile

import torch
from torch import nn

from rtsearch.net import checkpoint
from rtsearch.search import tracking

ALIAS_PREFIX = "best-"


class Deployed(nn.Module):
    """The exported (storage-reduced) network with fixed runtime ratios; forward(x) gives logits."""

    def __init__(self, net: nn.Module, runtime_ratios):
        super().__init__()
        self.net = net.eval()
        self.register_buffer("runtime_ratios", torch.as_tensor(runtime_ratios, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, None, self.runtime_ratios)


def deployed(model_path: str, metrics: dict) -> Deployed:
    """`Deployed` from a trial's exported model.pt and its metrics.json (see the module doc for the ratios)."""
    net = checkpoint.network(checkpoint.load(model_path))
    ratios = metrics.get("runtime_ratios") or [0.0] * net.num_layers
    return Deployed(net, ratios).eval()


def alias(budget_key: str) -> str:
    """best-<budget>, the budget's point as "_": MLflow aliases allow only letters, digits, "_" and "-"
    (budget 0.5 -> best-0_5)."""
    return ALIAS_PREFIX + budget_key.replace(".", "_")


def register_best(uri: str, experiment_id: str, parent_run_id: str, name: str, budget_key: str,
                  trial_run_id: str) -> str:
    """Log the best trial's model to the parent run, register it as `name` and point the alias
    best-<budget> at the new version; returns the version."""
    import mlflow.pytorch
    from mlflow.artifacts import download_artifacts
    from mlflow.models import infer_signature
    client = tracking._client(uri)
    # quiet: no progress bars, no "Created version" lines (the driver prints one line of its own)
    with tempfile.TemporaryDirectory() as folder, tracking._env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), \
            contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        def fetch(path: str) -> str:
            return download_artifacts(run_id=trial_run_id, artifact_path=path, dst_path=folder, tracking_uri=uri)
        with open(fetch("metrics.json")) as f:
            metrics = json.load(f)
        model = deployed(fetch("model.pt"), metrics)
        example = torch.zeros(2, *model.net.input_shape)
        with torch.no_grad():
            output = model(example).numpy()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=experiment_id)      # where the logged model is kept
        info = mlflow.pytorch.log_model(
            model, name="model", run_id=parent_run_id, registered_model_name=name,
            signature=infer_signature(example.numpy(), output), input_example=example.numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            tags={"rtsearch.trial_run_id": trial_run_id, "rtsearch.budget": budget_key})
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias(budget_key), version)
    client.set_model_version_tag(name, version, "rtsearch.trial_run_id", trial_run_id)
    return version
