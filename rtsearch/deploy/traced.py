"""The deployed model in masked form, for the MLflow Model Registry.

MLflow 3 stores a PyTorch model as a torch.export program (pt2) and loads pickled ones only where
MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set. The skip path (rtsearch.deploy.deployed.DeployedModel) changes
tensor shapes with each input's keep counts, which a traced program cannot; `TraceableModel` keeps every
shape fixed instead: the statically pruned channels are removed, every remaining channel is computed,
and the runtime policy's choices are applied per input as masks, as the run's evaluation applied them.
Same predictions as deployed.pt (to float rounding), not its speed. A ladder run's fixed-shape form is
rtsearch.methods.ladder.TraceableLadder.
"""
from __future__ import annotations

import torch

from rtsearch.deploy.deployed import DeployedModel, DeployedPolicy, FixedRatios, masked_forward


class TraceableModel(torch.nn.Module):
    """forward(x) -> logits (B, classes) with fixed shapes; a feed-forward runtime agent runs batched."""

    def __init__(self, model: DeployedModel):
        super().__init__()
        policy = model.policy
        if isinstance(policy, DeployedPolicy) and policy.lean is None:
            raise ValueError("an LSTM runtime agent has no traceable form; load deployed.pt with torch.load")
        if not (policy is None or isinstance(policy, (DeployedPolicy, FixedRatios))):
            raise ValueError(f"no traceable form for a {type(policy).__name__} runtime policy")
        self.net, self.policy, self.input_shape = model.masked, policy, model.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_forward(self.net, self.policy, x)
