"""Write the deployable model of a checkpoint.

`python -m rtsearch.export --checkpoint CKPT --out FILE` writes the storage-reduced model (the
surgery is rtsearch.net.surgery). With `--budget B` it writes the deployed model at that MACs budget
(static channels removed, the runtime agent choosing per input; a run trained with --budget-range
serves any B in its range without retraining): the calibration shift that puts the validation MACs
ratio on B is found on the validation split, and the test accuracy and MACs ratio at B are measured
and printed (rtsearch.deploy.at_budget). A ladder run (`--method ladder`, the default) already deployed its model
(deployed.pt: its rungs and re-run policy): given any file of its folder, export writes that model to FILE. The
run's manifest (run.json beside the checkpoint) names its method, which does the writing (rtsearch.methods).
"""
from __future__ import annotations

import os

from rtsearch import methods
from rtsearch.cli import ArgumentParser, fraction, guarded
from rtsearch.errors import UsageError


@guarded
def main(argv=None) -> None:
    parser = ArgumentParser(prog="python -m rtsearch.export", description="Write the deployable model of a checkpoint.")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint.pt or best.pt written by a run (a ladder run: any file of its folder)")
    parser.add_argument("--out", required=True, help="file to write the exported model to")
    parser.add_argument("--budget", type=fraction("--budget"), default=None,
                        help="write the deployed model at this MACs budget (a --budget-range run: any in its range)")
    args = parser.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.checkpoint))
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint} does not exist: pass the checkpoint.pt a run wrote")
    method = methods.of_folder(folder)
    print(method.export(folder, args.checkpoint, args.budget, args.out))


if __name__ == "__main__":
    main()
