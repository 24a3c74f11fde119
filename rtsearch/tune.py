"""The search: `python -m rtsearch.tune --budget 0.5 [--num-samples N] [--max-iterations N] ...`.

Ray Tune runs one trial per sampled configuration (Optuna TPE, or random with --search random),
ASHA stops weak trials early on the validation score, every trial is a `rtsearch.methods.run` that
reports and checkpoints each iteration, and MLflow records the sweep as a parent run with one
child run per trial. `--budget 0.3,0.5,0.7` runs one sweep per budget. Results land in
results/<name>/ (summary.md, summary.json, pareto.png, trials/); `--resume` continues a sweep
that was interrupted, even by kill -9 of this driver. The driver itself is rtsearch.search.driver.
"""
from __future__ import annotations

import re
import sys

from rtsearch import methods
from rtsearch.cli import ArgumentParser, check_dataset_and_model, check_holdout_share, fraction, guarded
from rtsearch.config import RunConfig
from rtsearch.device import check as check_device
from rtsearch.device import local_gpus
from rtsearch.errors import UsageError
from rtsearch.rl.budgets import parse_range
from rtsearch.search.names import SEARCHES, budget_key
from rtsearch.search.selection import HOLDOUT_SHARE, TOP_FEW


def parse_budgets(text: str) -> list[float]:
    parse = fraction("--budget")
    try:
        budgets = [parse(part.strip()) for part in text.split(",")]
    except Exception as e:
        raise UsageError(f"{e}; several budgets are comma-separated, e.g. --budget 0.3,0.5,0.7") from None
    if len(set(budgets)) != len(budgets):
        raise UsageError(f"--budget lists a budget twice ({text}): list each once")
    return budgets


