"""Greedy (deterministic) use of the agents' trained RLlib modules: the deployed runtime policy, the
static agent's ratios. Each observes exactly as its environment does, so greedy evaluation sees what
the agent saw in training."""
from __future__ import annotations

import numpy as np
import torch
import tree
from ray.rllib.core.columns import Columns

from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.models import GatedNet, Walk
from rtsearch.net.supervised import Policy
from rtsearch.rl.observations import MacsMeter, runtime_observation, static_observation

def deterministic_actions(module, obs: np.ndarray, low, high, state=None, normalize_actions: bool = True,
                          clip_actions: bool = False):
    """Greedy actions of an RLModule for a (B, D) observation batch -> ((B, A) float32 actions, state).

    The distribution's deterministic action (a Gaussian's mean) mapped into [low, high] the way
    RLlib's env runner does it (`NormalizeAndClipActions`: with normalize_actions, PPO's default,
    `unsquash_action`: low + (a + 1) (high - low) / 2, then clipped), so greedy evaluation sees what
    the env saw. A stateful (LSTM) module takes and returns its state; None starts a new sequence.
    """
    params = next(iter(module.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
    B = obs_t.shape[0]
    batch = {Columns.OBS: obs_t}
    stateful = module.is_stateful()
    if stateful:
        if state is None:
            state = tree.map_structure(
                lambda s: torch.as_tensor(s, device=device).unsqueeze(0).repeat(B, *([1] * torch.as_tensor(s).dim())),
                module.get_initial_state())
        batch[Columns.OBS] = obs_t[:, None]
        batch[Columns.STATE_IN] = state
    with torch.no_grad():
        out = module.forward_inference(batch)
        inputs = out[Columns.ACTION_DIST_INPUTS]
        if stateful:
            inputs = inputs[:, 0]
        dist = module.get_inference_action_dist_cls().from_logits(inputs).to_deterministic()
        actions = dist.sample().cpu().numpy().astype(np.float32)
    low, high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
    if normalize_actions:
        actions = np.clip(low + (actions + 1.0) * (high - low) / 2.0, low, high)
    elif clip_actions:
        actions = np.clip(actions, low, high)
    return actions.astype(np.float32), out.get(Columns.STATE_OUT) if stateful else None


def runtime_policy(module, net: GatedNet, cost: CostModel, descriptors: np.ndarray, budget: float,
                   p_max: float) -> Policy:
    """The runtime agent's greedy policy: Walk -> (B,) runtime ratios, observing exactly as the env.

    Tracks each input's MACs so far (charged per layer as `RuntimeVectorEnv` does) and the LSTM
    state across the layers of one walk; a new walk (or walk.t == 0) starts afresh.
    """
    meter = MacsMeter(net, cost)
    memory: dict = {"walk": None}

    def policy(walk: Walk) -> torch.Tensor:
        if memory["walk"] is not walk or walk.t == 0 or walk.t < memory["charged"]:
            memory.update(walk=walk, charged=0, macs=np.zeros(walk.h.shape[0]), state=None)
        while memory["charged"] < walk.t:
            memory["macs"] = memory["macs"] + meter.spent(walk, memory["charged"])
            memory["charged"] += 1
        obs = runtime_observation(walk, descriptors, memory["macs"], budget)
        actions, memory["state"] = deterministic_actions(module, obs, 0.0, p_max, memory["state"])
        ratios = np.clip(actions.reshape(len(obs), -1)[:, 0], 0.0, p_max)
        return torch.from_numpy(ratios).to(walk.h.device)

    return policy


def static_ratios(module, net: GatedNet, cost: CostModel, descriptors: np.ndarray, param_budget: float,
                  p_max: float) -> np.ndarray:
    """The static agent's greedy walk over the layers, observing exactly as StaticLayerEnv -> (L,)."""
    L = net.num_layers
    ratios = np.zeros(L, dtype=np.float32)
    prev, state = 0.0, None
    for t in range(L):
        kept = cost.params_ratio(static_kept_for(cost.widths, ratios))
        obs = static_observation(descriptors, t, kept, param_budget, prev)[None]
        actions, state = deterministic_actions(module, obs, 0.0, p_max, state)
        prev = float(np.clip(actions.reshape(-1)[0], 0.0, p_max))
        ratios[t] = prev
    return ratios
