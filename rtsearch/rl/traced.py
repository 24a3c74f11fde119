"""The deployed model in masked form, for the MLflow Model Registry.

MLflow 3 stores a PyTorch model as a torch.export program (pt2) and loads pickled ones only where
MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set. The skip path (rtsearch.rl.deployed.DeployedModel) changes
tensor shapes with each input's keep counts, which a traced program cannot; `TraceableModel` keeps every
shape fixed instead: the statically pruned channels are removed, every remaining channel is computed,
and the runtime policy's choices are applied per input as masks, as the run's evaluation applied them.
Same predictions as deployed.pt (to float rounding), not its speed. A ladder run's deployed model
(rtsearch.rl.ladder.LadderModel) re-runs some inputs on a dearer rung; `TraceableLadder` runs every input on every
rung it keeps and lets the policy's choice select the answer.
"""
from __future__ import annotations

import torch

from rtsearch.rl.deployed import DeployedModel, DeployedPolicy, FixedRatios, masked_forward
from rtsearch.rl.ladder import LadderModel
from rtsearch.rl.rerun import features


def traceable(model: torch.nn.Module) -> torch.nn.Module:
    """The fixed-shape form of a run's deployed.pt, whichever kind of run wrote it."""
    return TraceableLadder(model) if isinstance(model, LadderModel) else TraceableModel(model)


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


class TraceableLadder(torch.nn.Module):
    """forward(x) -> log-probabilities (B, classes), as LadderModel answers, with fixed shapes: every input runs on
    every rung the ladder keeps, and the policy's choice per input picks which answer counts."""

    def __init__(self, model: LadderModel):
        super().__init__()
        self.rungs = torch.nn.ModuleList([TraceableModel(rung) for rung in model.rungs])
        self.actor, self.shift, self.input_shape = model.actor, model.shift, model.rungs[0].input_shape
        self.register_buffer("actions", torch.tensor(model.actions, dtype=torch.long))
        self.register_buffer("extra", model.extra.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        answers = torch.stack([torch.log_softmax(rung(x), 1) for rung in self.rungs])      # (rungs, B, classes)
        logits = self.actor(features(answers[0])).index_select(1, self.actions) - self.shift * self.extra
        choice = logits.argmax(1).view(1, -1, 1).expand(1, *answers.shape[1:])
        return answers.gather(0, choice)[0]
