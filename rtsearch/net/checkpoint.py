"""Checkpoint files: the network's architecture, weights and static ratios, plus run state."""
from __future__ import annotations

import os
import pickle
import zipfile

import torch

from rtsearch.errors import UsageError
from rtsearch.net.models import GatedNet, build_model
from rtsearch.storage import replacing

FORMAT = "rtsearch-checkpoint-1"


def save(path: str, net: GatedNet, static_ratios=None, **extra) -> None:
    """Write atomically, so an interrupted run never leaves a half-written checkpoint."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"format": FORMAT, "model": net.config(), "state_dict": net.state_dict(),
             "static_ratios": None if static_ratios is None else [float(r) for r in static_ratios], **extra}
    with replacing(path) as tmp:
        torch.save(state, tmp)


def load(path: str) -> dict:
    """Read a checkpoint; a missing or corrupt file is a UsageError naming it."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist: pass the checkpoint.pt a run wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise UsageError(f"checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}): "
                         f"pass the checkpoint.pt a run wrote, or re-run it") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UsageError(f"checkpoint {path} is not an rtsearch checkpoint: pass the checkpoint.pt a run wrote")
    return state


def network(state: dict) -> GatedNet:
    """Rebuild the network a checkpoint holds."""
    cfg = state["model"]
    net = build_model(cfg["name"], tuple(cfg["input_shape"]), cfg["num_classes"], cfg["widths"], cfg["lam"],
                      cfg.get("predictors", True))
    net.load_state_dict(state["state_dict"])
    return net


def network_of(state: dict, path: str) -> GatedNet:
    """`network`, with a checkpoint whose weights do not fit its architecture as a UsageError naming it."""
    try:
        return network(state)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise UsageError(f"checkpoint {path} does not hold a loadable network ({type(e).__name__}): "
                         f"pass the checkpoint.pt a run wrote") from None
