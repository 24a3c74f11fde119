"""The interface every method implements, the run manifest, and the run set-up every method shares.

A method owns which settings it uses (a flag it does not use is refused), its default search space and what a
sweep's iterations count, its `run` and `resume` rules, its `export`, and the fixed-shape form of its deployed model.
A run folder holds `run.json`, the manifest naming its method and settings: export, resume and the search read it
instead of guessing a run's kind from the files beside it.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from typing import Callable

from rtsearch import data, device
from rtsearch.config import FIELDS, Pruning, RunConfig, flag_of
from rtsearch.errors import UsageError
from rtsearch.storage import replacing, write_json

MANIFEST = "run.json"
MANIFEST_FORMAT = "rtsearch-run-1"
# what every method uses: the data, the budgets, the run's identity and resources, the fine-tuning of its networks
COMMON = frozenset({"dataset", "model", "method", "budget", "param_budget", "iterations", "seed", "data_dir", "out",
                    "dense_epochs", "device", "lr_finetune", "finetune_epochs", "agent_share", "distill",
                    "holdout_share", "warmup_epochs", "mlflow_run_id", "pruning"})
# what must match for --resume to continue a run (a method may allow some to change)
RESUME_KEYS = ("fixed_ratios", "torch_pruning_l1", "round_to", "method", "dataset", "model", "budget", "budget_range",
               "param_budget", "seed", "finetune", "distill", "agent_share", "holdout_share")


class Method:
    """One way of pruning, as the command line, the search and export see it."""
    name: str = ""
    summary: str = ""                   # one line for --help and the docs
    pruning = Pruning(static=True, runtime=True)
    fields: frozenset = COMMON          # every RunConfig field some run of this method uses
    iteration_field = "iterations"      # the RunConfig field a sweep's --max-iterations sets
    sweep_iterations = 10               # a sweep's iterations per trial by default
    space_file = "default.yaml"         # its search space in search_spaces/
    swept = False                       # whether rtsearch.tune sweeps it
    sweep_note = ""                     # what a sweep's summary adds to say how its trials run
    unset_param_budget = "parameter budget searched"   # a sweep's summary where neither flag nor space sets it
    resume_may_change: tuple = ()       # RESUME_KEYS that --resume may change

    def uses(self, cfg: RunConfig) -> frozenset:
        """The fields this run of the method uses (a variant, a fixed-ratio run say, may use fewer)."""
        return self.fields

    def takes(self, name: str, cfg: RunConfig) -> str | None:
        """The flags of a run of this method that uses the field `name` (None if none does), as a fix to name
        where another run was given it."""
        return f"--method {self.name}" if name in self.fields and self.name != cfg.method else None

    def check(self, cfg: RunConfig) -> None:
        """Combinations of settings the method refuses (UsageError); single values are RunConfig.check's."""

    def start(self, cfg: RunConfig, on_iteration: Callable[[dict], None] | None = None, log=print,
              resume: bool = False) -> dict:
        """Run `cfg` end to end: <out>/run.json first, then `run`; the metrics written to <out>/metrics.json."""
        cfg = with_pruning(self, cfg)
        write_manifest(cfg)
        return self.run(cfg, on_iteration, log, resume)

    def run(self, cfg: RunConfig, on_iteration: Callable[[dict], None] | None, log, resume: bool) -> dict:
        raise NotImplementedError

    def trial_finetuning(self, max_iterations: int) -> int:
        """The fine-tuning iterations of a full sweep trial (warm-up aside), for the baseline it is set against."""
        return max_iterations

    def trial_params(self, cfg: RunConfig, searched: dict) -> dict:
        """What a sweep trial logs to MLflow as its parameters: its identity and budgets, what its iterations
        count, and the searched values; only settings this run uses (a space may search a key that only some runs
        of the method use: the agents' keys in a fixed-ratio sweep), so a run's parameters describe what it ran."""
        used = self.uses(cfg)
        keys = ("dataset", "model", "seed", "method", "budget", "param_budget", "iterations", self.iteration_field,
                "fixed_ratios")
        params = {k: getattr(cfg, k) for k in keys if k in used}
        if cfg.budget_range:
            params["budget_range"] = ":".join(f"{b:g}" for b in cfg.budget_range)
        return {**params, **{k: v for k, v in searched.items() if k in used}}

    def export(self, folder: str, path: str, budget: float | None, out: str) -> str:
        """Write the run's deployed model (at `budget` where the method can) to `out`; a line saying what it wrote."""
        raise NotImplementedError

    def traceable(self, model):
        """The fixed-shape form of its deployed model (for the MLflow Model Registry)."""
        raise NotImplementedError

    def registered(self, model) -> tuple:
        """What the MLflow Model Registry stores of its deployed model, and MLflow's serialization format: its
        fixed-shape form as a torch.export program ("pt2"), which loads without rtsearch."""
        return self.traceable(model), "pt2"


# ------------------------------------------------------------------------------------------------ manifest

def write_manifest(cfg: RunConfig) -> None:
    """<out>/run.json: the method and settings of the run in cfg.out (what --resume and export read)."""
    os.makedirs(cfg.out, exist_ok=True)
    write_json(os.path.join(cfg.out, MANIFEST), {"format": MANIFEST_FORMAT, "method": cfg.method,
                                                  "config": cfg.to_dict()})


def manifest_path(folder: str) -> str:
    return os.path.join(folder, MANIFEST)


def has_manifest(folder: str) -> bool:
    return os.path.isfile(manifest_path(folder))


