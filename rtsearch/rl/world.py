"""The *world* the two environments act in, and their episode bookkeeping.

A world payload is set at construction (`env_config["world"]`) and later with `set_world(payload)`:
    {"model": net.config(), "state_dict": net.state_dict(), "static_ratios": [L floats],
     "beta_f": float, "runtime_module": RLModule | None (static env only),
     "beta_table": {"budgets": [...], "betas": [...]} (a run over a budget range only)}
"""
from __future__ import annotations

import numpy as np

from rtsearch.data import hold_out, load, split_off
from rtsearch.net.checkpoint import network
from rtsearch.net.models import GatedNet


def world_network(world: dict) -> GatedNet:
    net = network({"model": world["model"], "state_dict": world["state_dict"]})
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def train_split(config: dict):
    """The inputs the agents are rewarded on: the training split (less its "holdout_share", data.hold_out),
    or with "agent_share" its share that fine-tuning never sees (data.split_off)."""
    seed = int(config.get("seed", 0))
    splits = load(config.get("dataset", "mnist5k"), seed, config.get("data_dir"))
    train = hold_out(splits, float(config.get("holdout_share", 0.0)), seed).train
    share = float(config.get("agent_share", 0.0))
    return split_off(train, share, seed)[1] if share > 0 else train


class Tally:
    """Sums over finished episodes, popped as means."""

    def __init__(self, *keys: str):
        self.keys = keys
        self.clear()

    def clear(self):
        self.count = 0
        self.sums = {k: 0.0 for k in self.keys}
        self.macs_ratios: list[np.ndarray] = []

    def add(self, n: int, **values):
        self.count += n
        for k, v in values.items():
            self.sums[k] += float(np.sum(v))

    def pop(self) -> dict:
        out: dict = {"count": self.count}
        if self.count:
            out.update({k: v / self.count for k, v in self.sums.items()})
        if self.macs_ratios:
            out["macs_ratios"] = np.concatenate(self.macs_ratios)
        self.clear()
        return out


def n_layers(world: dict) -> int:
    """Number of prunable layers of a world payload's network."""
    return len(world["model"]["widths"])
