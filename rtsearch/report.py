"""Sweep results: `python -m rtsearch.report <results-dir>/<name>` regenerates summary.md, summary.json
and pareto.png from what the sweep stored under <results-dir>/<name>/ (rtsearch.search.summary)."""
from __future__ import annotations

import os
import sys

from rtsearch.cli import ArgumentParser, guarded
from rtsearch.errors import UsageError
from rtsearch.search.summary import write


@guarded
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m rtsearch.report", description=__doc__.splitlines()[0])
    p.add_argument("results", help="a sweep's results folder, <results-dir>/<name>")
    args = p.parse_args(argv)
    if not os.path.isdir(args.results):
        raise UsageError(f"{args.results} is not a folder: pass <results-dir>/<name> of a sweep")
    summary = write(args.results)
    print(f"wrote {', '.join(os.path.join(args.results, f) for f in ('summary.md', 'summary.json', 'pareto.png'))} "
          f"({sum(len(sw['trials']) for sw in summary['sweeps'].values())} trials)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
