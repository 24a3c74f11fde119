"""Channel importance and the trade-off pruner (docs/method.md §1).

A `GatedConv` is conv -> BN -> ReLU whose output channels are scaled by the combined
importance u_t(x) on a keep set and zeroed elsewhere. The keep sets come from two ratios:
the static one (same for every input, removed for good at export) and the runtime one
(per input, chosen among the statically kept channels).
"""
from __future__ import annotations


import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

EPS = 1e-8


def keep_count(ratio: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """ceil((1 - ratio) * total), at least one channel (docs/method.md §1)."""
    total = torch.as_tensor(total, dtype=torch.float32, device=ratio.device)
    kept = torch.ceil((1.0 - ratio.float()) * total - 1e-6)
    return kept.clamp(min=1).clamp(max=total).long()


def keep_count_of(ratio: float, total: int) -> int:
    """keep_count for one ratio as a plain int, in the same float32 arithmetic (no tensor ops: the
    skip path asks for one count per layer and input)."""
    one = np.float32(1.0)
    kept = np.ceil((one - np.float32(ratio)) * np.float32(total) - np.float32(1e-6))
    return int(min(max(kept, 1), total))


def top_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the k highest scores per row; k is a scalar or one count per row."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = order.argsort(dim=-1)
    k = torch.as_tensor(k, device=scores.device)
    return ranks < k.unsqueeze(-1) if k.dim() == 1 else ranks < k


def normalise(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Scale non-negative importances to [0, 1] within a layer, over the kept channels only.

    Dividing by the maximum (instead of min-max scaling) keeps the weakest kept channel alive,
    and using only kept channels makes a storage-reduced model compute the same numbers.
    """
    values = values * keep
    return values / (values.amax(dim=-1, keepdim=True) + EPS)


class GatedConv(nn.Module):
    """A prunable conv layer with static importance s_t and a runtime importance predictor r_t(x)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 predictor: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        # Static importance, kept non-negative by taking its absolute value.
        self.static_importance = nn.Parameter(torch.ones(out_channels))
        # Runtime importance predictor: global average pool -> linear C_in -> C_out -> ReLU.
        # A static-only model (lam = 0) has no use for it and is built without.
        self.predictor = nn.Linear(in_channels, out_channels) if predictor else None
        if predictor:
            nn.init.constant_(self.predictor.bias, 1.0)
            nn.init.normal_(self.predictor.weight, std=0.01)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def static_scores(self) -> torch.Tensor:
        return self.static_importance.abs()

    def static_keep(self, ratio: torch.Tensor | float) -> torch.Tensor:
        """Boolean (C,) mask of the top ceil((1 - p_s) C) channels by static importance."""
        ratio = torch.as_tensor(ratio, dtype=torch.float32, device=self.static_importance.device)
        return top_mask(self.static_scores().detach(), keep_count(ratio, self.out_channels))

    def runtime_importance(self, x: torch.Tensor) -> torch.Tensor:
        """r_t(x) >= 0, shape (B, C_out); zero without a predictor."""
        if self.predictor is None:
            return x.new_zeros(x.shape[0], self.out_channels)
        return F.relu(self.predictor(x.mean(dim=(2, 3))))

    def combined_score(self, runtime: torch.Tensor, static_keep: torch.Tensor, lam: float) -> torch.Tensor:
        """u_t(x) = lam norm(r) + (1 - lam) norm(s), zero off the static keep set."""
        keep = static_keep.to(runtime.dtype)
        return lam * normalise(runtime, keep) + (1.0 - lam) * normalise(self.static_scores(), keep)

    def runtime_keep(self, score: torch.Tensor, static_keep: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """Boolean (B, C) mask: top ceil((1 - p_r) |static keep|) channels of the static keep set by u."""
        k = keep_count(ratio, static_keep.sum())
        masked = score.detach().masked_fill(~static_keep, -1.0)
        return top_mask(masked, k)

    def forward(self, x: torch.Tensor, static_keep: torch.Tensor, runtime_ratio: torch.Tensor,
                lam: float, runtime: torch.Tensor | None = None):
        """Returns (output, runtime keep mask). `runtime` may be passed if already computed."""
        if runtime is None:
            runtime = self.runtime_importance(x)
        score = self.combined_score(runtime, static_keep, lam)
        keep = self.runtime_keep(score, static_keep, runtime_ratio)
        y = F.relu(self.bn(self.conv(x)))
        return y * (score * keep)[:, :, None, None], keep


def uniform_ratio(value: float, layers: int) -> torch.Tensor:
    return torch.full((layers,), float(value))

