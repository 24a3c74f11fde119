"""Benchmarks: `python -m rtsearch.bench --sampling | --scaling [--network MODEL:C,H,W] | --latency`.

Rollout throughput of the runtime agent on the real env against a no-op env with the same RLlib
set-up, per number of env runners, and optionally the training loop's and a backbone's costs
(rtsearch.bench_sampling; results/sampling.md, results/scaling.md).

    python -m rtsearch.bench --sampling [--dataset mnist5k] [--model small] [--seconds 20]
    python -m rtsearch.bench --scaling          # the same for --num-env-runners 0 1 2

`--latency` times the deployed model (skip path) against dense, static-only and the masked reference,
with the MACs ratio beside each latency ratio (rtsearch.bench_latency; results/latency.md):

    python -m rtsearch.bench --latency [--checkpoint CKPT] [--batch-sizes 1,64] [--device cpu|cuda]

`--deployed RUN [RUN ...]` times finished runs' deployed.pt on their own test images (on the CPU unless `--device`
says otherwise) against the first run given (rtsearch.bench_deployed), e.g. a ladder run against the
Torch-Pruning L1 run at its budget:

    python -m rtsearch.bench --deployed RUN RUN ... [--batch-sizes 1,64] [--threads 1] [--device cpu|cuda]
        [--out FILE.md]

`--pareto` is the comparison users need: it trains (or reuses) the dense model, Torch-Pruning L1 at six budgets,
uniform static-only, the ladder and the two agents per backbone and seed, times each deployed model (one thread,
batch 1 and 64) and writes test accuracy against latency and stored bytes, each method's front, and each learned
point against Torch-Pruning L1 at equal latency (rtsearch.bench_pareto; results/pareto.md):

    python -m rtsearch.bench --pareto [--models small,mcifarnet] [--seeds 0,1,2] [--kinds ...] [--device cpu|cuda]
        [--out FILE.md]
    python -m rtsearch.bench --pareto --replot FILE.json     # its pictures drawn again, nothing timed
"""
from __future__ import annotations

