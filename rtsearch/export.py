"""Storage-reduced deployable model (DESIGN §1: trade-off pruner step 1, "params ratio", "stored bytes").

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

from rtsearch import checkpoint
from rtsearch.cli import ArgumentParser, UsageError, guarded
from rtsearch.cost import CostModel
from rtsearch.models import GatedNet, build_model


def prune_static(net: GatedNet, static_ratios) -> GatedNet:
    """A copy of `net` with the statically pruned channels physically removed (the caller's net is untouched)."""
    ratios = [float(r) for r in static_ratios]
    if len(ratios) != net.num_layers:
        raise ValueError(f"{len(ratios)} static ratios for {net.num_layers} prunable layers")
    pruned = copy.deepcopy(net).eval()  # eval: the trace must not update BN running statistics
    removed = [(~g.static_keep(r)).nonzero().flatten().tolist() for g, r in zip(pruned.gates, ratios)]
    device = next(pruned.parameters()).device
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


@guarded
def main(argv=None) -> None:
    parser = ArgumentParser(description="Write the storage-reduced deployable model of a checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by a run")
    parser.add_argument("--out", required=True, help="file to write the exported model to")
    args = parser.parse_args(argv)
    state = checkpoint.load(args.checkpoint)
    try:
        net = checkpoint.network(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UsageError(f"checkpoint {args.checkpoint} does not hold a loadable network "
                         f"({type(e).__name__}): pass the checkpoint.pt a run wrote") from None
    ratios = state.get("static_ratios") or [0.0] * net.num_layers
    if len(ratios) != net.num_layers:
        raise UsageError(f"checkpoint {args.checkpoint} has {len(ratios)} static ratios for "
                         f"{net.num_layers} layers: pass the checkpoint.pt a run wrote")
    try:
        result = export(net, ratios, args.out)
    except OSError as e:
        raise UsageError(f"cannot write {args.out} ({e.strerror or e}): pass a writable --out path") from None
    dense = CostModel(net).dense_params
    print(f"exported {args.out}: params {result['params']} (params ratio {result['params'] / dense:.4f} "
          f"of {dense} dense), bytes {result['bytes']}, widths {result['widths']}")


if __name__ == "__main__":
    main()
