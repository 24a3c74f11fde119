"""MACs, parameter and byte accounting exactly as docs/method.md §2 "Definitions".

The table is built once per architecture by tracing one dense forward: every Conv2d and Linear
contributes k_in(x) * k_out(x) * (kh * kw * H_out * W_out / groups), where k_in and k_out are the
channel counts of the keep sets its `rt_in` / `rt_out` tags name (all channels when untagged).
Parameters scale the same way with the static keep sets, so a storage-reduced model's parameter
count is known without building it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rtsearch.net.models import GatedNet, probe


@dataclass(frozen=True)
class Term:
    in_ref: tuple | None
    out_ref: tuple | None
    in_full: int
    out_full: int
    factor: int  # kh * kw * H_out * W_out / groups; 1 for a linear layer
    predictor: bool = False


def _count(ref, full, runtime_kept, static_kept):
    """Channels a tag refers to: (B,) runtime counts, a static count, or `full`."""
    if ref is None:
        return full
    kind, t = ref
    return runtime_kept[:, t] if kind == "runtime" else static_kept[t]


class CostModel:
    """Per-input MACs and stored parameters of one architecture under keep sets.

    `predictors=False` accounts a static-only model, which drops the runtime importance
    predictors; the dense reference (the denominators of both ratios) always includes them.
    """

    def __init__(self, net: GatedNet, predictors: bool = True):
        self.terms: list[Term] = []
        hooks = [m.register_forward_hook(self._record) for m in net.modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear))]
        probe(net, hooks)
        self.num_layers = net.num_layers
        self.widths = torch.tensor([g.out_channels for g in net.gates])
        self.dense_params = sum(p.numel() for p in net.parameters())
        self.dense_macs = int(self.macs(self.widths[None, :], self.widths)[0])
        self._param_terms = [(p.numel(), getattr(m, "rt_in", None), getattr(m, "rt_out", None), name.endswith("weight"))
                             for m in net.modules() if predictors or not getattr(m, "is_predictor", False)
                             for name, p in m.named_parameters(recurse=False)]
        if not predictors:
            self.terms = [term for term in self.terms if not term.predictor]

    def _record(self, module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            factor = kh * kw * output.shape[2] * output.shape[3] // module.groups
            full_in, full_out = module.in_channels, module.out_channels
        else:
            factor, full_in, full_out = 1, module.in_features, module.out_features
        self.terms.append(Term(getattr(module, "rt_in", None), getattr(module, "rt_out", None), full_in, full_out,
                               factor, getattr(module, "is_predictor", False)))

    def macs(self, runtime_kept: torch.Tensor, static_kept: torch.Tensor) -> torch.Tensor:
        """MACs per input, (B,), given channels computed per input and layer (B, L) and static counts (L,)."""
        runtime_kept = runtime_kept.detach().cpu().double()   # counts: a few numbers, summed on the CPU
        static_kept = static_kept.detach().cpu().double()
        total = torch.zeros(runtime_kept.shape[0], dtype=torch.float64)
        for term in self.terms:
            total = total + (_count(term.in_ref, term.in_full, runtime_kept, static_kept)
                             * _count(term.out_ref, term.out_full, runtime_kept, static_kept) * term.factor)
        return total

    def macs_ratio(self, runtime_kept: torch.Tensor, static_kept: torch.Tensor) -> torch.Tensor:
        return self.macs(runtime_kept, static_kept) / self.dense_macs

    def params(self, static_kept: torch.Tensor) -> int:
        """Parameters a storage-reduced model with these static keep counts stores (predictors included)."""
        static_kept = static_kept.detach().cpu().double()
        widths = self.widths.double()

        def share(ref):
            return 1.0 if ref is None else float(static_kept[ref[1]] / widths[ref[1]])

        total = 0.0
        for numel, rt_in, rt_out, is_weight in self._param_terms:
            # A weight scales with its input and output keep sets; a bias or BN shift with its output only.
            scale = share(rt_out) * (share(rt_in) if is_weight and rt_in is not None else 1.0)
            total += numel * scale
        return int(round(total))

    def params_ratio(self, static_kept: torch.Tensor) -> float:
        return self.params(static_kept) / self.dense_params


def static_kept_for(widths, static_ratios) -> torch.Tensor:
    """Static keep counts for per-layer ratios, without a network."""
    from rtsearch.net.pruning import keep_count
    return torch.stack([keep_count(torch.as_tensor(float(r)), int(w)) for w, r in zip(widths, static_ratios)])


def summarize(macs_ratios: torch.Tensor) -> dict:
    """Mean, p95 and standard deviation of per-input MACs ratios (docs/method.md §2)."""
    r = macs_ratios.double()
    return {"macs_ratio": float(r.mean()), "macs_ratio_p95": float(torch.quantile(r, 0.95)),
            "macs_ratio_std": float(r.std(unbiased=False))}
