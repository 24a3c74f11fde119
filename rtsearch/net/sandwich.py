"""Fine-tuning over the range of widths the agents choose (`finetune="sandwich"`, docs/method.md §3).

Fine-tuning only under the agents' greedy ratios makes the network brittle to every other width, so
any per-input deviation costs accuracy and the runtime agent learns one fixed allocation. Here every
batch trains three paths through the same weights, the sandwich rule of universally slimmable
networks with in-place distillation:
- the widest path (the static keep sets, every channel computed) on the labels;
- the narrowest path (runtime ratio p_max on every layer) and
- the agent's path with exploration noise (its ratios plus N(0, explore_std) per input and layer)
both distilled from the widest path's predictions. Those paths share BatchNorm statistics, which
then match none of them; after training, the statistics are recomputed under the policy that will be
deployed (`recalibrate_bn`, the BN calibration of universally slimmable networks).

A run over a budget range (`--budget-range`) deploys neither every channel nor a tenth of them: its
widest and narrowest paths are the agent's greedy ratios at the range's top and bottom budgets, and
its explored path follows a budget drawn from the range per batch, with less noise (RunConfig.explore_std:
the drawn budget already varies the widths).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from rtsearch.config import EXPLORE_STD
from rtsearch.net.models import GatedNet
from rtsearch.net.supervised import Policy, distill, fit, fixed_policy, policy_forward, teacher_logits

NARROWEST = 0.9     # the narrowest path's runtime ratio (at most p_max): a tenth of the channels


def explored(policy: Policy, std: float, p_max: float, generator: torch.Generator) -> Policy:
    """The policy's ratios plus Gaussian noise per input (a fresh draw per layer), kept in [0, p_max]."""
    def act(walk):
        ratios = torch.as_tensor(policy(walk), dtype=torch.float32).cpu()
        noise = torch.randn(ratios.shape, generator=generator) * std
        return (ratios + noise).clamp(0.0, p_max)
    return act


def fit_sandwich(net: GatedNet, x, y, epochs: int, lr: float, static_ratios, policy: Policy, p_max: float,
                 explore_std: float = EXPLORE_STD, seed: int = 0, batch_size: int = 64, augment: bool = False,
                 on_epoch: Callable[[int, float], None] | None = None, widest: Policy | None = None,
                 narrowest: Policy | None = None, recalibrate: bool = True,
                 teacher: torch.nn.Module | None = None) -> None:
    """Train conv, BN and both importances on the widest, narrowest and explored agent paths
    (widest: every channel, narrowest: ratio NARROWEST on every layer, unless given). With a `teacher`
    (the dense model), every path, the widest included, is distilled from its predictions instead of the
    widest path's: knowledge distillation from the dense model on top of the sandwich rule."""
    gen = torch.Generator().manual_seed(seed)      # batch order, augmentation and exploration noise
    widest = widest or fixed_policy(torch.zeros(net.num_layers))
    narrowest = narrowest or fixed_policy(torch.full((net.num_layers,), min(p_max, NARROWEST)))
    agent = explored(policy, explore_std, p_max, gen)

    def sandwich(xb, yb):
        top, _ = policy_forward(net, xb, static_ratios, widest)
        loss, target = F.cross_entropy(top, yb), top
        if teacher is not None:
            target = teacher_logits(teacher, xb)
            loss = loss + distill(top, target)
        for path in (narrowest, agent):
            logits, _ = policy_forward(net, xb, static_ratios, path)
            loss = loss + distill(logits, target)
        return loss

    fit(net, x, y, epochs, lr, static_ratios, seed=seed, batch_size=batch_size, on_epoch=on_epoch, augment=augment,
        loss=sandwich, generator=gen)
    if recalibrate:
        recalibrate_bn(net, x, static_ratios, policy, seed=seed)


@torch.no_grad()
def recalibrate_bn(net: GatedNet, x, static_ratios, policy: Policy, batches_of: int = 256, max_batches: int = 20,
                   seed: int = 0) -> None:
    """Recompute every BatchNorm's running statistics as the cumulative average over up to
    `max_batches` training batches walked under `policy` (the deployed one): no weight changes."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                      # cumulative moving average
    net.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for i in range(0, min(len(x), batches_of * max_batches), batches_of):
        policy_forward(net, x[order[i:i + batches_of]], static_ratios, policy)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
