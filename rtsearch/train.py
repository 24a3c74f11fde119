"""One run: `python -m rtsearch.train --dataset mnist5k --model small --budget 0.5`.

Parses the command line into a RunConfig (its flags are generated from the config's documented fields) and runs it
with its method (rtsearch.methods): it starts from the cached dense model, then by default runs the ladder
(Torch-Pruning L1 networks at several budgets and a learned per-input choice of re-running an input on a dearer one,
docs/method.md §5); `--method both` runs the training iteration with both agents, `--fixed-ratios` fine-tunes under
uniform ratios (the baselines).
"""
from __future__ import annotations

import os
import sys
import time

from rtsearch import data, device, methods
from rtsearch.cli import ArgumentParser, add_config_flags, check_dataset_and_model, fraction, given_fields, guarded
from rtsearch.config import RunConfig
from rtsearch.errors import UsageError
from rtsearch.logs import log_to_stdout
from rtsearch.net import dense
from rtsearch.rl import budgets


def parse_args(argv=None) -> tuple[RunConfig, dict]:
    p = ArgumentParser(prog="python -m rtsearch.train", description=__doc__.splitlines()[0])
    add_config_flags(p, RunConfig, {"method": "what is learned (default " + methods.DEFAULT + "): " + "; ".join(
        f"{name}: {methods.get(name).summary}" for name in methods.names())}, {"method": methods.names()},
        {"budget": fraction("--budget"), "param_budget": fraction("--param-budget")})
    p.add_argument("--dense-only", action="store_true", help="only train and cache the dense model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    args = p.parse_args(argv)
    given = given_fields(args)
    chosen = "method" in given
    if "budget_range" in given:
        if "budget" in given:
            raise UsageError("pass --budget or --budget-range, not both (a range run serves every budget in it)")
        given["budget_range"] = list(budgets.parse_range(given["budget_range"]))
        given["budget"] = given["budget_range"][1]
    device.check(given.get("device", RunConfig.device))
    cfg = RunConfig(**given)
    check_dataset_and_model(cfg.dataset, cfg.model, cfg.data_dir)
    methods.checked(cfg, set(given) - {"budget"} if "budget_range" in given else set(given), chosen)
    if "out" not in given:
        cfg.out = default_out(cfg)
    if args.resume:
        methods.resumable(cfg)
    return cfg, {"dense_only": args.dense_only, "resume": args.resume}


def default_out(cfg: RunConfig) -> str:
    """runs/<dataset>-<model>-<budget>[-p<param budget>]-<method>[-fixed]-s<seed>: a baseline and a
    learned run, or two methods, never share a folder."""
    budget = f"r{cfg.budget_range[0]:g}-{cfg.budget_range[1]:g}" if cfg.budget_range else f"{cfg.budget:g}"
    parts = [cfg.dataset, cfg.model, budget]
    if cfg.param_budget < 1.0:
        parts.append(f"p{cfg.param_budget:g}")
    parts.append(cfg.method + ("-fixed" if cfg.fixed_ratios else "") + ("-l1" if cfg.torch_pruning_l1 else "")
                 + (f"-r{cfg.round_to}" if cfg.round_to > 1 else "")
                 + ("-kd" if cfg.distill else ""))
    return os.path.join("runs", "-".join(parts) + f"-s{cfg.seed}")


@guarded
def main(argv=None) -> int:
    cfg, flags = parse_args(argv)
    if flags["dense_only"]:
        splits = data.load(cfg.dataset, cfg.seed, cfg.data_dir)
        dense.pretrained(cfg.dataset, cfg.model, cfg.seed, splits, cfg.dense_epochs, log=log_to_stdout,
                         device=device.resolve(cfg.device))
        return 0
    start = time.time()
    metrics = methods.run(cfg, log=log_to_stdout, resume=flags["resume"])
    print(f"done; wall time of this run: {time.time() - start:.0f} s. Test accuracy {metrics['accuracy']:.4f}, "
          f"macs ratio {metrics['macs_ratio']:.4f}, params ratio {metrics['params_ratio']:.4f}, "
          f"score {metrics['score']:.4f}; results in {os.path.join(cfg.out, 'metrics.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
