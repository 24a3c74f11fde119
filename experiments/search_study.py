"""TPE against random search: `python -m experiments.search_study` runs the sweeps and writes
results/search.md (experiments.search_sweeps)."""
from __future__ import annotations

import sys

from rtsearch.cli import ArgumentParser, guarded


@guarded
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m experiments.search_study", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="small")
    p.add_argument("--method", default="both", help="the method whose default search space is swept")
    p.add_argument("--budget", type=float, default=0.15)
    p.add_argument("--param-budget", type=float, default=0.8, help="0: the method's own (no --param-budget passed)")
    p.add_argument("--num-samples", type=int, default=24)
    p.add_argument("--max-iterations", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--prefix", default="search", help="sweep names: <prefix>-<tpe|random>-s<seed>")
    p.add_argument("--report", default="results/search.md")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from finished sweeps")
    p.add_argument("--no-defaults", action="store_true",
                   help="leave out the section on the default sweep (results/search.md holds it)")
    args = p.parse_args(argv)
    from experiments.search_sweeps import produced_by, study
    args.command = " ".join(["python -m experiments.search_study",
                             *produced_by(sys.argv[1:] if argv is None else list(argv))])
    study(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
