"""The inference path that skips pruned work (`SkipNet`), next to the masked reference it must equal.

Training and evaluation run the masked network (`GatedNet`): every conv computes all its channels and
the gate then zeroes the pruned ones, so the MACs count falls but the clock does not. `SkipNet` is the
deployable twin of a gated network under static ratios:

- static channels are physically gone (the Torch-Pruning surgery of `export.prune_static`);
- every BatchNorm is folded into the conv before it (eval mode), and where the gate's scale does not
  depend on the input (lam = 0) that scale is folded in too, since relu(z) * u = relu(u z) for u >= 0;
- each layer's output channels are reordered by static importance, so that at lam = 0 the runtime keep
  set (the top channels by static importance) is a prefix: the kept filters are a slice of the weight
  tensor, with no gather. At lam > 0 the keep set depends on the input and is gathered;
- at each layer only the kept filters are computed, and the next layer reads only those channels.

One input runs at a time on the skip path (the keep set is per input); `forward` loops over a batch.
A runtime policy is a callable `(t, importance (1, C_t), kept) -> ratio (a float32 number)`, where `kept` lists
the channels computed at the layers before t (a policy with `observes_importance = False` gets None for the importance,
which then is not computed at lam = 0); no policy means runtime ratio 0 everywhere.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
import torch.nn.functional as F

from rtsearch.net.surgery import prune_static
from rtsearch.net.models import GatedNet, ResidualSegment
from rtsearch.net.pruning import EPS, keep_count_of

FastPolicy = Callable[[int, torch.Tensor, list], torch.Tensor]


def fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv (no bias) then eval-mode BN -> one conv weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


def columns(weight: torch.Tensor, idx) -> torch.Tensor:
    """The input columns (dim 1) a keep set names: None all, an int n the first n (a slice, no copy),
    an index tensor a gather."""
    if idx is None:
        return weight
    return weight[:, :idx] if isinstance(idx, int) else weight.index_select(1, idx)


class SkipLayer(nn.Module):
    """One prunable layer (and, in a residual block, the rest of the block) on the skip path.

    Tensors are stored with output channels in static-importance order; `in_order` is the order in
    which this layer's input channels arrive (the previous gate's order in a plain net, all channels
    in order in a residual stream)."""

    def __init__(self, segment, lam: float, in_order: Optional[torch.Tensor]):
        super().__init__()
        gate = segment.gate
        self.lam = float(lam)
        static = gate.static_scores().detach()
        order = static.argsort(descending=True, stable=True)   # ties as pruning.top_mask breaks them
        self.register_buffer("order", order)
        weight, bias = fold_bn(gate.conv.weight.detach(), gate.bn)
        static_norm = static / (static.max() + EPS)
        if self.lam == 0.0:          # the gate's scale is a per-channel constant: fold it
            weight, bias = weight * static_norm[:, None, None, None], bias * static_norm
        cols = in_order if in_order is not None else slice(None)
        self.weight = nn.Parameter(weight[order][:, cols].contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias[order].contiguous(), requires_grad=False)
        self.register_buffer("static_part", (1.0 - self.lam) * static_norm[order])
        self.stride, self.padding = gate.conv.stride, gate.conv.padding
        self.predictor = None
        if gate.predictor is not None:
            self.predictor = nn.Linear(gate.predictor.in_features, gate.predictor.out_features)
            self.predictor.weight.data = gate.predictor.weight.detach()[order][:, cols].contiguous()
            self.predictor.bias.data = gate.predictor.bias.detach()[order].contiguous()
            self.predictor.requires_grad_(False)
        self.residual = isinstance(segment, ResidualSegment)
        if self.residual:
            w2, b2 = fold_bn(segment.conv2.weight.detach(), segment.bn2)
            self.weight2 = nn.Parameter(w2[:, order].contiguous(), requires_grad=False)
            self.bias2 = nn.Parameter(b2, requires_grad=False)
            self.shortcut_weight = self.shortcut_bias = None
            if len(segment.shortcut):
                ws, bs = fold_bn(segment.shortcut[0].weight.detach(), segment.shortcut[1])
                self.shortcut_weight = nn.Parameter(ws, requires_grad=False)
                self.shortcut_bias = nn.Parameter(bs, requires_grad=False)
                self.shortcut_stride = segment.shortcut[0].stride

    @property
    def width(self) -> int:
        return self.weight.shape[0]

    def importance(self, h: torch.Tensor, in_idx) -> torch.Tensor:
        """r_t(x), (B, C) in this layer's channel order; zeros without a predictor."""
        if self.predictor is None:
            return h.new_zeros(h.shape[0], self.width)
        return F.relu(F.linear(h.mean(dim=(2, 3)), columns(self.predictor.weight, in_idx), self.predictor.bias))

    def forward(self, h: torch.Tensor, in_idx, k: int, runtime: Optional[torch.Tensor]):
        """Compute the k kept channels. `in_idx` says which of this layer's input channels h holds
        (None: all; an int n: the first n; else an index tensor). Below the full width the keep
        set may be the input's own, so h is then one input (batch of 1)."""
        if self.lam == 0.0:
            idx = None if k == self.width else k            # the keep set is the first k channels
            weight, bias = self.weight[:k], self.bias[:k]
        else:
            score = self.lam * runtime / (runtime.amax(dim=1, keepdim=True) + EPS) + self.static_part
            idx = None
            if k < self.width:
                idx = score[0].argsort(descending=True, stable=True)[:k]
                score = score[:, idx]
            weight, bias = self.weight, self.bias
            if idx is not None:
                weight, bias = weight.index_select(0, idx), bias.index_select(0, idx)
        if not self.residual:
            weight = columns(weight, in_idx)
        y = F.conv2d(h, weight, bias, self.stride, self.padding).relu_()
        if self.lam != 0.0:
            y = y.mul_(score[:, :, None, None])
        if not self.residual:
            return y, idx
        out = F.conv2d(y, columns(self.weight2, idx), self.bias2, 1, 1)
        skip = h if self.shortcut_weight is None else F.conv2d(h, self.shortcut_weight, self.shortcut_bias,
                                                                self.shortcut_stride)
        return out.add_(skip).relu_(), None


