"""One run: `python -m rtsearch.train --dataset mnist5k --model small --budget 0.5`.

Parses the command line into a RunConfig and calls rtsearch.rl.run.run: it starts from the cached
dense model, then by default runs the ladder (Torch-Pruning L1 networks at several budgets and a learned
per-input choice of re-running an input on a dearer one, docs/method.md §5); `--method both` runs the
training iteration with both agents, `--fixed-ratios` fine-tunes under uniform ratios (the baselines).
"""
from __future__ import annotations

import json
import os
import sys
import time

from rtsearch import data, device
from rtsearch.cli import (ArgumentParser, check_dataset_and_model, check_holdout_share, fraction, guarded,
                          refuse_for_ladder)
from rtsearch.config import DEFAULT_METHOD, METHODS, RunConfig
from rtsearch.errors import UsageError
from rtsearch.logs import log_to_stdout
from rtsearch.net import checkpoint, dense
from rtsearch.rl import budgets
from rtsearch.rl.run import run


def parse_args(argv=None) -> tuple[RunConfig, dict]:
    p = ArgumentParser(prog="python -m rtsearch.train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="small")
    p.add_argument("--budget", type=fraction("--budget"), default=None,
                   help="MACs budget, fraction of dense MACs (default 0.5)")
    p.add_argument("--budget-range", default=None, metavar="LO:HI",
                   help="train one runtime agent for every budget in LO:HI (choose the budget at export time)")
    p.add_argument("--param-budget", type=fraction("--param-budget"), default=1.0,
                   help="parameter budget, fraction of dense parameters (with --method ladder: what its rungs and policy may store)")
    p.add_argument("--iterations", type=int, default=10,
                   help="training iterations (with --method ladder: each rung's fine-tuning iterations)")
    p.add_argument("--agent-iterations", type=int, default=RunConfig.agent_iterations,
                   help="--method ladder: PPO iterations of the re-run agent, each scored on validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--num-env-runners", type=int, default=0,
                   help="RLlib rollout workers, 1 CPU each (the agents'; with --method ladder, its re-run agent's)")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<model>-<budget>-s<seed>)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="what is learned: ladder (the default: Torch-Pruning L1 networks at several MACs budgets and "
                        "a learned per-input choice of re-running an input on a dearer one), both agents, or one of "
                        "them")
    p.add_argument("--fixed-ratios", action="store_true", help="uniform ratios instead of agents (baseline)")
    p.add_argument("--torch-pruning-l1", action="store_true",
                   help="with --fixed-ratios --method static-only: choose the pruned channels by Torch-Pruning's "
                        "L1 magnitude pruner instead of the network's static importance (a peer)")
    p.add_argument("--dense-only", action="store_true", help="only train and cache the dense model")
    p.add_argument("--lstm", action="store_true", help="runtime policy with an LSTM across layers")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one, else the CPU) | cpu | cuda")
    p.add_argument("--dense-epochs", type=int, default=None,
                   help="dense pre-training epochs (default: the dataset's recipe, 164 for CIFAR, 15 otherwise)")
    p.add_argument("--finetune", choices=("greedy", "sandwich"), default=None,
                   help="fine-tune under the agents' greedy ratios, or over widest, narrowest and explored widths "
                        "(default: sandwich with --budget-range, else greedy)")
    p.add_argument("--explore-std", type=float, default=None,
                   help="sandwich: noise on the agent's runtime ratios in its explored fine-tuning path "
                        "(default: 0.05 with --budget-range, else 0.15)")
    p.add_argument("--agent-share", type=float, default=RunConfig.agent_share,
                   help="share of the training split kept out of fine-tuning for the agents' rewards")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune with knowledge distillation from the dense model, learned and fixed-ratio runs alike")
    p.add_argument("--holdout-share", type=float, default=RunConfig.holdout_share,
                   help="share of the training split that no phase touches (as a sweep keeps it for re-ranking)")
    p.add_argument("--finetune-epochs", type=int, default=RunConfig.finetune_epochs,
                   help="fine-tuning passes over the training split per iteration")
    p.add_argument("--no-calibrate", action="store_true",
                   help="deploy the runtime agent's ratios as they are, without the shift onto the budget")
    p.add_argument("--calibration-images", type=int, default=RunConfig.calibration_images,
                   help="validation images the shift onto the budget is found on (0: the whole split)")
    for name in ("lr-runtime", "lr-static", "lr-finetune", "beta-f", "eta-f", "beta-p", "lam", "p-max"):
        p.add_argument(f"--{name}", type=float, default=getattr(RunConfig, name.replace("-", "_")))
    p.add_argument("--lr-rerun", type=float, default=RunConfig.lr_rerun,
                   help="--method ladder: its re-run agent's PPO learning rate")
    p.add_argument("--entropy-rerun", type=float, default=RunConfig.entropy_rerun,
                   help="--method ladder: its re-run agent's PPO entropy coefficient")
    p.add_argument("--rerun-width", type=int, default=RunConfig.rerun_width,
                   help="--method ladder: the width of its re-run policy's two hidden layers (its parameters are "
                        "stored and counted)")
    args = p.parse_args(argv)
    chosen = args.method is not None
    args.method = args.method or DEFAULT_METHOD
    if args.torch_pruning_l1 and not (args.fixed_ratios and args.method == "static-only"):
        raise UsageError("--torch-pruning-l1 is a static-only baseline: pass it with --fixed-ratios --method static-only")
    budget_range = None
    if args.budget_range is not None:
        if args.budget is not None:
            raise UsageError("pass --budget or --budget-range, not both (a range run serves every budget in it)")
        if args.fixed_ratios or args.method == "static-only":
            raise UsageError("--budget-range trains a runtime agent for many budgets: drop --fixed-ratios and "
                             "--method static-only")
        budget_range = list(budgets.parse_range(args.budget_range))
        args.budget = budget_range[1]
    elif args.budget is None:
        args.budget = 0.5
    if args.method == "ladder":
        check_ladder(args, chosen)
    else:
        for flag, given in flags_given(args, ("lr_rerun", "entropy_rerun", "rerun_width")):
            if given:
                raise UsageError(f"{flag} sets the ladder's re-run agent: pass --method ladder, or drop it")
    for flag, value in (("--iterations", args.iterations), ("--agent-iterations", args.agent_iterations),
                        ("--rerun-width", args.rerun_width)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.num_env_runners < 0:
        raise UsageError(f"--num-env-runners must be 0 or more, got {args.num_env_runners}")
    if not 0 <= args.seed < 2 ** 32:
        raise UsageError(f"--seed must be in [0, 2**32), got {args.seed}: pass e.g. --seed 0")
    for name in ("lr_runtime", "lr_static", "lr_finetune", "lr_rerun"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name):g}")
    for name in ("beta_f", "eta_f", "beta_p", "entropy_rerun"):
        if not getattr(args, name) >= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name):g}")
    device.check(args.device)
    if args.dense_epochs is not None and args.dense_epochs < 1:
        raise UsageError(f"--dense-epochs must be at least 1, got {args.dense_epochs}")
    if not 0.0 <= args.agent_share < 1.0:
        raise UsageError(f"--agent-share must be in [0, 1), got {args.agent_share:g}")
    if args.explore_std is not None and not args.explore_std >= 0:
        raise UsageError(f"--explore-std must be 0 or more, got {args.explore_std:g}")
    check_holdout_share(args.holdout_share)
    if args.calibration_images < 0:
        raise UsageError(f"--calibration-images must be 0 (the whole split) or more, got {args.calibration_images}")
    if args.finetune_epochs < 1:
        raise UsageError(f"--finetune-epochs must be at least 1, got {args.finetune_epochs}")
    if not 0.0 <= args.lam <= 1.0:
        raise UsageError(f"--lam must be in [0, 1], got {args.lam}")
    if not 0.0 < args.p_max < 1.0:
        raise UsageError(f"--p-max must be in (0, 1), got {args.p_max}")
    check_dataset_and_model(args.dataset, args.model, args.data_dir)
    out = args.out or default_out(args)
    cfg = RunConfig(dataset=args.dataset, model=args.model, budget=args.budget, param_budget=args.param_budget,
                    iterations=args.iterations, seed=args.seed, data_dir=args.data_dir,
                    num_env_runners=args.num_env_runners, out=out, method=args.method,
                    fixed_ratios=args.fixed_ratios, torch_pruning_l1=args.torch_pruning_l1, lstm=args.lstm, lr_runtime=args.lr_runtime,
                    lr_static=args.lr_static, lr_finetune=args.lr_finetune, beta_f=args.beta_f, eta_f=args.eta_f,
                    beta_p=args.beta_p, lam=args.lam, p_max=args.p_max, calibrate=not args.no_calibrate,
                    finetune_epochs=args.finetune_epochs, finetune=args.finetune, explore_std=args.explore_std,
                    agent_share=args.agent_share, dense_epochs=args.dense_epochs, device=args.device,
                    calibration_images=args.calibration_images, budget_range=budget_range,
                    holdout_share=args.holdout_share, distill=args.distill, agent_iterations=args.agent_iterations,
                    lr_rerun=args.lr_rerun, entropy_rerun=args.entropy_rerun, rerun_width=args.rerun_width)
    if args.resume:
        check_resumable(cfg)
    return cfg, {"dense_only": args.dense_only, "resume": args.resume}


