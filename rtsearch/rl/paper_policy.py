"""Greedy use of the paper's two agents, and the deployed model of a `--method paper` run.

The runtime agent's deterministic action (the Gaussian's mean) at each layer, observing exactly as
`PaperVectorEnv` does, its LSTM state carried across the layers of one input; the static agent's deterministic
keep fractions, one per layer (its observation does not depend on the input). `PaperModel` is the two together with
the network: forward(x) -> logits, and `run(x)` -> (logits, channels computed per layer), what its MACs are counted
from (rtsearch.net.cost: every gate computed, each conv on the channels both masks keep).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rtsearch.data import batches
from rtsearch.net.cost import CostModel, summarize
from rtsearch.net.tradeoff import PaperNet
from rtsearch.rl import paper_reward
from rtsearch.rl.paper_env import Layout, layer_inputs, static_observation
from rtsearch.rl.policies import deterministic_actions


def static_keep(module, inputs: list[int], outputs: list[int], width: float) -> list[float]:
    """The static agent's greedy keep fraction of each layer."""
    keep, state = [], None
    for t in range(len(outputs)):
        out, state = deterministic_actions(module, static_observation(inputs, outputs, t, 1), -1.0, 1.0, state)
        keep.append(float(paper_reward.keep_fraction(width, out.reshape(-1)[:1])[0]))
    return keep


def greedy_forward(paper: PaperNet, module, layout: Layout, x: torch.Tensor, keep_s: list[float], width: float,
                   dpratio: float, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and channels computed per layer (B, L) under both agents' greedy actions (gradients flow into the
    network where enabled, never into the agents). `shift` moves the runtime keep's centre (width + shift + the
    decoder's output) without changing what the agent observes: 0 is the paper's."""
    h = paper.net.stem(x)
    state, kept = None, []
    for t in range(paper.num_layers):
        gates = paper.runtime_gates(t, h)
        obs = layout.observe(t, paper.pooled(h), gates, width, len(x))
        out, state = deterministic_actions(module, obs, -1.0, 1.0, state)
        keep_r = torch.from_numpy(paper_reward.keep_fraction(width + shift, out.reshape(len(x), -1)[:, 0])).float()
        h, active = paper.layer(t, h, keep_r.to(h.device), torch.full((len(x),), keep_s[t], device=h.device),
                                dpratio, gates)
        kept.append(active.sum(dim=1))
    return paper.net.head(h), torch.stack(kept, dim=1)


@torch.no_grad()
def evaluate(model: "PaperModel", x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> dict:
    """Accuracy and per-input MACs ratios (mean, p95, spread) of the greedy model on a split."""
    model.eval()
    correct, macs, confidence = [], [], []
    for xb, yb in batches(x, y, batch_size, shuffle=False):
        logits, kept = model.counts(xb)
        correct.append((logits.argmax(1) == yb).cpu())
        macs.append(model.cost.macs_ratio(kept, model.cost.widths))
        confidence.append(F.softmax(logits, 1).amax(1).cpu())
    correct, macs = torch.cat(correct), torch.cat(macs)
    return {"accuracy": float(correct.float().mean()), **summarize(macs),
            "per_input": {"correct": correct, "macs_ratio": macs, "confidence": torch.cat(confidence)}}


class PaperModel(torch.nn.Module):
    """A paper run's deployed model as one picklable module: the gated network, the runtime agent's RLModule
    (recurrent: it has no fixed-shape form), the static agent's keep fractions, the width budget and dpratio.
    Every channel is stored (the static mask depends on the input through the overlap rule, see docs/method.md)."""

    def __init__(self, paper: PaperNet, module, keep_s: list[float], width: float, dpratio: float,
                 observation: str):
        super().__init__()
        self.paper = paper.eval()
        self.module = module
        self.keep_s, self.width, self.dpratio = [float(k) for k in keep_s], float(width), float(dpratio)
        self.cost = CostModel(paper.net, predictors=True)
        self.widths = [int(w) for w in self.cost.widths]
        self.layout = Layout(layer_inputs(paper.net), self.widths, observation)
        self.input_shape = tuple(paper.net.input_shape)
        self.policy = None      # the agents are part of the model
        self.shift = 0.0        # added to the runtime keep's centre (experiments.paper_calibrated); 0: the paper's

    @property
    def skip(self) -> "PaperModel":
        """What the run's checks call the deployed path: this model (it computes masked, counts exactly)."""
        return self

    def counts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, channels computed per input and layer (B, L))."""
        with torch.no_grad():
            return greedy_forward(self.paper, self.module, self.layout, x, self.keep_s, self.width, self.dpratio,
                                  getattr(self, "shift", 0.0))     # models saved before it had one: 0

    def run(self, x: torch.Tensor, policy=None) -> tuple[torch.Tensor, list[int]]:
        """One input, as the deployed-model checks call it: (logits, its channels computed per layer)."""
        logits, kept = self.counts(x[:1])
        return logits, [int(k) for k in kept[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.counts(x)[0]

    def compiled(self):
        """None: a recurrent agent has no TorchScript form here."""
        return None

    def static_params_ratio(self) -> float:
        """The parameters the static keep fractions alone would store (ceil(a_s C) channels per layer), as a
        ratio of the dense model's: the paper's storage figure, before the overlap rule moves channels back."""
        return float(paper_reward.params_ratio(self.cost, torch.tensor([self.keep_s]))[0])
