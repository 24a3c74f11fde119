"""One run: `python -m rtsearch.train --dataset mnist5k --model small --budget 0.5`.

Starts from the cached dense model, then either fine-tunes under uniform ratios
(`--fixed-ratios`, the baseline) or runs the iteration of DESIGN §1 with both agents.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

import numpy as np
import torch

from rtsearch import checkpoint, data, dense
from rtsearch.baseline import uniform_ratios
from rtsearch.cli import ArgumentParser, UsageError, check_dataset_and_model, fraction, guarded
from rtsearch.config import METHODS, RunConfig
from rtsearch.cost import CostModel, static_kept_for
from rtsearch.record import RunRecord
from rtsearch.supervised import evaluate, fit, fixed_policy


def log_to_stdout(message: str) -> None:
    print(message, flush=True)


def run(cfg: RunConfig, on_iteration: Callable[[dict], None] | None = None, log=log_to_stdout,
        resume: bool = False) -> dict:
    """Run one configuration end to end; returns the metrics written to <out>/metrics.json."""
    torch.manual_seed(cfg.seed)
    splits = data.load(cfg.dataset, cfg.seed, cfg.data_dir)
    net, dense_accuracy = dense.pretrained(cfg.dataset, cfg.model, cfg.seed, splits, cfg.dense_epochs, log=log)
    if cfg.fixed_ratios:
        return run_fixed(cfg, splits, net, dense_accuracy, on_iteration, log)
    from rtsearch.loop import run_agents
    return run_agents(cfg, splits, net, dense_accuracy, on_iteration, log, resume)


def predictors_kept(method: str) -> bool:
    """A static-only model has no use for the runtime importance predictors and drops them."""
    return method != "static-only"


def finish(record: RunRecord, net, splits, cost: CostModel, static_ratios, policy, extra=None) -> dict:
    """Evaluate the given state on the test split, export it, and write metrics.json."""
    from rtsearch.export import export
    test = evaluate(net, cost, *splits.test, static_ratios, policy)
    per_input = {k: v.numpy() for k, v in test.pop("per_input").items()}
    np.savez(os.path.join(record.cfg.out, "test_per_input.npz"), **per_input)  # for input-dependence analysis
    exported = export(net, static_ratios, os.path.join(record.cfg.out, "model.pt"),
                      drop_predictors=not predictors_kept(record.cfg.method))
    params_ratio = exported["params"] / cost.dense_params
    return record.finish(test, params_ratio, exported["bytes"], extra)


def run_fixed(cfg: RunConfig, splits, net, dense_accuracy, on_iteration, log) -> dict:
    """Fine-tune under uniform ratios that meet the MACs budget; iterations are epochs."""
    if cfg.method == "static-only":
        net.lam = 0.0
    cost = CostModel(net, predictors=predictors_kept(cfg.method))
    static_ratios, runtime_ratios = uniform_ratios(cost, cfg.budget, cfg.method)
    log(f"fixed ratios ({cfg.method}): static {float(static_ratios[0]):.4f}, runtime {float(runtime_ratios[0]):.4f} "
        f"on every layer")
    policy = fixed_policy(runtime_ratios)
    params_ratio = cost.params_ratio(static_kept_for(cost.widths, static_ratios))
    record = RunRecord(cfg, dense_accuracy, on_iteration, log)
    for _ in range(cfg.iterations):
        fit(net, *splits.train, 1, cfg.lr_finetune, static_ratios, policy, seed=cfg.seed + len(record.history))
        val = evaluate(net, cost, *splits.val, static_ratios, policy)
        record.iteration(net, static_ratios, val, params_ratio)
    net.load_state_dict(checkpoint.load(record.best_path)["state_dict"])
    return finish(record, net, splits, cost, static_ratios, policy,
                  {"static_ratios": static_ratios.tolist(), "runtime_ratios": runtime_ratios.tolist()})


def parse_args(argv=None) -> tuple[RunConfig, dict]:
    p = ArgumentParser(prog="python -m rtsearch.train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="small")
    p.add_argument("--budget", type=fraction("--budget"), default=0.5, help="MACs budget, fraction of dense MACs")
    p.add_argument("--param-budget", type=fraction("--param-budget"), default=1.0,
                   help="parameter budget, fraction of dense parameters")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--num-env-runners", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<model>-<budget>-s<seed>)")
    p.add_argument("--method", choices=METHODS, default="both")
    p.add_argument("--fixed-ratios", action="store_true", help="uniform ratios instead of agents (baseline)")
    p.add_argument("--dense-only", action="store_true", help="only train and cache the dense model")
    p.add_argument("--lstm", action="store_true", help="runtime policy with an LSTM across layers")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--no-calibrate", action="store_true",
                   help="deploy the runtime agent's ratios as they are, without the shift onto the budget")
    for name in ("lr-runtime", "lr-static", "lr-finetune", "beta-f", "eta-f", "beta-p", "lam", "p-max"):
        p.add_argument(f"--{name}", type=float, default=getattr(RunConfig, name.replace("-", "_")))
    args = p.parse_args(argv)
    if args.iterations < 1:
        raise UsageError(f"--iterations must be at least 1, got {args.iterations}")
    if args.num_env_runners < 0:
        raise UsageError(f"--num-env-runners must be 0 or more, got {args.num_env_runners}")
    if not 0.0 <= args.lam <= 1.0:
        raise UsageError(f"--lam must be in [0, 1], got {args.lam}")
    if not 0.0 < args.p_max < 1.0:
        raise UsageError(f"--p-max must be in (0, 1), got {args.p_max}")
    check_dataset_and_model(args.dataset, args.model, args.data_dir)
    out = args.out or os.path.join("runs", f"{args.dataset}-{args.model}-{args.budget:g}-s{args.seed}")
    cfg = RunConfig(dataset=args.dataset, model=args.model, budget=args.budget, param_budget=args.param_budget,
                    iterations=args.iterations, seed=args.seed, data_dir=args.data_dir,
                    num_env_runners=args.num_env_runners, out=out, method=args.method,
                    fixed_ratios=args.fixed_ratios, lstm=args.lstm, lr_runtime=args.lr_runtime,
                    lr_static=args.lr_static, lr_finetune=args.lr_finetune, beta_f=args.beta_f, eta_f=args.eta_f,
                    beta_p=args.beta_p, lam=args.lam, p_max=args.p_max, calibrate=not args.no_calibrate)
    if args.resume:
        if not os.path.isfile(os.path.join(out, "checkpoint.pt")):
            raise UsageError(f"--resume: {out}/checkpoint.pt does not exist; run without --resume first")
        checkpoint.load(os.path.join(out, "checkpoint.pt"))  # a corrupt one fails here, before any compute
    return cfg, {"dense_only": args.dense_only, "resume": args.resume}


@guarded
def main(argv=None) -> int:
    cfg, flags = parse_args(argv)
    if flags["dense_only"]:
        splits = data.load(cfg.dataset, cfg.seed, cfg.data_dir)
        dense.pretrained(cfg.dataset, cfg.model, cfg.seed, splits, cfg.dense_epochs, log=log_to_stdout)
        return 0
    start = time.time()
    metrics = run(cfg, log=log_to_stdout, resume=flags["resume"])
    print(f"done in {time.time() - start:.0f}s: test accuracy {metrics['accuracy']:.4f}, "
          f"macs ratio {metrics['macs_ratio']:.4f}, params ratio {metrics['params_ratio']:.4f}, "
          f"score {metrics['score']:.4f}; results in {os.path.join(cfg.out, 'metrics.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
