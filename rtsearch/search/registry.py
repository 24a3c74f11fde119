"""The sweep's best model in the MLflow Model Registry.

When a budget's sweep finishes, the best completed trial's deployed model (below; its child run holds
it as deployed.pt) is logged to the budget's parent run as an MLflow PyTorch model, with a signature and an
input example, registered under the experiment's name, and given the alias `best-<budget>` with the budget's
point written "_" (MLflow aliases allow no "."; aliases, not the deprecated stages):

    mlflow.pytorch.load_model("models:/<name>@best-0_5")(x)      # budget 0.5; logits, shape (batch, classes)

What is packaged is the trial's deployed model, deployed.pt (rtsearch.deploy.deployed.DeployedModel, written
by every run), in the masked form MLflow can store as a torch.export program (rtsearch.deploy.traced): the
network of its best iteration with the statically pruned channels removed, and its runtime policy
(the runtime agent with its calibration shift, or a baseline's uniform ratios) choosing per input
which channels count. It predicts what the trial evaluated; loading it needs neither rtsearch nor
pickle. For the speed of the skip path, load deployed.pt itself (an artifact of the trial's run).
"""
from __future__ import annotations

import contextlib
import io
import tempfile

import torch

from rtsearch.methods.base import Method
from rtsearch.search import tracking

ALIAS_PREFIX = "best-"


def alias(budget_key: str) -> str:
    """best-<budget>, the budget's point as "_": MLflow aliases allow only letters, digits, "_" and "-"
    (budget 0.5 -> best-0_5)."""
    return ALIAS_PREFIX + budget_key.replace(".", "_")


def register_best(uri: str, experiment_id: str, parent_run_id: str, name: str, budget_key: str,
                  trial_run_id: str, method: Method) -> str:
    """Log the best trial's model (a run of `method`) to the parent run, register it as `name` and point the alias
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
        model = method.traceable(torch.load(fetch("deployed.pt"), weights_only=False))   # our own pickle
        example = torch.zeros(2, *model.input_shape)
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
