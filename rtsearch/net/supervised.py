"""Supervised training and evaluation of a gated network under any pruning policy.

A policy maps a `Walk` (the batch at its current layer) to one runtime ratio per input, so the
fixed-ratio baseline and the learned runtime agent drive the same fine-tuning and evaluation.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from rtsearch.net.cost import CostModel, summarize
from rtsearch.data import batches, random_crop_flip
from rtsearch.net.models import GatedNet, Walk

Policy = Callable[[Walk], torch.Tensor]


def fixed_policy(runtime_ratios) -> Policy:
    """The same runtime ratio per layer for every input."""
    ratios = torch.as_tensor(runtime_ratios, dtype=torch.float32)
    return lambda walk: ratios[walk.t].expand(walk.h.shape[0])


def policy_forward(net: GatedNet, x, static_ratios, policy: Policy) -> tuple[torch.Tensor, Walk]:
    """Walk the layers, asking the policy for each layer's runtime ratios."""
    walk = net.walk(x, static_ratios)
    while not walk.done:
        with torch.no_grad():
            ratio = policy(walk)
        walk.step(ratio)
    return walk.logits(), walk


def distill(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student), the teacher's gradient stopped."""
    return F.kl_div(F.log_softmax(student_logits, 1), F.softmax(teacher_logits.detach(), 1), reduction="batchmean")


@torch.no_grad()
def teacher_logits(teacher: GatedNet, x) -> torch.Tensor:
    """The teacher's predictions (every channel, BatchNorm running statistics): what a student distils."""
    teacher.eval()
    return policy_forward(teacher, x, None, fixed_policy(torch.zeros(teacher.num_layers)))[0]


def fit(net: GatedNet, x, y, epochs: int, lr: float, static_ratios=None, policy: Policy | None = None,
        seed: int = 0, batch_size: int = 64, on_epoch: Callable[[int, float], None] | None = None,
        augment: bool = False, sgd: dict | None = None,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        generator: torch.Generator | None = None, teacher: GatedNet | None = None) -> None:
    """Train conv, BN and both importances under the given ratios (all zero: dense training).

    Adam at `lr` by default; `sgd={"momentum", "weight_decay", "milestones"}` trains with SGD instead,
    the learning rate divided by 10 at each milestone (a fraction of `epochs`). `augment` applies the
    CIFAR augmentation (random crop with padding 4, horizontal flip) to every batch, on its device.
    `loss(xb, yb)` replaces the cross-entropy under `policy` (sandwich.fit_sandwich); `generator`, seeded
    by the caller, replaces the one seeded here (batch order, augmentation). A `teacher` (the dense model)
    adds knowledge distillation to the cross-entropy: KL from its predictions on the same batch."""
    policy = policy or fixed_policy(torch.zeros(net.num_layers))
    if sgd:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=sgd["momentum"], weight_decay=sgd["weight_decay"])
        steps = torch.optim.lr_scheduler.MultiStepLR(opt, [round(m * epochs) for m in sgd["milestones"]], 0.1)
    else:
        opt, steps = torch.optim.Adam(net.parameters(), lr=lr), None
    gen = generator or torch.Generator().manual_seed(seed)

    def cross_entropy(xb, yb):
        logits = policy_forward(net, xb, static_ratios, policy)[0]
        value = F.cross_entropy(logits, yb)
        return value if teacher is None else value + distill(logits, teacher_logits(teacher, xb))

    loss = loss or cross_entropy
    net.train()
    for epoch in range(epochs):
        total, n = 0.0, 0
        for xb, yb in batches(x, y, batch_size, gen):
            if augment:
                xb = random_crop_flip(xb, gen)
            value = loss(xb, yb)
            opt.zero_grad()
            value.backward()
            opt.step()
            total, n = total + value.item() * len(xb), n + len(xb)
        if steps:
            steps.step()
        if on_epoch:
            on_epoch(epoch + 1, total / n)


@torch.no_grad()
def evaluate(net: GatedNet, cost: CostModel, x, y, static_ratios=None, policy: Policy | None = None,
             batch_size: int = 500) -> dict:
    """Accuracy and per-input MACs ratios (mean, p95) on a split; `per_input` keeps the raw tensors."""
    policy = policy or fixed_policy(torch.zeros(net.num_layers))
    net.eval()
    correct, macs, confidence, kept = [], [], [], []
    for xb, yb in batches(x, y, batch_size, shuffle=False):
        logits, walk = policy_forward(net, xb, static_ratios, policy)
        correct.append((logits.argmax(1) == yb).cpu())
        macs.append(cost.macs_ratio(walk.runtime_kept, walk.static_kept))
        confidence.append(F.softmax(logits, 1).amax(1).cpu())
        kept.append(walk.runtime_kept.cpu().float() / cost.widths)
    correct, macs = torch.cat(correct), torch.cat(macs)
    out = {"accuracy": float(correct.float().mean()), **summarize(macs),
           # runtime sparsity of layer t for input x = 1 - |runtime keep set| / C_t (docs/method.md §2)
           "runtime_sparsity": float(1 - torch.cat(kept).mean()),
           "runtime_sparsity_layers": [round(float(v), 4) for v in 1 - torch.cat(kept).mean(0)]}
    out["per_input"] = {"correct": correct, "macs_ratio": macs, "confidence": torch.cat(confidence)}
    return out