import os
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
    p.add_argument("--latency", action="store_true", help="latency of the deployed model against its MACs")
    p.add_argument("--pareto", action="store_true",
                   help="train or reuse every method's runs and write accuracy against latency and stored bytes")
    p.add_argument("--models", default="small,mcifarnet", help="with --pareto: backbones, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="with --pareto: seeds, comma-separated")
    p.add_argument("--kinds", default=None, help="with --pareto: which runs, comma-separated (default: all of "
                                                 "dense, tp-l1, uniform, ladder, both)")
    p.add_argument("--method-budgets", default="0.15,0.08,0.05",
                   help="with --pareto: the MACs budgets of every kind but dense and tp-l1 (whose six are fixed)")
    p.add_argument("--no-train", action="store_true",
                   help="with --pareto: time only the runs already made; the report names the rest")
    p.add_argument("--train-only", action="store_true",
                   help="with --pareto: make the missing runs and stop (time them later, on a quiet machine)")
    p.add_argument("--replot", default=None, metavar="FILE.json",
                   help="with --pareto: draw the pictures again from the rows an earlier --pareto wrote to FILE.json, "
                        "beside it (nothing is made or timed)")
    p.add_argument("--runs-dir", default=os.path.join("runs", "pareto"),
                   help="with --pareto: where the runs are made and reused (default runs/pareto)")
    p.add_argument("--deployed", nargs="+", default=None, metavar="RUN",
                   help="time these run folders' deployed.pt on their own test images (uses --batch-sizes, "
                        "--threads, --runs, --out)")
    p.add_argument("--compiled", action="store_true",
                   help="with --deployed: also time each model's TorchScript form where it has one")
    p.add_argument("--checkpoint", default=None, help="with --latency: time this run's checkpoint.pt or best.pt")
    p.add_argument("--profile", action="store_true", help="with --latency or --deployed: instead of timing, list "
                                                          "where a call's time goes (per operator)")
    p.add_argument("--networks", nargs="+", default=["resnet56:3,32,32", "mcifarnet:3,32,32", "small:1,28,28"],
                   metavar="MODEL:C,H,W", help="with --latency and no --checkpoint: synthetic networks to time")
    p.add_argument("--budgets", default="0.5,0.15,0.08", help="with --latency: MACs budgets, comma-separated")
    p.add_argument("--batch-sizes", default="1,64", help="with --latency: batch sizes, comma-separated")
    p.add_argument("--batch-runtime-budgets", default=None,
                   help="with --latency: time the runtime rows at batch sizes above 1 only at these budgets "
                        "(default: every budget; dense and static-only are timed at every one)")
    p.add_argument("--device", default="cpu", help="with --latency, --deployed or --pareto: where to time, cpu, cuda "
                                                   "or auto")
    p.add_argument("--threads", default=None, help="with --latency: thread counts, comma-separated "
                                                   "(default: 1 and all)")
    p.add_argument("--runs", type=int, default=30, help="with --latency: timed runs per figure (at least 30)")
    p.add_argument("--out", default=None, help="write the measurements as JSON to this file (--latency: "
                                               "FILE.md and FILE.json)")
    args = p.parse_args(argv)
    if args.pareto:
        return check_pareto(args)
    if args.latency or args.deployed:
        return check_latency(args)
    if not (args.sampling or args.scaling):
        raise UsageError("nothing to measure: pass --sampling, --scaling or --latency")
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
        args.network = network_spec(args.network, "--network")
    return args


def network_spec(spec: str, flag: str) -> tuple[str, tuple]:
    """MODEL:C,H,W -> (model, (C, H, W))."""
    from rtsearch.net.models import MODELS
    name, _, shape = spec.partition(":")
    try:
        dims = tuple(int(v) for v in shape.split(","))
    except ValueError:
        dims = ()
    if name not in MODELS or len(dims) != 3 or min(dims) < 1:
        raise UsageError(f"{flag} {spec} is not MODEL:C,H,W with a known model: "
                         f"write e.g. resnet56:3,32,32 (models: {', '.join(MODELS)})")
    return name, dims


def numbers(text: str, flag: str, kind, low, high) -> list:
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(low <= v <= high for v in values):
        raise UsageError(f"{flag} {text!r} is not a comma-separated list of numbers in [{low}, {high}]: "
                         f"write e.g. {flag} {'0.5,0.15' if kind is float else '1,64'}")
    return values


def check_latency(args):
    """Every --latency input checked before any timing; a bad checkpoint is refused here too."""
    from rtsearch import device
    device.check(args.device)
    args.budgets = numbers(args.budgets, "--budgets", float, 1e-3, 1.0)
    args.batch_sizes = numbers(args.batch_sizes, "--batch-sizes", int, 1, 4096)
    if args.batch_runtime_budgets is not None:
        args.batch_runtime_budgets = numbers(args.batch_runtime_budgets, "--batch-runtime-budgets", float, 1e-3, 1.0)
    if args.threads is not None:
        args.threads = numbers(args.threads, "--threads", int, 1, 1024)
    args.networks = [network_spec(spec, "--networks") for spec in args.networks]
    if args.runs < 30:
        raise UsageError(f"--runs {args.runs}: the median and spread need at least 30 timed runs; pass --runs 30")
    if args.checkpoint:
        from rtsearch.deploy import deployed
        deployed.load(args.checkpoint)      # UsageError (exit 2) for a missing, corrupt or foreign file
    if args.deployed:
        from rtsearch import bench_deployed
        bench_deployed.check(args.deployed)
    return args


def check_pareto(args):
    """Every --pareto input checked before any run is made or timed."""
    from rtsearch.bench_pareto import KINDS, saved_rows
    if args.replot:
        saved_rows(args.replot)         # UsageError (exit 2) for a missing file or one --pareto did not write
        return args
    from rtsearch.net.models import MODELS
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if not args.models or unknown:
        raise UsageError(f"--models {','.join(unknown) or '(none)'}: not a backbone; choose from {', '.join(MODELS)}")
    args.seeds = numbers(args.seeds, "--seeds", int, 0, 2**32 - 1)
    args.method_budgets = numbers(args.method_budgets, "--method-budgets", float, 1e-3, 1.0)
    args.kinds = list(KINDS) if args.kinds is None else [k for k in args.kinds.split(",") if k]
    unknown = [k for k in args.kinds if k not in KINDS]
    if not args.kinds or unknown:
        raise UsageError(f"--kinds {','.join(unknown) or '(none)'}: choose from {', '.join(KINDS)}")
    if args.no_train and args.train_only:
        raise UsageError("--no-train and --train-only together do nothing: pass one of them")
    from rtsearch import device
    device.check(args.device)
    if "tp-l1" not in args.kinds:
        raise UsageError("--kinds must include tp-l1: every point is compared with Torch-Pruning L1's front")
    args.batch_sizes = numbers(args.batch_sizes, "--batch-sizes", int, 1, 4096)
    if args.runs < 30:
        raise UsageError(f"--runs {args.runs}: the median and spread need at least 30 timed runs; pass --runs 30")
    for model in args.models:
        check_dataset_and_model(args.dataset, model, args.data_dir)
    args.out = args.out or os.path.join("results", "pareto.md")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UsageError(f"--out {args.out}: its folder does not exist; create it or pass another --out")
    return args


def pareto(args, command: str) -> int:
    """--pareto: make, time and compare the runs, or (--replot) draw the pictures of an earlier comparison again."""
    from rtsearch import bench_pareto
    if args.replot:
        print(f"wrote {', '.join(bench_pareto.replot(args.replot))}")
        return 0
    try:
        bench_pareto.run(args, command)
    except bench_pareto.RunFailed as e:     # one line, never a traceback
        print(f"rtsearch.bench: error: {e}", file=sys.stderr)
        return 1
    return 0


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python -m rtsearch.bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.pareto:
        return pareto(args, command)
    if args.deployed and args.profile:
        from rtsearch import bench_deployed
        text = bench_deployed.profile(args.deployed, args.batch_sizes)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(f"    {command}\n\n{text}")
        return 0
    if args.deployed:
        from rtsearch import bench_deployed
        from rtsearch.device import resolve
        where = resolve(args.device)
        rows = bench_deployed.measure(args.deployed, args.batch_sizes, args.runs, args.threads or [1],
                                     args.compiled, where)
        text = bench_deployed.markdown(rows, command, where)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
            print(f"wrote {args.out}")
        else:
            print(text)
        return 0
    if args.latency:
        from rtsearch import bench_latency
        if args.profile:
            report = "".join(bench_latency.profile(name, shape, args.budgets, max(args.batch_sizes))
                             for name, shape in args.networks)
            print(report)
            if args.out:
                with open(args.out, "w") as f:
                    f.write(f"    {command}\n\n{report}")
            return 0
        bench_latency.measure(args, command)
        return 0
    from rtsearch.bench_sampling import measure
    measure(args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