def flags_given(args, names) -> list[tuple[str, bool]]:
    """(flag, whether it was set away from its RunConfig default) for each RunConfig field in `names`."""
    return [(f"--{name.replace('_', '-')}", getattr(args, name) != getattr(RunConfig, name)) for name in names]


def check_ladder(args, chosen: bool) -> None:
    """--method ladder makes its own fixed-ratio rungs and trains one feed-forward re-run agent."""
    agents_settings = flags_given(args, ("lr_runtime", "lr_static", "beta_f", "eta_f", "beta_p", "p_max",
                                         "calibration_images"))
    refuse_for_ladder((("--fixed-ratios", args.fixed_ratios), ("--budget-range", args.budget_range is not None),
                       ("--lstm", args.lstm), ("--no-calibrate", args.no_calibrate), *agents_settings),
                      "it has neither the runtime nor the static agent: its rungs are Torch-Pruning L1 runs and its "
                      "re-run agent one feed-forward policy", chosen)


def default_out(args) -> str:
    """runs/<dataset>-<model>-<budget>[-p<param budget>]-<method>[-fixed]-s<seed>: a baseline and a
    learned run, or two methods, never share a folder."""
    parts = [args.dataset, args.model, f"r{args.budget_range.replace(':', '-')}" if args.budget_range else f"{args.budget:g}"]
    if args.param_budget < 1.0:
        parts.append(f"p{args.param_budget:g}")
    parts.append(args.method + ("-fixed" if args.fixed_ratios else "") + ("-l1" if args.torch_pruning_l1 else "")
                 + ("-kd" if args.distill else ""))
    return os.path.join("runs", "-".join(parts) + f"-s{args.seed}")


