"""The dense model: trained once per (dataset, model, seed) and cached, never once per trial."""
from __future__ import annotations

import os
import time

import torch

from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.data import Splits
from rtsearch.net.models import GatedNet, build_model
from rtsearch.net.supervised import evaluate, fit


def cache_dir() -> str:
    return os.environ.get("RTSEARCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rtsearch"))


def cache_path(dataset: str, model: str, seed: int) -> str:
    return os.path.join(cache_dir(), "dense", f"{dataset}-{model}-seed{seed}.pt")


def pretrained(dataset: str, model: str, seed: int, splits: Splits, epochs: int = 15, lr: float = 2e-3,
               log=print) -> tuple[GatedNet, float]:
    """Return (dense network, dense test accuracy), training and caching it on first use."""
    path = cache_path(dataset, model, seed)
    if os.path.isfile(path):
        state = checkpoint.load(path)
        log(f"dense model: reusing cached {path} (test accuracy {state['test_accuracy']:.4f})")
        return checkpoint.network(state), state["test_accuracy"]
    torch.manual_seed(seed)
    net = build_model(model, splits.input_shape, splits.num_classes)
    start = time.time()
    x, y = splits.train

    def progress(epoch, loss):
        val = evaluate(net, cost, *splits.val)["accuracy"]
        net.train()
        log(f"dense epoch {epoch}/{epochs}  loss {loss:.4f}  val accuracy {val:.4f}  {time.time() - start:.0f}s")

    cost = CostModel(net)
    fit(net, x, y, epochs, lr, seed=seed, on_epoch=progress)
    accuracy = evaluate(net, cost, *splits.test)["accuracy"]
    checkpoint.save(path, net, test_accuracy=accuracy, seconds=time.time() - start)
    log(f"dense model: trained in {time.time() - start:.0f}s, test accuracy {accuracy:.4f}, cached at {path}")
    return net, accuracy
