"""The plain torch layers of a trained feed-forward PPO module: what a deployed policy keeps of an RLlib agent."""
from __future__ import annotations

from typing import Optional

import torch


def actor_network(module) -> Optional[torch.nn.Module]:
    """The plain torch layers from observation to action-distribution inputs of a feed-forward PPO
    module (its actor encoder, shared or separate, then its pi head), or None if it is built otherwise."""
    encoder = getattr(module.encoder, "actor_encoder", None) or getattr(module.encoder, "encoder", None)
    try:
        return torch.nn.Sequential(encoder.net.mlp, module.pi.net.mlp)
    except AttributeError:
        return None