def check_resumable(cfg: RunConfig) -> None:
    """--resume continues the run in cfg.out, whatever its kind, only if it is the same kind of run. A ladder run
    reads its rungs back and trains its agent again, so it may do so under another parameter budget."""
    path = os.path.join(cfg.out, "ladder.json" if cfg.method == "ladder" else "checkpoint.pt")
    if not os.path.isfile(path):
        raise UsageError(f"--resume: {path} does not exist; run without --resume first")
    stored = stored_config(path)        # a corrupt one fails here, before any compute
    for key in ("fixed_ratios", "torch_pruning_l1", "method", "dataset", "model", "budget", "budget_range", "param_budget", "seed",
                "finetune", "distill", "agent_share", "holdout_share"):
        if key == "param_budget" and cfg.method == "ladder":
            continue
        if key in stored and stored[key] != getattr(cfg, key):
            raise UsageError(f"--resume: {cfg.out} holds a run with {key} {stored[key]!r}, not {getattr(cfg, key)!r}: "
                             f"pass the same flags as that run, or another --out")


def stored_config(path: str) -> dict:
    """The config a run stored: in its checkpoint, or in a ladder run's ladder.json."""
    if not path.endswith(".json"):
        return checkpoint.load(path).get("config") or {}
    try:
        with open(path) as f:
            return json.load(f)["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--resume: {path} is not a ladder run's record; run without --resume, or pass another --out") from None


@guarded
def main(argv=None) -> int:
    cfg, flags = parse_args(argv)
    if flags["dense_only"]:
        splits = data.load(cfg.dataset, cfg.seed, cfg.data_dir)
        dense.pretrained(cfg.dataset, cfg.model, cfg.seed, splits, cfg.dense_epochs, log=log_to_stdout,
                         device=device.resolve(cfg.device))
        return 0
    start = time.time()
    metrics = run(cfg, log=log_to_stdout, resume=flags["resume"])
    print(f"done in {time.time() - start:.0f}s: test accuracy {metrics['accuracy']:.4f}, "
          f"macs ratio {metrics['macs_ratio']:.4f}, params ratio {metrics['params_ratio']:.4f}, "
          f"score {metrics['score']:.4f}; results in {os.path.join(cfg.out, 'metrics.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
