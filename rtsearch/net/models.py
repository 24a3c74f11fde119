"""Backbones built from prunable gated conv blocks (docs/method.md §1).

Every backbone is stem -> segments -> head, where each segment holds exactly one prunable
`GatedConv`. That lets an agent walk the network one prunable layer at a time (`GatedNet.walk`)
while fixed ratios drive the very same code through `forward`.

Each Conv2d, Linear and BatchNorm2d carries `rt_in` / `rt_out` tags saying which keep set governs
its input and output channels: None (all channels), ("runtime", t) or ("static", t). cost.py and
export.py read these tags instead of knowing each architecture.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from rtsearch.net.pruning import GatedConv

MODELS = ("small", "mcifarnet", "resnet20", "resnet56", "resnet18")


def tag(module: nn.Module, rt_in=None, rt_out=None) -> nn.Module:
    module.rt_in, module.rt_out = rt_in, rt_out
    return module


def tag_gate(gate: GatedConv, t: int, rt_in) -> GatedConv:
    tag(gate.conv, rt_in, ("runtime", t))
    tag(gate.bn, None, ("static", t))
    if gate.predictor is not None:
        tag(gate.predictor, rt_in, ("static", t)).is_predictor = True
    tag(gate, None, ("static", t))  # its static importance vector
    gate.rt_index = t
    return gate


class PlainSegment(nn.Module):
    """One gated conv; its (runtime-gated) output feeds the next prunable layer directly."""

    def __init__(self, gate: GatedConv):
        super().__init__()
        self.gate = gate

    def forward(self, h, static_keep, ratio, lam, runtime):
        return self.gate(h, static_keep, ratio, lam, runtime)


class ResidualSegment(nn.Module):
    """A basic residual block: only the inner conv is prunable, so block shapes stay compatible."""

    def __init__(self, gate: GatedConv, t: int, planes: int, in_planes: int, stride: int):
        super().__init__()
        self.gate = gate
        self.conv2 = tag(nn.Conv2d(gate.out_channels, planes, 3, 1, 1, bias=False), ("runtime", t), None)
        self.bn2 = tag(nn.BatchNorm2d(planes))
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(tag(nn.Conv2d(in_planes, planes, 1, stride, bias=False)),
                                          tag(nn.BatchNorm2d(planes)))

    def forward(self, h, static_keep, ratio, lam, runtime):
        y, keep = self.gate(h, static_keep, ratio, lam, runtime)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(h)), keep


class Head(nn.Module):
    def __init__(self, channels: int, num_classes: int, rt_in):
        super().__init__()
        self.fc = tag(nn.Linear(channels, num_classes), rt_in, None)

    def forward(self, h):
        return self.fc(h.mean(dim=(2, 3)))


class Walk:
    """One batch walking the prunable layers: observe `importance()`, then `step(ratios)`."""

    def __init__(self, net: "GatedNet", x: torch.Tensor, static_ratios: torch.Tensor):
        self.net = net
        self.h = net.stem(x)
        self.t = 0
        self.static_keeps = [g.static_keep(static_ratios[i]) for i, g in enumerate(net.gates)]
        self.kept: list[torch.Tensor] = []
        self._runtime = None

    @property
    def done(self) -> bool:
        return self.t >= self.net.num_layers

    def importance(self) -> torch.Tensor:
        """Runtime importance r_t(x) of the current layer on its static keep set, (B, C_t)."""
        if self._runtime is None:
            self._runtime = self.net.gates[self.t].runtime_importance(self.h)
        return self._runtime * self.static_keeps[self.t]

    def step(self, runtime_ratio: torch.Tensor) -> None:
        """Run the current segment with one runtime pruning ratio per input."""
        runtime = self._runtime if self._runtime is not None else None
        segment = self.net.segments[self.t]
        ratio = torch.as_tensor(runtime_ratio, dtype=torch.float32, device=self.h.device)
        ratio = ratio.expand(self.h.shape[0])
        self.h, keep = segment(self.h, self.static_keeps[self.t], ratio, self.net.lam, runtime)
        self.kept.append(keep.sum(dim=1))
        self.t += 1
        self._runtime = None

    def logits(self) -> torch.Tensor:
        assert self.done, "walk the remaining layers first"
        return self.net.head(self.h)

    @property
    def runtime_kept(self) -> torch.Tensor:
        """Channels computed per input and layer, (B, L)."""
        return torch.stack(self.kept, dim=1)

    @property
    def static_kept(self) -> torch.Tensor:
        return torch.stack([k.sum() for k in self.static_keeps])


class GatedNet(nn.Module):
    def __init__(self, name: str, stem: nn.Module, segments: list[nn.Module], head: nn.Module,
                 input_shape: tuple[int, int, int], widths: list[int]):
        super().__init__()
        self.name, self.input_shape, self.widths = name, tuple(input_shape), list(widths)
        self.stem, self.segments, self.head = stem, nn.ModuleList(segments), head
        self.lam = 0.5  # trade-off coefficient, a searched hyperparameter

    @property
    def gates(self) -> list[GatedConv]:
        return [s.gate for s in self.segments]

    @property
    def num_layers(self) -> int:
        return len(self.segments)

    def walk(self, x: torch.Tensor, static_ratios: torch.Tensor | None = None) -> Walk:
        if static_ratios is None:
            static_ratios = torch.zeros(self.num_layers)
        return Walk(self, x, torch.as_tensor(static_ratios, dtype=torch.float32))

    def forward_walk(self, x, static_ratios=None, runtime_ratios=None) -> tuple[torch.Tensor, Walk]:
        """Forward under fixed ratios; runtime_ratios is (L,) or (B, L). Returns (logits, walk)."""
        walk = self.walk(x, static_ratios)
        if runtime_ratios is None:
            runtime_ratios = torch.zeros(self.num_layers)
        runtime_ratios = torch.as_tensor(runtime_ratios, dtype=torch.float32)
        for t in range(self.num_layers):
            walk.step(runtime_ratios[..., t])
        return walk.logits(), walk

    def forward(self, x, static_ratios=None, runtime_ratios=None) -> torch.Tensor:
        return self.forward_walk(x, static_ratios, runtime_ratios)[0]

    def config(self) -> dict:
        """What `build_model` needs to rebuild this architecture (at its current widths)."""
        return {"name": self.name, "input_shape": list(self.input_shape), "widths": self.widths,
                "num_classes": self.head.fc.out_features, "lam": self.lam,
                "predictors": self.gates[0].predictor is not None}


def _plain(name, input_shape, num_classes, widths, strides, predictors):
    in_ch, segments = input_shape[0], []
    for t, (w, s) in enumerate(zip(widths, strides)):
        rt_in = ("runtime", t - 1) if t else None
        segments.append(PlainSegment(tag_gate(GatedConv(in_ch, w, 3, s, predictors), t, rt_in)))
        in_ch = w
    head = Head(in_ch, num_classes, ("runtime", len(widths) - 1))
    return GatedNet(name, nn.Identity(), segments, head, input_shape, widths)


def _resnet(name, input_shape, num_classes, widths, stage_planes, blocks_per_stage, imagenet_stem, predictors):
    if imagenet_stem:
        stem = nn.Sequential(tag(nn.Conv2d(input_shape[0], stage_planes[0], 7, 2, 3, bias=False)),
                             tag(nn.BatchNorm2d(stage_planes[0])), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    else:
        stem = nn.Sequential(tag(nn.Conv2d(input_shape[0], stage_planes[0], 3, 1, 1, bias=False)),
                             tag(nn.BatchNorm2d(stage_planes[0])), nn.ReLU())
    segments, in_planes, t = [], stage_planes[0], 0
    for stage, planes in enumerate(stage_planes):
        for b in range(blocks_per_stage):
            stride = 2 if stage > 0 and b == 0 else 1
            gate = tag_gate(GatedConv(in_planes, widths[t], 3, stride, predictors), t, None)
            segments.append(ResidualSegment(gate, t, planes, in_planes, stride))
            in_planes, t = planes, t + 1
    return GatedNet(name, stem, segments, Head(in_planes, num_classes, None), input_shape, widths)


def build_model(name: str, input_shape=(1, 28, 28), num_classes: int = 10, widths=None, lam: float = 0.5,
                predictors: bool = True) -> GatedNet:
    """Build a backbone by name; `widths` (one per prunable layer) rebuilds a storage-reduced model,
    `predictors=False` a static-only one without runtime importance predictors."""
    if name == "small":
        default, strides = [16, 32, 32, 64, 64], [1, 2, 1, 2, 1]
        net = _plain(name, input_shape, num_classes, widths or default, strides, predictors)
    elif name == "mcifarnet":
        default, strides = [64, 64, 128, 128, 128, 192, 192, 192], [1, 1, 2, 1, 1, 2, 1, 1]
        net = _plain(name, input_shape, num_classes, widths or default, strides, predictors)
    elif name in ("resnet20", "resnet56"):
        n = 3 if name == "resnet20" else 9
        default = [p for p in (16, 32, 64) for _ in range(n)]
        net = _resnet(name, input_shape, num_classes, widths or default, (16, 32, 64), n, False, predictors)
    elif name == "resnet18":
        default = [p for p in (64, 128, 256, 512) for _ in range(2)]
        net = _resnet(name, input_shape, num_classes, widths or default, (64, 128, 256, 512), 2, True, predictors)
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    net.lam = lam
    return net


def probe(net: "GatedNet", hooks) -> None:
    """One forward of a zero input in eval mode, to let `hooks` trace shapes and costs; removes them."""
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, *net.input_shape, device=next(net.parameters()).device))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