def parse_args(argv=None):
    import argparse
    p = ArgumentParser(prog="python -m rtsearch.tune", description=__doc__.splitlines()[0])
    p.add_argument("--budget", default=None,
                   help="MACs budget(s), fractions of the dense MACs: 0.5 or 0.3,0.5,0.7 (with --resume: the stored ones)")
    p.add_argument("--budget-range", default=None, metavar="LO:HI",
                   help="search one model for every budget in LO:HI (rtsearch.train --budget-range); trials "
                        "are scored by the mean over its evaluation budgets")
    p.add_argument("--param-budget", type=fraction("--param-budget"), default=None,
                   help="fix the parameter budget (otherwise searched if the space has param_budget, else 1)")
    p.add_argument("--space", default=None,
                   help="search space YAML (default: the method's, " + ", ".join(
                       f"search_spaces/{methods.get(m).space_file} for {m}" for m in methods.swept()) + ")")
    p.add_argument("--num-samples", type=int, default=8, help="trials per budget")
    p.add_argument("--method", choices=methods.swept(), default=None,
                   help=f"what every trial runs (default {methods.DEFAULT}): " + "; ".join(
                       f"{m}: {methods.get(m).summary}" for m in methods.swept()))
    p.add_argument("--max-iterations", type=int, default=None,
                   help="iterations of a trial that ASHA lets finish (default: " + ", ".join(
                       f"{methods.get(m).sweep_iterations} {methods.get(m).iteration_field.replace('_', ' ')} for {m}"
                       for m in methods.swept()) + ")")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="small")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default sqlite:///mlruns.db here)")
    p.add_argument("--name", default=None, help="sweep name: results/<name>/, MLflow experiment <name>")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray on this machine)")
    p.add_argument("--search", choices=SEARCHES, default="tpe")
    p.add_argument("--holdout-share", type=float, default=HOLDOUT_SHARE,
                   help=f"share of the training split no trial sees; the top {TOP_FEW} trials by validation are "
                        f"re-evaluated there to name the best (0: validation alone; default {HOLDOUT_SHARE})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-defaults-first", action="store_true",
                   help="do not start from the run's defaults (rtsearch.train's values of the searched keys)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the fixed-ratio static-only run that each budget's best trial is set against")
    p.add_argument("--num-env-runners", type=int, default=0, help="RLlib rollout workers per trial (1 CPU each)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs each trial reserves (with --device auto|cuda)")
    p.add_argument("--device", default="auto", help="auto (the trial's GPU if it has one, else the CPU) | cpu | cuda")
    p.add_argument("--storage-path", default=None,
                   help="Tune experiment folder, shared by the nodes of a cluster (default runs/tune)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at a time (default: as resources allow)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all of this machine)")
    # hidden: tests and baselines
    p.add_argument("--fixed-ratios", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dense-epochs", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fail-on-iteration", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--nan-on-iteration", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.resume:         # a resumed sweep keeps its stored method and iterations
        chosen = args.method is not None
        args.method = args.method or methods.DEFAULT
        check_method_flags(args, chosen)
        if args.max_iterations is None:
            args.max_iterations = methods.get(args.method).sweep_iterations

    if args.budget_range is not None:
        if args.budget is not None:
            raise UsageError("pass --budget or --budget-range, not both (a range sweep searches one model for all)")
        if args.fixed_ratios:
            raise UsageError("--budget-range searches a runtime agent for many budgets: drop --fixed-ratios")
        args.budget_range = list(parse_range(args.budget_range))
        args.budget = f"{args.budget_range[1]:g}"     # the sweep is keyed by the range's top
    if args.budget is None and not args.resume:
        raise UsageError("--budget is required: pass e.g. --budget 0.5 (or --name NAME --resume to continue a sweep)")
    if args.budget is None and args.name is None:
        raise UsageError("--resume needs the sweep's --name (or the --budget it was started with): pass --name NAME")
    budgets = parse_budgets(args.budget) if args.budget is not None else None
    check_holdout_share(args.holdout_share)
    if not 0 <= args.seed < 2 ** 32:
        raise UsageError(f"--seed must be in [0, 2**32), got {args.seed}: pass e.g. --seed 0")
    for flag, value, low in (("--num-samples", args.num_samples, 1), ("--max-iterations", 1 if args.max_iterations is None else args.max_iterations, 1),
                             ("--num-env-runners", args.num_env_runners, 0), ("--max-failures", args.max_failures, 0),
                             ("--gpus-per-trial", args.gpus_per_trial, 0)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value:g}")
    for flag, value in (("--max-concurrent", args.max_concurrent), ("--num-cpus", args.num_cpus),
                        ("--dense-epochs", args.dense_epochs)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    check_device(args.device, here=False)
    if args.device == "cuda" and args.gpus_per_trial <= 0:
        raise UsageError("--device cuda needs a GPU per trial: pass --gpus-per-trial 1 (or --device auto)")
    if args.address is None and not args.resume:   # a cluster may have GPUs (or add them) where this machine has none
        if args.device == "cuda":
            check_device("cuda")
        if args.gpus_per_trial > local_gpus():
            raise UsageError(f"--gpus-per-trial {args.gpus_per_trial:g}: this machine has {local_gpus()} GPU(s) and "
                             f"no trial could ever start: lower it, or join a cluster with GPUs with --address")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise UsageError(f"--name {args.name!r} may hold only letters, digits, '.', '_' and '-': pass e.g. --name sweep1")
    range_part = f"r{args.budget_range[0]:g}_{args.budget_range[1]:g}" if args.budget_range else None
    name = args.name or f"{args.dataset}-{args.model}-{range_part or 'b' + '_'.join(budget_key(b) for b in budgets)}"
    return args, budgets, name


def check_method_flags(args, chosen: bool) -> None:
    """The trial settings given here (fixed ratios, a budget range) must be ones the sweep's method uses."""
    given = {name for name, on in (("fixed_ratios", args.fixed_ratios), ("budget_range", args.budget_range is not None))
             if on}
    methods.checked(RunConfig(method=args.method, fixed_ratios=args.fixed_ratios), given, chosen)


@guarded
def main(argv=None) -> int:
    args, budgets, name = parse_args(argv)
    if not args.resume:
        check_dataset_and_model(args.dataset, args.model, args.data_dir)
    from rtsearch.search.driver import sweep      # imports Ray Tune: only after the arguments passed
    return sweep(args, budgets, name, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
