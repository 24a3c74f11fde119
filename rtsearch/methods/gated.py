"""The two agents on a gated network (`--method both`, docs/method.md §1-§3), and their one-agent variants
(`runtime-only`, `static-only`): the training iteration of rtsearch.rl.loop from the cached dense model, then the
deployed model of the best iteration (rtsearch.deploy.deployed). With `--fixed-ratios` the same methods run as their
fixed-ratio peers (rtsearch.methods.fixed)."""
from __future__ import annotations

import os

from rtsearch.config import Pruning, RunConfig
from rtsearch.errors import UsageError
from rtsearch.methods import fixed
from rtsearch.methods.base import COMMON, MANIFEST, Method, prepared, save_model
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.surgery import export
from rtsearch.deploy import deployed

AGENTS = frozenset({"budget_range", "num_env_runners", "lstm", "lr_runtime", "lr_static", "beta_f", "eta_f", "beta_p",
                    "lam", "p_max", "warm_start", "finetune", "explore_std", "calibrate", "calibration_images"})
RUNTIME_AGENT = frozenset({"budget_range", "lstm", "lr_runtime", "beta_f", "eta_f", "lam"})
STATIC_AGENT = frozenset({"lr_static", "beta_p"})


class Gated(Method):
    """The gated network pruned by its agents (or, with --fixed-ratios, by uniform ratios)."""
    iteration_field = "iterations"
    sweep_iterations = 10
    space_file = "default.yaml"

    def __init__(self, name: str, summary: str, pruning: Pruning, agents: frozenset, swept: bool = False):
        self.name, self.summary, self.pruning, self.swept = name, summary, pruning, swept
        self.learned = COMMON | agents                  # what a run with its agents uses
        self.fixed = COMMON | fixed.uses(pruning)       # what its fixed-ratio run uses
        self.fields = self.learned | self.fixed

    def uses(self, cfg: RunConfig) -> frozenset:
        return self.fixed if cfg.fixed_ratios else self.learned

    def takes(self, name: str, cfg: RunConfig) -> str | None:
        same = self.name == cfg.method
        if name in self.learned:
            return None if same and not cfg.fixed_ratios else f"--method {self.name}" + (
                " without --fixed-ratios" if same else "")
        if name in self.fixed:
            return None if same and cfg.fixed_ratios else f"--fixed-ratios --method {self.name}"
        return None

    def run(self, cfg: RunConfig, on_iteration, log, resume: bool) -> dict:
        if cfg.fixed_ratios:
            return fixed.run(cfg, on_iteration, log, resume)
        from rtsearch.rl.loop import run_agents  # imports RLlib: only runs with agents pay for it
        splits, net, dense_accuracy, teacher, _ = prepared(cfg, log)
        metrics = run_agents(cfg, splits, net, dense_accuracy, on_iteration, log, resume, teacher)
        # the deployable model: static channels removed, runtime pruning on the skip path with its policy
        deployed.write_model(os.path.join(cfg.out, "best.pt"), os.path.join(cfg.out, "deployed.pt"))
        return metrics

    def export(self, folder: str, path: str, budget: float | None, out: str) -> str:
        """At `budget`: the runtime policy calibrated onto it (rtsearch.deploy.at_budget), measured on test; else the
        storage-reduced model (static channels removed, rtsearch.net.surgery)."""
        if os.path.basename(path) == MANIFEST:      # any file of the folder: the best iteration's checkpoint
            path = os.path.join(folder, "best.pt")
        if budget is not None:
            from rtsearch.deploy.at_budget import calibrated
            run, result = calibrated(path, budget)
            save_model(run.model(), out)
            return (f"exported {out}: the deployed model at budget {budget:g}: test accuracy {result['accuracy']:.4f}, "
                    f"MACs ratio {result['macs_ratio']:.4f} (per input: std {result['macs_ratio_std']:.4f}; "
                    f"calibration shift {result['shift']:+.4f})")
        state = checkpoint.load(path)
        net = checkpoint.network_of(state, path)
        ratios = state.get("static_ratios") or [0.0] * net.num_layers
        if len(ratios) != net.num_layers:
            raise UsageError(f"checkpoint {path} has {len(ratios)} static ratios for {net.num_layers} layers: pass "
                             f"the checkpoint.pt a run wrote")
        try:
            result = export(net, ratios, out)
        except OSError as e:
            raise UsageError(f"cannot write {out} ({e.strerror or e}): pass a writable --out path") from None
        dense = CostModel(net).dense_params
        return (f"exported {out}: params {result['params']} (params ratio {result['params'] / dense:.4f} of {dense} "
                f"dense), bytes {result['bytes']}, widths {result['widths']}")

    def traceable(self, model):
        from rtsearch.deploy.deployed import TraceableModel
        return TraceableModel(model)


METHODS = (
    Gated("both", "both agents: per input, which share of each layer's channels to compute; per layer, which share "
                  "to remove for good", Pruning(static=True, runtime=True), AGENTS, swept=True),
    Gated("runtime-only", "the runtime agent alone (nothing removed for good)", Pruning(static=False, runtime=True),
          AGENTS - STATIC_AGENT),
    Gated("static-only", "the static agent alone (the same channels for every input)",
          Pruning(static=True, runtime=False), AGENTS - RUNTIME_AGENT),
)
