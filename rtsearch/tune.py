"""The search: `python -m rtsearch.tune --budget 0.5 [--num-samples N] [--max-iterations N] ...`.

Ray Tune runs one trial per sampled configuration (Optuna TPE, or random with --search random),
ASHA stops weak trials early on the validation score, every trial is a `rtsearch.methods.run` that
reports and checkpoints each iteration, and MLflow records the sweep as a parent run with one
child run per trial. `--budget 0.3,0.5,0.7` runs one sweep per budget; `--front 0.03:0.3` searches the
budget with the other settings (Optuna's multi-objective sampler, no ASHA) and returns the front of
accuracy against deployed latency and stored bytes (rtsearch.search.front). Results land in
<results-dir>/<name>/ (summary.md, summary.json, pareto.png, trials/); `--resume` continues a sweep
that was interrupted, even by kill -9 of this driver. The driver itself is rtsearch.search.driver.
"""
from __future__ import annotations

import re
import sys
import time

from rtsearch import methods
from rtsearch.cli import ArgumentParser, add_config_flags, check_dataset_and_model, fraction, given_fields, guarded
from rtsearch.config import RunConfig, SweepConfig, check_bounds
from rtsearch.device import check as check_device
from rtsearch.device import local_gpus
from rtsearch.errors import UsageError
from rtsearch.rl.budgets import parse_range
from rtsearch.search import front as fronts
from rtsearch.search import space as spaces
from rtsearch.search.names import SEARCHES, budget_key
from rtsearch.search.selection import TOP_FEW


def parse_budgets(text: str) -> list[float]:
    parse = fraction("--budget")
    try:
        budgets = [parse(part.strip()) for part in text.split(",")]
    except Exception as e:
        raise UsageError(f"{e}; several budgets are comma-separated, e.g. --budget 0.3,0.5,0.7") from None
    if len(set(budgets)) != len(budgets):
        raise UsageError(f"--budget lists a budget twice ({text}): list each once")
    return budgets


def parser(prog: str = "python -m rtsearch.tune", description: str | None = None,
           texts: dict | None = None) -> ArgumentParser:
    """The command line, its flags generated from SweepConfig's fields (cluster/search.py shows it under its own
    name, description and `texts`, help texts by field name)."""
    p = ArgumentParser(prog=prog, description=description or __doc__.splitlines()[0])
    swept = methods.swept()
    add_config_flags(p, SweepConfig, texts={
        "method": f"what every trial runs (default {methods.DEFAULT}): " + "; ".join(
            f"{m}: {methods.get(m).summary}, searching search_spaces/{methods.get(m).space_file}" for m in swept),
        "max_iterations": "iterations of a trial that ASHA lets finish (default: " + ", ".join(
            f"{methods.get(m).sweep_iterations} {methods.get(m).iteration_field.replace('_', ' ')} for {m}"
            for m in swept) + ")",
        "holdout_share": f"share of the training split no trial sees; the top {TOP_FEW} trials by validation are "
                         f"re-evaluated there to name the best (0: validation alone)",
        "budget": SweepConfig.__dataclass_fields__["budget"].metadata["help"]
                  + "; required unless --budget-range, --front or --resume is given",
        "name": SweepConfig.__dataclass_fields__["name"].metadata["help"]
                + " (default <dataset>-<model>-b<budgets>, e.g. mnist5k-small-b0.3_0.5)",
        "space": "search space YAML: a path, or the name of a file in the shipped search_spaces/ (default: the "
                 "method's there)", **(texts or {})},
        choices={"method": swept, "search": SEARCHES}, types={"param_budget": fraction("--param-budget")})
    return p


def parse_args(argv=None) -> tuple[SweepConfig, list[float] | None, str]:
    """(the sweep's settings, its budgets, its name), every one checked before anything heavy is imported."""
    args = SweepConfig(**given_fields(parser().parse_args(argv), SweepConfig))
    check_bounds(args)
    if not args.resume:         # a resumed sweep keeps its stored method, iterations and space
        choose_method(args)
        if args.space is not None:
            args.space = spaces.resolve(args.space)
    budgets = sweep_budgets(args)
    check_resources(args)
    return args, budgets, sweep_name(args, budgets)