class SkipNet(nn.Module):
    """Deployable network: static channels removed, runtime-pruned channels never computed."""

    def __init__(self, net: GatedNet, static_ratios=None, channels_last: bool = True):
        super().__init__()
        net = prune_static(net, static_ratios if static_ratios is not None else [0.0] * net.num_layers).eval()
        self.name, self.widths, self.lam = net.name, list(net.widths), float(net.lam)
        self.stem = _folded_stem(net.stem)
        layers, in_order = [], None
        for segment in net.segments:
            layer = SkipLayer(segment, net.lam, in_order)
            layers.append(layer)
            in_order = None if layer.residual else layer.order
        self.layers = nn.ModuleList(layers)
        fc = net.head.fc
        cols = in_order if in_order is not None else slice(None)
        self.fc_weight = nn.Parameter(fc.weight.detach()[:, cols].contiguous(), requires_grad=False)
        self.fc_bias = nn.Parameter(fc.bias.detach().clone(), requires_grad=False)
        self.plain_head = in_order is not None
        # NHWC: oneDNN's convolutions, the narrow ones above all, run faster on it (bench --latency)
        self.channels_last = channels_last      # a flag, not torch.channels_last: torch.save cannot pickle that
        self.to(memory_format=self.memory_format)
        self.eval()

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def run(self, x: torch.Tensor, policy: Optional[FastPolicy] = None) -> tuple[torch.Tensor, list]:
        """Logits and the channels computed per layer. With a policy x is one input (1, C, H, W);
        without one (runtime ratio 0) any batch runs at once."""
        observe = policy is not None and getattr(policy, "observes_importance", True)
        h, in_idx, kept = self.stem(x.contiguous(memory_format=self.memory_format)), None, []
        for t, layer in enumerate(self.layers):
            runtime = layer.importance(h, in_idx) if layer.lam != 0.0 or observe else None
            k = layer.width
            if policy is not None:
                k = keep_count_of(float(policy(t, runtime, kept)), layer.width)
            h, in_idx = layer(h, in_idx, k, runtime)
            kept.append(k)
        pooled = h.mean(dim=(2, 3))
        w = columns(self.fc_weight, in_idx) if self.plain_head else self.fc_weight
        return F.linear(pooled, w, self.fc_bias), kept

    @torch.no_grad()
    def forward(self, x: torch.Tensor, policy: Optional[FastPolicy] = None) -> torch.Tensor:
        """Logits of a batch: at once without a policy, else one input at a time on the skip path."""
        if policy is None:
            return self.run(x)[0]
        return torch.cat([self.run(x[i:i + 1], policy)[0] for i in range(x.shape[0])])


def _folded_stem(stem: nn.Module) -> nn.Module:
    """The stem with its BatchNorm folded into its conv (an Identity stays an Identity)."""
    if isinstance(stem, nn.Identity):
        return stem
    conv, bn, *rest = list(stem)
    weight, bias = fold_bn(conv.weight.detach(), bn)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    folded.weight.data, folded.bias.data = weight, bias
    return nn.Sequential(folded, *rest).requires_grad_(False)
