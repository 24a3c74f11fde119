"""The paper's trade-off pruner and gated layer (`--method paper`, docs/method.md "The published method").

Each prunable layer has two gates: a runtime gate u_r(x) = W pool(input) + b over all output channels, and a static
score u_s from a small network shared by all layers over four per-channel features (a learned scalar, the filter's
distance to the layer's other filters, its norm and a first-order Taylor term). Each agent's keep fraction picks a
top-k mask on its own gate; `resolve` merges the two masks as the paper's code does; the layer's output is
relu(z * u_r * u_s + beta) on the channels both merged masks keep (z the conv output normalised by BatchNorm without
its affine part, which the gate's bias and beta take over), and zero elsewhere.

The network is this project's `GatedNet` (its conv layers, so rtsearch.net.cost counts its MACs exactly): the runtime
gate is each `GatedConv`'s predictor, the learned scalar its `static_importance`; `PaperNet` holds what the paper
adds (the shared score network, beta, the three filter features).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from rtsearch.net.models import GatedNet, ResidualSegment
from rtsearch.net.pruning import EPS, keep_count, top_mask

MIN_KEEP = 0.1          # the paper clamps every keep fraction into [0.1, 1]
SCORE_HIDDEN = 100      # the shared static-score network: 4 -> 100 -> SELU -> 1
FOLD_IMAGES = 256       # training images the dense model's mean importance is folded from


def keep_mask(scores: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """(B, C) boolean: per row the ceil(fraction * C) highest scores (at least one channel)."""
    channels = scores.shape[-1]
    k = keep_count(1.0 - fraction.float(), channels)
    return top_mask(scores, k)


def resolve(runtime_keep: torch.Tensor, static_keep: torch.Tensor, runtime_gates: torch.Tensor,
            static_scores: torch.Tensor, dpratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's merge of the two top-k masks (its `resolve_overlap_mask`): channels both prune (overlap o, a
    share per input) stay pruned; of what one agent alone prunes, the runtime side keeps pruning a share `dpratio`,
    the static side 1 - dpratio. New keep fractions a_r' = 1 - (1 - a_r - o) dpratio - o and
    a_s' = 1 - (1 - a_s - o) (1 - dpratio) - o, each a top-k of its own gate outside the overlap.
    Their intersection holds dpratio k_r + (1 - dpratio) k_s channels (up to rounding) whatever the overlap: an
    input's cost depends on the two keep fractions alone. Returns (runtime keep, static keep, overlap), (B, C)
    boolean."""
    overlap = ~runtime_keep & ~static_keep
    o = overlap.float().mean(dim=-1)
    a_r = runtime_keep.float().mean(dim=-1)
    a_s = static_keep.float().mean(dim=-1)
    a_r = (1.0 - (1.0 - a_r - o) * dpratio - o).clamp(0.0, 1.0)
    a_s = (1.0 - (1.0 - a_s - o) * (1.0 - dpratio) - o).clamp(0.0, 1.0)
    low = torch.finfo(runtime_gates.dtype).min
    runtime = keep_mask(runtime_gates.detach().masked_fill(overlap, low), a_r)
    static = keep_mask(static_scores.detach().expand_as(runtime_gates).masked_fill(overlap, low), a_s)
    return runtime, static, overlap


