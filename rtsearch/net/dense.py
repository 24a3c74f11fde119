"""The dense model: trained once per (dataset, model, seed, data) and cached, never once per trial.

The cache key holds a fingerprint of the data itself (every split's tensors, the class count and
the image shape), so two image folders, or two CIFAR copies, never share a model by name alone.
The cache folder may be a URI (s3://, gs://: a sweep's shared storage), read and written whole.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time

import torch

from rtsearch import storage
from rtsearch.data import Splits
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.models import GatedNet, build_model
from rtsearch.net.supervised import evaluate, fit


def cache_dir() -> str:
    return os.environ.get("RTSEARCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rtsearch"))


def fingerprint(splits: Splits) -> str:
    """What the model is trained and tested on: a hash of every split's inputs and labels, the class
    count and the image shape (12 hex digits)."""
    h = hashlib.sha256(repr((tuple(splits.input_shape), splits.num_classes)).encode())
    for x, y in (splits.train, splits.val, splits.test):
        h.update(x.contiguous().numpy().tobytes())
        h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def recipe(dataset: str, model: str, epochs: int | None = None) -> dict:
    """How the dense model is pre-trained. CIFAR: the standard recipe of the CIFAR ResNets (He et al.
    2016): SGD with momentum 0.9, learning rate 0.1 divided by 10 at 50 % and 75 % of training,
    batch 128, weight decay 1e-4 (5e-4 for the plain nets), 164 epochs, random crops and flips. The
    small digit sets: Adam at 2e-3, batch 64, 15 epochs. `epochs` overrides the count."""
    if dataset in ("cifar10", "cifar100"):
        return {"lr": 0.1, "batch_size": 128, "epochs": epochs or 164,
                "sgd": {"momentum": 0.9, "weight_decay": 1e-4 if model.startswith("resnet") else 5e-4,
                        "milestones": (0.5, 0.75)}}
    return {"lr": 2e-3, "batch_size": 64, "epochs": epochs or 15, "sgd": None}


def cache_path(dataset: str, model: str, seed: int, splits: Splits, epochs: int | None = None) -> str:
    name = f"{dataset}-{model}-seed{seed}-e{recipe(dataset, model, epochs)['epochs']}-{fingerprint(splits)}.pt"
    return storage.join(cache_dir(), "dense", name)


def pretrained(dataset: str, model: str, seed: int, splits: Splits, epochs: int | None = None, log=print,
               device="cpu") -> tuple[GatedNet, float]:
    """Return (dense network on `device`, dense test accuracy), training and caching it on first use."""
    path = cache_path(dataset, model, seed, splits, epochs)
    if storage.exists(path):
        state = _load(path)
        log(f"dense model: reusing cached {path} (test accuracy {state['test_accuracy']:.4f})")
        return checkpoint.network(state).to(device), state["test_accuracy"]
    plan = recipe(dataset, model, epochs)
    epochs = plan["epochs"]
    torch.manual_seed(seed)
    net = build_model(model, splits.input_shape, splits.num_classes).to(device)
    splits = splits.to(device)
    start = time.time()
    x, y = splits.train

    def progress(epoch, loss):
        val = evaluate(net, cost, *splits.val)["accuracy"]
        net.train()
        log(f"dense epoch {epoch}/{epochs}  loss {loss:.4f}  val accuracy {val:.4f}  {time.time() - start:.0f}s")

    cost = CostModel(net)
    fit(net, x, y, epochs, plan["lr"], seed=seed, batch_size=plan["batch_size"], on_epoch=progress,
        augment=splits.augment, sgd=plan["sgd"])
    accuracy = evaluate(net, cost, *splits.test)["accuracy"]
    _save(path, net, test_accuracy=accuracy, seconds=time.time() - start)
    log(f"dense model: trained in {time.time() - start:.0f}s, test accuracy {accuracy:.4f}, cached at {path}")
    return net, accuracy


def _load(path: str) -> dict:
    if not storage.is_uri(path):
        return checkpoint.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "dense.pt")
        storage.download(path, local)
        return checkpoint.load(local)


def _save(path: str, net: GatedNet, **extra) -> None:
    if not storage.is_uri(path):
        checkpoint.save(path, net, **extra)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "dense.pt")
        checkpoint.save(local, net, **extra)
        storage.upload(local, path)