def read_manifest(folder: str) -> dict:
    """The manifest of a run folder; a missing, corrupt or foreign one is a UsageError naming the fix."""
    path = manifest_path(folder)
    if not os.path.isfile(path):
        raise UsageError(f"{folder} holds no {MANIFEST}, so it is not a run folder of this rtsearch: pass a file of a "
                         f"folder that rtsearch.train wrote, or run it again")
    try:
        with open(path) as f:
            manifest = json.load(f)
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("config"), dict):
            raise ValueError("not an rtsearch run manifest")
        manifest["method"] = str(manifest["method"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{path} is corrupt or not an rtsearch run manifest ({type(e).__name__}): pass a file of a "
                         f"folder that rtsearch.train wrote, or run it again") from None
    return manifest


def check_resume(method: Method, cfg: RunConfig) -> None:
    """--resume continues the run in cfg.out only if it is the same kind of run with the same settings."""
    if not has_manifest(cfg.out):
        raise UsageError(f"--resume: {manifest_path(cfg.out)} does not exist; run without --resume first")
    stored = read_manifest(cfg.out)["config"]         # a corrupt one fails here, before any compute
    for key in RESUME_KEYS:
        if key in method.resume_may_change:
            continue
        if key in stored and stored[key] != getattr(cfg, key):
            raise UsageError(f"--resume: {cfg.out} holds a run with {key} {stored[key]!r}, not {getattr(cfg, key)!r}: "
                             f"pass the same flags as that run, or another --out")


# ------------------------------------------------------------------------------------------------ flags

def refuse_unused(method: Method, cfg: RunConfig, given: set[str], chosen: bool, others: list[Method]) -> None:
    """A field given on the command line that this run of `method` does not use is a UsageError naming the flags
    of a run that uses it (the most specific refusal first). Where the method was not `chosen` (it is the
    default), the fix is to choose one."""
    unused = []
    for name in given - method.uses(cfg):
        takers = [hint for m in [method, *others] if (hint := m.takes(name, cfg))]
        unused.append((len(takers), list(FIELDS).index(name), name, takers))
    if not unused:
        return
    _, _, name, takers = min(unused)
    flag = flag_of(FIELDS[name]) or name
    fix = f"pass {' or '.join(takers[:2])}, or drop {flag}" if takers else f"drop {flag}"
    if chosen or name in method.fields:
        raise UsageError(f"--method {method.name} does not take {flag}{variant_note(method, cfg, name)}: {fix}")
    raise UsageError(f"{flag} is not taken by the default method, {method.name}: {fix}")


def variant_note(method: Method, cfg: RunConfig, name: str) -> str:
    """Why a method that uses a field in some runs does not in this one."""
    if name not in method.fields:
        return ""
    return " with --fixed-ratios" if cfg.fixed_ratios else " without --fixed-ratios"


# ------------------------------------------------------------------------------------------------ set-up

def prepared(cfg: RunConfig, log, move: bool = True):
    """The shared start of every run: (splits, the dense model on the run's device, its test accuracy, a copy
    of it as the distillation teacher or None, the device). With `move`, the splits are moved to the device once,
    so every batch of every phase is sliced there."""
    import torch

    from rtsearch.net import dense

    torch.manual_seed(cfg.seed)
    where = device.resolve(cfg.device)
    splits = data.hold_out(data.load(cfg.dataset, cfg.seed, cfg.data_dir), cfg.holdout_share, cfg.seed)
    net, dense_accuracy = dense.pretrained(cfg.dataset, cfg.model, cfg.seed, splits, cfg.dense_epochs, log=log,
                                           device=where)
    teacher = copy.deepcopy(net) if cfg.distill else None     # the dense model, before any pruning
    if where.type != "cpu":
        log(f"device: {where} ({torch.cuda.get_device_name(where)})")
    return (splits.to(where) if move else splits), net, dense_accuracy, teacher, where


def save_model(model, out: str) -> None:
    """torch.save `model` to `out` whole or not at all; an unwritable `out` is a UsageError naming the fix."""
    import torch
    try:
        with replacing(out) as tmp:
            torch.save(model, tmp)
    except OSError as e:
        raise UsageError(f"cannot write {out} ({e.strerror or e}): pass a writable --out path") from None


def deployed_as_measured(folder: str, budget: float | None, kind: str):
    """(the deployed model, metrics.json, the budget it was trained for) of a finished run whose deployed.pt serves
    its own budget only, as the run measured it; a UsageError naming the fix for another `budget`, an unfinished
    run or an unreadable file. `kind` names the run in those lines ("ladder", "paper")."""
    import torch
    trained = float(read_manifest(folder)["config"]["budget"])
    if budget is not None and budget != trained:
        raise UsageError(f"{folder} holds a {kind} run made for budget {trained:g}, which serves that budget only: "
                         f"drop --budget, or train a {kind} run at --budget {budget:g}")
    deployed, metrics_path = os.path.join(folder, "deployed.pt"), os.path.join(folder, "metrics.json")
    if not (os.path.isfile(deployed) and os.path.isfile(metrics_path)):
        raise UsageError(f"{folder} holds a {kind} run that has not finished (no deployed.pt or metrics.json): "
                         f"finish it with rtsearch.train --resume --out {folder}")
    try:
        model = torch.load(deployed, weights_only=False, map_location="cpu")      # our own pickle
        with open(metrics_path) as f:
            metrics = json.load(f)
    except Exception as e:      # a truncated or foreign file: torch and json raise many kinds
        raise UsageError(f"{deployed} or {metrics_path} cannot be read ({type(e).__name__}): finish the run again "
                         f"with rtsearch.train --resume --out {folder}") from None
    return model, metrics, trained


def with_pruning(method: Method, cfg: RunConfig) -> RunConfig:
    """The config as the method runs it: what it prunes filled in."""
    return cfg if cfg.pruning == method.pruning else replace(cfg, pruning=method.pruning)
