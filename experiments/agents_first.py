"""The first agents study: `python -m experiments.agents_first` runs the learned runs and the fixed-ratio baselines
on mnist5k / small at budgets 0.5 to 0.08 and writes results/archive/agents-first.md (experiments.agents_study).
The learned methods against every peer at tight budgets are `python -m experiments.peers_study`
(results/agents.md)."""
from __future__ import annotations

import sys

from rtsearch.cli import ArgumentParser, guarded


@guarded
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m experiments.agents_first", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/study", help="folder for the runs (finished ones are reused)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.15, 0.08])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--param-budget", type=float, default=0.6)
    p.add_argument("--param-macs-budget", type=float, default=0.5)
    p.add_argument("--report", default="results/archive/agents-first.md")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    p.add_argument("--uncalibrated", default=None,
                   help="a --runs folder of learned runs made with --no-calibrate, reported beside")
    args = p.parse_args(argv)
    from experiments.agents_study import study
    study(args, ("python -m experiments.agents_first " + " ".join(argv if argv is not None else sys.argv[1:])).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
