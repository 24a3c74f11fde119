"""Benchmarks: `python -m rtsearch.bench --sampling | --scaling [--network MODEL:C,H,W]`.

Rollout throughput of the runtime agent on the real env against a no-op env with the same RLlib
set-up, per number of env runners, and optionally the training loop's and a backbone's costs
(rtsearch.studies.sampling; results/sampling.md, results/scaling.md).

    python -m rtsearch.bench --sampling [--dataset mnist5k] [--model small] [--seconds 20]
    python -m rtsearch.bench --scaling          # the same for --num-env-runners 0 1 2
"""
from __future__ import annotations

import shlex
import sys

from rtsearch.cli import ArgumentParser, check_dataset_and_model, guarded
from rtsearch.errors import UsageError


def parse_args(argv=None):
    p = ArgumentParser(prog="python -m rtsearch.bench", description=__doc__.splitlines()[0])
    p.add_argument("--sampling", action="store_true", help="real env vs no-op env throughput")
    p.add_argument("--scaling", action="store_true", help="the same with 0, 1 and 2 env runners")
    p.add_argument("--network", default=None, metavar="MODEL:C,H,W",
                   help="also time a backbone's per-image walk and training step on random inputs, e.g. "
                        "resnet56:3,32,32 (for projections to data not on this machine)")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="small")
    p.add_argument("--data-dir", default=None, help="folder of cifar10 / cifar100 / imagefolder data")
    p.add_argument("--num-env-runners", type=int, nargs="+", default=None)
    p.add_argument("--seconds", type=float, default=20.0, help="measuring time per figure")
    p.add_argument("--train-iterations", type=int, default=None,
                   help="also time K iterations of the real training loop (default 2 with --sampling, "
                        "0 with --scaling)")
    p.add_argument("--no-sample-only", action="store_true", help="skip the sampling-only figure")
    p.add_argument("--out", default=None, help="write the measurements as JSON to this file")
    args = p.parse_args(argv)
    if not (args.sampling or args.scaling):
        raise UsageError("nothing to measure: pass --sampling (or --scaling)")
    if args.num_env_runners is None:
        args.num_env_runners = [0, 1, 2] if args.scaling else [0]
    if any(n < 0 for n in args.num_env_runners):
        raise UsageError(f"--num-env-runners must be 0 or more, got {args.num_env_runners}")
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds:g}")
    if args.train_iterations is None:
        args.train_iterations = 0 if args.scaling and not args.sampling else 2
    check_dataset_and_model(args.dataset, args.model, args.data_dir)
    if args.network:
        from rtsearch.net.models import MODELS
        name, _, shape = args.network.partition(":")
        try:
            args.network = (name, tuple(int(v) for v in shape.split(",")))
        except ValueError:
            args.network = (name, ())
        if name not in MODELS or len(args.network[1]) != 3 or min(args.network[1]) < 1:
            raise UsageError(f"--network {name}:{shape} is not MODEL:C,H,W with a known model: "
                             f"write e.g. resnet56:3,32,32 (models: {', '.join(MODELS)})")
    return args


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    from rtsearch.studies.sampling import measure
    measure(args, "python -m rtsearch.bench " + shlex.join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
