"""Deployed models as TorchScript: the same answers, without Python between the operators.

On a CPU, a network pruned to a few percent of its MACs spends most of its time in Python dispatching operators,
not in the operators themselves, and a cascade (a cheap network, a policy, a dearer network for the inputs sent
up) pays that overhead three times. Here every network is traced once (its shapes do not depend on the input) and
frozen, and a cascade's control flow is scripted around the traced parts, so one call runs as one TorchScript
graph: the cheap network on the whole batch, the policy batched, the dearer networks only on the inputs sent to
them (gathered, then scattered back). `torch.jit.save` writes the result; `torch.jit.load` reads it without
rtsearch. Models with a per-layer runtime policy have no compiled form here (their keep counts change the shapes
input by input).
"""
from __future__ import annotations

import warnings

import torch


def traced(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """`module` traced on `example` (its shapes must not depend on the input's values)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")     # the tracer's notes on constants, expected for fixed-shape networks
        return torch.jit.trace(module.eval(), example, check_trace=False)


def frozen(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Parameters folded in as constants, so the graph can be optimised as a whole."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)      # TorchScript is deprecated in favour of torch.export
        return torch.jit.freeze(module.eval())


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module lives (its first parameter or buffer; the CPU for one that has none): its compiled form is
    traced there, and frozen weights stay where they were traced."""
    first = next(iter(module.parameters()), None)
    first = first if first is not None else next(iter(module.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def network(skip: torch.nn.Module, input_shape) -> torch.jit.ScriptModule:
    """A fixed-width network (a skip-path network without runtime policy): logits of any batch, on the device where
    `skip` lives."""
    return frozen(traced(skip, torch.zeros(2, *input_shape, device=device_of(skip))))


class Choice(torch.nn.Module):
    """The re-run policy as one fixed-shape function: log-probabilities of the cheap pass (B, classes) -> the
    score of each rung (B, rungs), the calibration shift's charge already subtracted; the argmax picks the rung."""

    def __init__(self, features, actor: torch.nn.Module, actions: list[int], shift: float, extra: torch.Tensor):
        super().__init__()
        self.features, self.actor = features, actor
        self.register_buffer("actions", torch.tensor(actions, dtype=torch.long))
        self.register_buffer("charge", float(shift) * extra.detach().clone())

    def forward(self, log_probs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.features(log_probs)).index_select(1, self.actions) - self.charge


class Cascade(torch.nn.Module):
    """forward(x) -> log-probabilities (B, classes): every input on the cheap network; those the policy sends up
    on the one dearer network it picks, and only those."""

    def __init__(self, cheap: torch.nn.Module, dearer: list, choice: torch.nn.Module):
        super().__init__()
        self.cheap, self.dearer, self.choice = cheap, torch.nn.ModuleList(dearer), choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.log_softmax(self.cheap(x), 1)
        pick = self.choice(out).argmax(1)
        if x.shape[0] == 1:             # one input: at most one more network, no gathering
            level = int(pick[0])
            i = 1
            for rung in self.dearer:
                if i == level:
                    out = torch.log_softmax(rung(x), 1)
                i += 1
            return out
        i = 1
        for rung in self.dearer:
            rows = torch.nonzero(pick == i).squeeze(1)
            if rows.numel() > 0:
                out = out.index_copy(0, rows, torch.log_softmax(rung(x.index_select(0, rows)), 1))
            i += 1
        return out


def cascade(rungs: list, input_shape, features, actor: torch.nn.Module, actions: list[int], shift: float,
            extra: torch.Tensor, classes: int) -> torch.jit.ScriptModule:
    """The ladder's deployed model compiled: traced rungs and policy, the cascade between them scripted, on the
    device where the rungs and the actor live."""
    device = device_of(rungs[0])
    nets = [traced(rung, torch.zeros(2, *input_shape, device=device)) for rung in rungs]
    choice = Choice(features, actor, actions, shift, extra).to(device)
    choice = traced(choice, torch.log_softmax(torch.randn(2, classes, device=device), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)      # TorchScript is deprecated in favour of torch.export
        return frozen(torch.jit.script(Cascade(nets[0], nets[1:], choice).eval()))
