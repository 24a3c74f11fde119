"""The one place that decides where a run's tensors live (`--device auto|cpu|cuda`).

auto: the GPU Ray assigned to this trial when it has one (a trial without GPUs sees none), else the
GPU of this machine outside Ray, else the CPU. Every phase of a run (dense pre-training,
fine-tuning, calibration, evaluation, the in-process envs) works on the device `resolve` returns;
checkpoints are always written so that they load on a CPU-only machine.
"""
from __future__ import annotations

import torch

from rtsearch.errors import UsageError

DEVICES = ("auto", "cpu", "cuda")


def check(requested: str, flag: str = "--device", here: bool = True) -> None:
    """Fail fast when the device is unknown or, with `here`, cannot exist on this machine."""
    if requested not in DEVICES:
        raise UsageError(f"{flag} {requested!r} is not one of {', '.join(DEVICES)}: pass e.g. {flag} auto")
    if here and requested == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{flag} cuda: no CUDA GPU is visible here (torch.cuda.is_available() is False): "
                         f"pass {flag} cpu or auto, or run on a machine with a GPU")


def resolve(requested: str = "auto", gpu_ids: list | None = None) -> torch.device:
    """The device a run uses; `gpu_ids` are the GPUs Ray assigned to the calling trial (None outside Ray)."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        return torch.device("cuda")
    if gpu_ids is not None and not gpu_ids:
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def local_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
