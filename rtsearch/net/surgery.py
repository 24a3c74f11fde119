"""Storage-reduced deployable model (docs/method.md §1 trade-off pruner step 1, §2 "params ratio", "stored bytes").

The channels outside each gate's static keep set are removed for good: from the gate's conv, BN,
predictor rows and static-importance vector, and from every consumer of its output (the next gate's
conv and predictor, the head's fc, or a residual block's conv2). Runtime gating is untouched, and
since the pruner normalises and ranks over kept channels only, the exported model computes the same
outputs as the masked one.

Surgery uses Torch-Pruning's DependencyGraph: one traced forward through the gating finds all those
coupled tensors (the static importance passed as an unwrapped parameter) without hand-kept lists,
and it proved exact on the plain and residual backbones. The pruned weights are then loaded strictly
into `build_model(..., widths)`, so a consumer the trace missed fails loudly instead of exporting a
model that cannot be rebuilt.
"""
from __future__ import annotations

import copy
import os

import torch
import torch_pruning as tp

from rtsearch.net import checkpoint
from rtsearch.net.models import GatedNet, build_model


def prune_static(net: GatedNet, static_ratios) -> GatedNet:
    """A copy of `net` with the statically pruned channels physically removed (the caller's net is untouched)."""
    ratios = [float(r) for r in static_ratios]
    if len(ratios) != net.num_layers:
        raise ValueError(f"{len(ratios)} static ratios for {net.num_layers} prunable layers")
    pruned = copy.deepcopy(net).eval()  # eval: the trace must not update BN running statistics
    removed = [(~g.static_keep(r)).nonzero().flatten().tolist() for g, r in zip(pruned.gates, ratios)]
    device = next(pruned.parameters()).device
    with torch.enable_grad():   # the trace follows autograd, whatever the caller's grad mode
        graph = tp.DependencyGraph().build_dependency(
            pruned, example_inputs=torch.zeros(1, *pruned.input_shape, device=device),
            unwrapped_parameters=[(g.static_importance, 0) for g in pruned.gates])
    for gate, idxs in zip(pruned.gates, removed):
        if idxs:
            graph.get_pruning_group(gate.conv, tp.prune_conv_out_channels, idxs=idxs).prune()
    widths = [g.out_channels for g in pruned.gates]
    rebuilt = build_model(net.name, net.input_shape, net.head.fc.out_features, widths, net.lam,
                          net.gates[0].predictor is not None).to(device)
    rebuilt.load_state_dict(pruned.state_dict())  # strict: every tensor has the shape widths imply
    return rebuilt.train(net.training)


def export(net: GatedNet, static_ratios, path: str, drop_predictors: bool = False) -> dict:
    """Write the storage-reduced model to `path` as a checkpoint; returns its params, bytes and widths."""
    if static_ratios is None:
        static_ratios = [0.0] * net.num_layers
    ratios = [float(r) for r in static_ratios]
    pruned = prune_static(net, ratios)
    if drop_predictors:  # a static-only model (lam = 0) never reads its runtime importance
        for gate in pruned.gates:
            gate.predictor = None
    checkpoint.save(path, pruned, static_ratios=[0.0] * pruned.num_layers, exported_from_ratios=ratios)
    return {"params": sum(p.numel() for p in pruned.parameters()), "bytes": os.path.getsize(path),
            "widths": list(pruned.widths)}
