"""Entry script for a search on a Ray cluster:

    ray submit cluster/config.yaml cluster/search.py --budget 0.5 --num-samples 64 \
        --num-env-runners 4 --gpus-per-trial 1 --storage-path /mnt/shared/rtsearch

`ray submit` copies this file to the head node and runs it there with the cluster's Python. It
forwards every argument to `python -m rtsearch.tune` (see its --help), adding `--address auto`
(join the running cluster) unless an --address is given, and runs from the rtsearch checkout
that `ray up` uploaded (~/rtsearch), so results/<name>/ lands there (or from $RTSEARCH_WORKDIR). Also usable as a Ray job:
`ray job submit --working-dir . -- python cluster/search.py --budget 0.5 ...`.
"""
from __future__ import annotations

import os
import sys


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


def main(argv: list[str] | None = None) -> int:
    root = checkout()
    os.chdir(os.environ.get("RTSEARCH_WORKDIR") or root)
    sys.path.insert(0, root)
    from rtsearch.tune import main as tune_main
    return tune_main(forwarded(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
