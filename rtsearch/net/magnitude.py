"""A peer from outside the method: Torch-Pruning's magnitude (L1) pruner on the same backbone.

`rtsearch.train --fixed-ratios --method static-only --torch-pruning-l1` prunes the dense network with
`torch_pruning.pruner.MagnitudePruner` (importance: the L1 norm of each channel's weights, as
Torch-Pruning computes it over the channel's whole dependency group), removing from every gate's
conv the same share of channels as the uniform static-only baseline at the budget (the same widths); then it
fine-tunes the smaller network exactly as that baseline is fine-tuned. Only the gates' convs are
pruned (the stem, the head and a residual block's outer convs keep their widths, as in the
method), so the result is the same architecture at smaller widths and is rebuilt by `build_model`.
"""
from __future__ import annotations

import torch
import torch_pruning as tp

from rtsearch.net.cost import CostModel
from rtsearch.net.models import GatedNet, build_model


def l1_pruned(net: GatedNet, keep_counts) -> GatedNet:
    """A static-only copy of `net` (no runtime predictors) that keeps, of gate t's channels, the
    keep_counts[t] of highest L1 magnitude, pruned by Torch-Pruning; `net` is untouched."""
    widths = list(net.widths)
    model = build_model(net.name, net.input_shape, net.head.fc.out_features, widths, 0.0, predictors=False)
    model.load_state_dict({k: v for k, v in net.state_dict().items() if ".predictor." not in k})
    where = next(net.parameters()).device
    model = model.to(where).eval()
    gate_convs = {g.conv for g in model.gates}
    with torch.enable_grad():   # the dependency trace follows autograd
        pruner = tp.pruner.MagnitudePruner(
            model, example_inputs=torch.zeros(1, *model.input_shape, device=where),
            importance=tp.importance.MagnitudeImportance(p=1),
            # Torch-Pruning keeps int(C (1 - ratio)) channels: half a channel over k keeps exactly k
            pruning_ratio_dict={g.conv: 1.0 - (int(k) + 0.5) / g.out_channels
                                for g, k in zip(model.gates, keep_counts)},
            ignored_layers=[m for m in model.modules()
                            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m not in gate_convs],
            unwrapped_parameters=[(g.static_importance, 0) for g in model.gates])
        pruner.step()
    rebuilt = build_model(net.name, net.input_shape, net.head.fc.out_features, [g.out_channels for g in model.gates],
                          0.0, predictors=False).to(where)
    rebuilt.load_state_dict(model.state_dict())   # strict: every tensor has the shape the widths imply
    return rebuilt.train(net.training)


def cost_against(pruned: GatedNet, reference: CostModel) -> CostModel:
    """The pruned network's cost model with the unpruned network's dense MACs and parameters as the
    denominators, so its MACs and params ratios are against the same dense model as every peer's."""
    cost = CostModel(pruned, predictors=False)
    cost.dense_macs, cost.dense_params = reference.dense_macs, reference.dense_params
    return cost
