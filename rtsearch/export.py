"""Write the deployable model of a checkpoint.

`python -m rtsearch.export --checkpoint CKPT --out FILE` writes the storage-reduced model (the
surgery is rtsearch.net.export). With `--budget B` it writes the deployed model at that MACs budget
(static channels removed, the runtime agent choosing per input; a run trained with --budget-range
serves any B in its range without retraining): the calibration shift that puts the validation MACs
ratio on B is found on the validation split, and the test accuracy and MACs ratio at B are measured
and printed (rtsearch.rl.at_budget). A ladder run (`--method ladder`, the default) already deployed its model
(deployed.pt: its rungs and re-run policy): given any file of its folder, export writes that model to FILE.
"""
from __future__ import annotations

import os

from rtsearch.cli import ArgumentParser, fraction, guarded
from rtsearch.errors import UsageError
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.export import export
from rtsearch.storage import replacing


def save_model(model, out: str) -> None:
    """torch.save `model` to `out` whole or not at all; an unwritable `out` is a UsageError naming the fix."""
    import torch
    try:
        with replacing(out) as tmp:
            torch.save(model, tmp)
    except OSError as e:
        raise UsageError(f"cannot write {out} ({e.strerror or e}): pass a writable --out path") from None


def export_ladder(folder: str, budget: float | None, out: str) -> None:
    """A ladder run's deployed model, as its run measured it, written to `out`."""
    import json

    import torch
    try:
        trained = float(json.load(open(os.path.join(folder, "ladder.json")))["config"]["budget"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{folder}/ladder.json is not a ladder run's record ({e}): pass a file of a folder a "
                         f"ladder run wrote") from None
    if budget is not None and budget != trained:
        raise UsageError(f"{folder} holds a ladder run made for budget {trained:g}, which serves that budget only: "
                         f"drop --budget, or train a ladder at --budget {budget:g}")
    deployed = os.path.join(folder, "deployed.pt")
    metrics_path = os.path.join(folder, "metrics.json")
    if not (os.path.isfile(deployed) and os.path.isfile(metrics_path)):
        raise UsageError(f"{folder} holds a ladder run that has not finished (no deployed.pt or metrics.json): "
                         f"finish it with rtsearch.train --resume --out {folder}")
    try:
        model = torch.load(deployed, weights_only=False, map_location="cpu")      # our own pickle
        metrics = json.load(open(metrics_path))
    except Exception as e:      # a truncated or foreign file: torch and json raise many kinds
        raise UsageError(f"{deployed} or {metrics_path} cannot be read ({type(e).__name__}): finish the run again "
                         f"with rtsearch.train --resume --out {folder}") from None
    save_model(model, out)
    print(f"exported {out}: the ladder of {folder} at budget {trained:g}: {len(model.rungs)} rungs and its re-run "
          f"policy, params ratio {metrics['params_ratio']:.4f}, bytes {os.path.getsize(out)}; test accuracy "
          f"{metrics['accuracy']:.4f} at MACs ratio {metrics['macs_ratio']:.4f} (load with torch.load(FILE, "
          f"weights_only=False))")


def export_at_budget(path: str, budget: float, out: str) -> dict:
    """Put a run's runtime policy on `budget` (rtsearch.rl.at_budget: calibrated on validation, measured on
    test) and write its deployed model to `out`; returns the test figures."""
    from rtsearch.rl.at_budget import calibrated
    run, result = calibrated(path, budget)
    save_model(run.model(), out)
    return result


@guarded
def main(argv=None) -> None:
    parser = ArgumentParser(description="Write the deployable model of a checkpoint.")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint.pt or best.pt written by a run (a ladder run: any file of its folder)")
    parser.add_argument("--out", required=True, help="file to write the exported model to")
    parser.add_argument("--budget", type=fraction("--budget"), default=None,
                        help="write the deployed model at this MACs budget (a --budget-range run: any in its range)")
    args = parser.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.checkpoint))
    if os.path.isfile(os.path.join(folder, "ladder.json")):
        export_ladder(folder, args.budget, args.out)
        return
    state = checkpoint.load(args.checkpoint)
    net = checkpoint.network_of(state, args.checkpoint)
    ratios = state.get("static_ratios") or [0.0] * net.num_layers
    if len(ratios) != net.num_layers:
        raise UsageError(f"checkpoint {args.checkpoint} has {len(ratios)} static ratios for "
                         f"{net.num_layers} layers: pass the checkpoint.pt a run wrote")
    if args.budget is not None:
        result = export_at_budget(args.checkpoint, args.budget, args.out)
        print(f"exported {args.out}: the deployed model at budget {args.budget:g}: test accuracy "
              f"{result['accuracy']:.4f}, MACs ratio {result['macs_ratio']:.4f} (per input: std "
              f"{result['macs_ratio_std']:.4f}; calibration shift {result['shift']:+.4f})")
        return
    try:
        result = export(net, ratios, args.out)
    except OSError as e:
        raise UsageError(f"cannot write {args.out} ({e.strerror or e}): pass a writable --out path") from None
    dense = CostModel(net).dense_params
    print(f"exported {args.out}: params {result['params']} (params ratio {result['params'] / dense:.4f} "
          f"of {dense} dense), bytes {result['bytes']}, widths {result['widths']}")


if __name__ == "__main__":
    main()