def choose_method(args: SweepConfig) -> None:
    """The method every trial runs (the default unless named) and its iterations; the trial settings given here
    (fixed ratios, a budget range) must be ones it uses."""
    chosen = args.method is not None
    args.method = args.method or methods.DEFAULT
    given = {name for name, on in (("fixed_ratios", args.fixed_ratios), ("budget_range", args.budget_range is not None))
             if on}
    methods.checked(RunConfig(method=args.method, fixed_ratios=args.fixed_ratios), given, chosen)
    if args.max_iterations is None:
        args.max_iterations = methods.get(args.method).sweep_iterations


def sweep_budgets(args: SweepConfig) -> list[float] | None:
    """The budgets swept, one sweep each (a range sweep, and a --front sweep, is keyed by the range's top); None for
    a resumed sweep that keeps its stored ones."""
    if args.front is not None:
        if args.budget is not None:
            raise UsageError("pass --budget or --front, not both: --front searches the budget in LO:HI, e.g. "
                             "--front 0.03:0.3")
        if args.budget_range is not None:
            raise UsageError("--front searches one budget per trial: drop --budget-range")
        args.front = list(fronts.parse_span(args.front))
        args.objectives = fronts.parse_objectives(args.objectives)
        args.budget = f"{args.front[1]:g}"
    elif args.objectives is not None:
        raise UsageError("--objectives says what a --front sweep trades: add --front LO:HI, or drop --objectives")
    if args.budget_range is not None:
        if args.budget is not None:
            raise UsageError("pass --budget or --budget-range, not both (a range sweep searches one model for all)")
        if args.fixed_ratios:
            raise UsageError("--budget-range searches a runtime agent for many budgets: drop --fixed-ratios")
        args.budget_range = list(parse_range(args.budget_range))
        args.budget = f"{args.budget_range[1]:g}"
    if args.budget is None and not args.resume:
        raise UsageError("--budget is required: pass e.g. --budget 0.5 (or --name NAME --resume to continue a sweep)")
    if args.budget is None and args.name is None:
        raise UsageError("--resume needs the sweep's --name (or the --budget it was started with): pass --name NAME")
    return parse_budgets(args.budget) if args.budget is not None else None


def check_resources(args: SweepConfig) -> None:
    """The device and GPUs asked for exist where the trials run (a cluster may have GPUs this machine has not)."""
    check_device(args.device, here=False)
    if args.device == "cuda" and args.gpus_per_trial <= 0:
        raise UsageError("--device cuda needs a GPU per trial: pass --gpus-per-trial 1 (or --device auto)")
    if args.address is None and not args.resume:
        if args.device == "cuda":
            check_device("cuda")
        if args.gpus_per_trial > local_gpus():
            raise UsageError(f"--gpus-per-trial {args.gpus_per_trial:g}: this machine has {local_gpus()} GPU(s) and "
                             f"no trial could ever start: lower it, or join a cluster with GPUs with --address")


def sweep_name(args: SweepConfig, budgets: list[float] | None) -> str:
    """--name, or <dataset>-<model>-b<budgets> (r<lo>_<hi> for a range, front<lo>_<hi> for a --front sweep)."""
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise UsageError(f"--name {args.name!r} may hold only letters, digits, '.', '_' and '-': pass e.g. --name "
                         f"sweep1")
    range_part = (f"r{args.budget_range[0]:g}_{args.budget_range[1]:g}" if args.budget_range
                  else f"front{args.front[0]:g}_{args.front[1]:g}" if args.front else None)
    return args.name or f"{args.dataset}-{args.model}-{range_part or 'b' + '_'.join(budget_key(b) for b in budgets)}"


@guarded
def main(argv=None) -> int:
    args, budgets, name = parse_args(argv)
    started = time.time()       # the sweep's one wall clock, from here to its closing lines (and summary.md)
    if not args.resume:
        check_dataset_and_model(args.dataset, args.model, args.data_dir)
    from rtsearch import bench_pareto            # how a --front sweep makes and times runs, as the bench does
    from rtsearch.search.driver import sweep      # imports Ray Tune: only after the arguments passed
    return sweep(args, budgets, name, sys.argv[1:] if argv is None else argv, started, bench=bench_pareto)


if __name__ == "__main__":
    sys.exit(main())
