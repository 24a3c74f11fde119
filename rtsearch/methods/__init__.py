"""The registry of methods: the one place that maps a method's name to what it does.

Entry points, the Tune trial, the sweep's baseline, its report and export ask here (`get`, `run`, `of_folder`);
none of them compares a method's name. Each method lives in its own module behind rtsearch.methods.base.Method:
the ladder (rtsearch.methods.ladder), the two agents on a gated network with their one-agent variants and their
fixed-ratio peers (rtsearch.methods.gated, rtsearch.methods.fixed), and the published method as written
(rtsearch.methods.paper).
"""
from __future__ import annotations

from typing import Callable

from rtsearch.config import RunConfig
from rtsearch.errors import UsageError
from rtsearch.logs import log_to_stdout
from rtsearch.methods import gated, ladder, paper
from rtsearch.methods.base import Method, check_resume, read_manifest, refuse_unused, with_pruning

REGISTRY: dict[str, Method] = {m.name: m for m in (ladder.METHOD, *gated.METHODS, paper.METHOD)}
DEFAULT = RunConfig.method       # what rtsearch.train and rtsearch.tune run without --method


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def swept() -> tuple[str, ...]:
    """The methods rtsearch.tune sweeps."""
    return tuple(name for name, m in REGISTRY.items() if m.swept)


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise UsageError(f"unknown method {name!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def of_folder(folder: str) -> Method:
    """The method of the run in `folder`, from its manifest (UsageError if none)."""
    return get(read_manifest(folder)["method"])


def checked(cfg: RunConfig, given: set[str] = frozenset(), chosen: bool = True) -> RunConfig:
    """The config validated in one place: every value within its bounds, the method's own rules, and (for the
    fields `given` on a command line) no setting the method does not use. `chosen`: the method was named."""
    method = get(cfg.method)
    cfg.check()
    refuse_unused(method, cfg, set(given), chosen, [m for m in REGISTRY.values() if m is not method])
    method.check(cfg)
    return cfg


def configured(cfg: RunConfig) -> RunConfig:
    """The config as its method runs it (what the method prunes filled in), for code that drives a method's parts
    directly, as the benchmarks do."""
    return with_pruning(get(cfg.method), cfg)


def resumable(cfg: RunConfig) -> None:
    """--resume: the folder holds a run of the same method and settings (UsageError, before any compute)."""
    check_resume(get(cfg.method), cfg)


def run(cfg: RunConfig, on_iteration: Callable[[dict], None] | None = None, log=log_to_stdout,
        resume: bool = False) -> dict:
    """Run one configuration end to end with its method: writes <out>/run.json, then the method's run; returns the
    metrics written to <out>/metrics.json."""
    return get(cfg.method).start(cfg, on_iteration, log, resume)
