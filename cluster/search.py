"""Entry script for a search on a Ray cluster:

    ray submit cluster/config.yaml cluster/search.py --budget 0.5 --num-samples 64 \
        --num-env-runners 4 --gpus-per-trial 1 --storage-path /mnt/shared/rtsearch

`ray submit` copies this file to the head node and runs it there with the cluster's Python. It
forwards every argument to `python -m rtsearch.tune`, adding `--address auto` (join the running
cluster) unless an --address is given, and runs from the rtsearch checkout that `ray up` uploaded
(~/rtsearch), so runs/sweeps/<name>/ (--results-dir) lands there (or from $RTSEARCH_WORKDIR); its --help says so
above rtsearch.tune's options. Also usable as a Ray job:
`ray job submit --working-dir . -- python cluster/search.py --budget 0.5 ...`.
"""
from __future__ import annotations

import os
import sys

DESCRIPTION = ("Runs `python -m rtsearch.tune` on the Ray cluster this runs in: every option below is rtsearch.tune's, "
               "and --address auto (join the running cluster) is added unless an --address is given. It runs in "
               "$RTSEARCH_WORKDIR if set, else in the rtsearch checkout (the working folder, the one above this "
               "script, or ~/rtsearch where `ray up` uploads it), and writes there: <results-dir>/<name>/ (default "
               "runs/sweeps/<name>/: summary.md, "
               "summary.json, pareto.png, trials/), the default MLflow store mlruns.db, and the Tune experiments "
               "under --storage-path (default runs/tune).")
ADDRESS = "Ray cluster address (default here: auto, the cluster this runs in)"


def checkout() -> str:
    """The rtsearch checkout to run in: the working folder (a Ray job's working dir), the folder
    above this script (run in place), or ~/rtsearch (where cluster/config.yaml uploads it)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.getcwd(), os.path.dirname(here), os.path.expanduser("~/rtsearch")):
        if os.path.isfile(os.path.join(folder, "rtsearch", "tune.py")):
            return folder
    sys.exit("cluster/search.py: error: no rtsearch checkout here, above this script or in ~/rtsearch: "
             "run `ray up cluster/config.yaml` from the checkout first")


def forwarded(argv: list[str]) -> list[str]:
    """The arguments for rtsearch.tune: these, plus --address auto unless one is given."""
    if any(a == "--address" or a.startswith("--address=") for a in argv):
        return list(argv)
    return list(argv) + ["--address", "auto"]


def asks_for_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = checkout()
    os.chdir(os.environ.get("RTSEARCH_WORKDIR") or root)
    sys.path.insert(0, root)
    if asks_for_help(argv):        # rtsearch.tune's options, under this script's name and what it adds
        from rtsearch.tune import parser
        parser(prog="cluster/search.py", description=DESCRIPTION, texts={"address": ADDRESS}).print_help()
        return 0
    from rtsearch.tune import main as tune_main
    return tune_main(forwarded(argv))


if __name__ == "__main__":
    sys.exit(main())