def spread(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Min-max scaling of each row into [0, 1] over its kept channels (the paper's gates are signed, so `--method
    both`'s division by the maximum would not order them)."""
    lo = values.masked_fill(~keep, float("inf")).amin(dim=-1, keepdim=True)
    hi = values.masked_fill(~keep, float("-inf")).amax(dim=-1, keepdim=True)
    return (values - lo) / (hi - lo).clamp(min=EPS)


def nest(runtime_keep: torch.Tensor, static_keep: torch.Tensor, runtime_gates: torch.Tensor,
         static_scores: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`--paper-pruner nested`, `--method both`'s trade-off pruner on the paper's gates: the static keep set as the
    static agent picked it; inside it the runtime side keeps as many channels as its own mask holds (at most the whole
    set), the highest by lam spread(u_r) + (1 - lam) spread(u_s) over the set. The channels computed number
    min(k_r, k_s): at both agents' centres, the budget's width. Returns (runtime keep, static keep), (B, C) boolean,
    the first inside the second."""
    scores = static_scores.detach().expand_as(runtime_gates)
    combined = lam * spread(runtime_gates.detach(), static_keep) + (1.0 - lam) * spread(scores, static_keep)
    k = torch.minimum(runtime_keep.sum(dim=-1), static_keep.sum(dim=-1))
    runtime = top_mask(combined.masked_fill(~static_keep, torch.finfo(combined.dtype).min), k)
    return runtime, static_keep


def gate_product(runtime_gates: torch.Tensor, static_scores: torch.Tensor) -> torch.Tensor:
    """u_r * u_s, negative where both are (the paper's sign rule: two negative gates do not make a positive one)."""
    both_negative = (runtime_gates < 0) & (static_scores < 0)
    return torch.where(both_negative, -1.0, 1.0).detach() * runtime_gates * static_scores


class PaperNet(nn.Module):
    """A `GatedNet` run as the paper's gated network, with what the paper adds to it."""

    def __init__(self, net: GatedNet, pruner: str = "dpratio"):
        super().__init__()
        self.net = net
        self.pruner = pruner        # --paper-pruner: dpratio or nested (ranking by the dense model's lam, net.lam)
        self.score = nn.Sequential(nn.Linear(4, SCORE_HIDDEN), nn.SELU(), nn.Linear(SCORE_HIDDEN, 1))
        nn.init.constant_(self.score[-1].bias, 1.0)       # as the paper: static scores start near 1
        self.beta = nn.ParameterList([nn.Parameter(torch.zeros(g.out_channels)) for g in net.gates])
        for t, g in enumerate(net.gates):
            self.register_buffer(f"features_{t}", torch.zeros(3, g.out_channels))   # distance, norm, Taylor

    @property
    def num_layers(self) -> int:
        return self.net.num_layers

    def features(self, t: int) -> torch.Tensor:
        return getattr(self, f"features_{t}")

    def static_scores(self, t: int) -> torch.Tensor:
        """u_s of layer t, (C,): the shared network over (learned scalar, distance, norm, Taylor)."""
        gate = self.net.gates[t]
        inputs = torch.cat([gate.static_importance[None], self.features(t)], dim=0).T
        return self.score(inputs)[:, 0]

    @staticmethod
    def pooled(h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(2, 3))

    def runtime_gates(self, t: int, h: torch.Tensor) -> torch.Tensor:
        """u_r of layer t for its input h, (B, C): a linear map of the pooled input (no activation)."""
        return self.net.gates[t].predictor(self.pooled(h))

    def layer(self, t: int, h: torch.Tensor, keep_r: torch.Tensor, keep_s: torch.Tensor, dpratio: float,
              gates: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer t under keep fractions (B,) of both agents -> (output, channels computed (B, C) boolean)."""
        segment = self.net.segments[t]
        gate = segment.gate
        gates = self.runtime_gates(t, h) if gates is None else gates
        scores = self.static_scores(t)
        masks = keep_mask(gates.detach(), keep_r), keep_mask(scores.detach().expand_as(gates), keep_s)
        if getattr(self, "pruner", "dpratio") == "nested":      # a model pickled without the attribute: dpratio
            runtime, static = nest(*masks, gates, scores, self.net.lam)
        else:
            runtime, static, _ = resolve(*masks, gates, scores, dpratio)
        active = runtime & static
        scale = gate_product(gates, scores) * active
        z = gate.bn(gate.conv(h))
        y = F.relu(z * scale[:, :, None, None] + (self.beta[t] * active)[:, :, None, None])
        if isinstance(segment, ResidualSegment):
            y = F.relu(segment.bn2(segment.conv2(y)) + segment.shortcut(h))
        return y, active

    def forward(self, x: torch.Tensor, keep_r: torch.Tensor, keep_s: torch.Tensor, dpratio: float):
        """Logits and channels computed per layer (B, L) under fixed keep fractions, (B, L) or (L,) each."""
        h = self.net.stem(x)
        kept = []
        for t in range(self.num_layers):
            h, active = self.layer(t, h, _column(keep_r, t, len(x)), _column(keep_s, t, len(x)), dpratio)
            kept.append(active.sum(dim=1))
        return self.net.head(h), torch.stack(kept, dim=1)

    @torch.no_grad()
    def refresh_features(self, x: torch.Tensor, y: torch.Tensor, keep_r: float, keep_s: float, dpratio: float) -> None:
        """The static score's three filter features, each scaled to unit norm within its layer: the filter's
        summed distance to the layer's other filters, its norm, and (w * dCE/dw)^2 summed over the filter on one
        batch (the paper's `update_taylor_first`). The batch runs at keep fractions `keep_r`, `keep_s` on every layer
        (the run's width budgets: the widths its backbone is trained at), so a filter no input computes has a Taylor
        term of 0. All channels at once would be a network never trained at that width, whose activations can
        overflow."""
        with torch.enable_grad():
            self.net.zero_grad()
            logits, _ = self(x, torch.full((self.num_layers,), keep_r), torch.full((self.num_layers,), keep_s),
                             dpratio)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the network's loss is {float(loss)} at its width budgets")
            loss.backward()
        for t, gate in enumerate(self.net.gates):
            w = gate.conv.weight.detach()
            flat = w.flatten(1)
            grad = gate.conv.weight.grad
            taylor = (w * grad / len(x)).pow(2).flatten(1).sum(1) if grad is not None else torch.zeros(len(flat))
            rows = [torch.cdist(flat, flat).sum(1), flat.norm(dim=1), taylor]
            self.features(t).copy_(torch.stack([r / (r.norm() + 1e-3) for r in rows]))
        self.net.zero_grad()


def _column(keep: torch.Tensor, t: int, batch: int) -> torch.Tensor:
    keep = torch.as_tensor(keep, dtype=torch.float32)
    return (keep[:, t] if keep.dim() == 2 else keep[t].expand(batch))


@torch.no_grad()
def from_dense(net: GatedNet, x: torch.Tensor, pruner: str = "dpratio") -> PaperNet:
    """The paper's gated network from this project's dense model, computing (nearly) the same function: BatchNorm's
    affine part moves into the gate (bias = BN weight) and beta (= BN bias), each scaled by the dense model's mean
    importance on `x` (its channels were scaled by it), and the gate's weights start small."""
    net.eval()
    h = net.stem(x[:FOLD_IMAGES])
    means = []
    for segment in net.segments:
        gate = segment.gate
        keep = torch.ones(gate.out_channels, dtype=torch.bool, device=h.device)
        runtime = gate.runtime_importance(h)
        means.append(gate.combined_score(runtime, keep, net.lam).mean(0))
        h, _ = segment(h, keep, torch.zeros(len(h), device=h.device), net.lam, runtime)
    paper = PaperNet(net, pruner).to(x.device)
    for t, (gate, mean) in enumerate(zip(net.gates, means)):
        gate.predictor.weight.normal_(0.0, 0.01)
        gate.predictor.bias.copy_(gate.bn.weight * mean)
        paper.beta[t].copy_(gate.bn.bias * mean)
        gate.bn.weight.fill_(1.0)
        gate.bn.bias.fill_(0.0)
        gate.bn.weight.requires_grad_(False)
        gate.bn.bias.requires_grad_(False)
        gate.static_importance.zero_()          # the paper's learned scalar starts at 0
    return paper
