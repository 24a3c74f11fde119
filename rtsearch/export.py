"""Write the storage-reduced deployable model of a checkpoint:
`python -m rtsearch.export --checkpoint CKPT --out FILE` (the surgery is rtsearch.net.export)."""
from __future__ import annotations

from rtsearch.cli import ArgumentParser, guarded
from rtsearch.errors import UsageError
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.export import export


@guarded
def main(argv=None) -> None:
    parser = ArgumentParser(description="Write the storage-reduced deployable model of a checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by a run")
    parser.add_argument("--out", required=True, help="file to write the exported model to")
    args = parser.parse_args(argv)
    state = checkpoint.load(args.checkpoint)
    net = checkpoint.network_of(state, args.checkpoint)
    ratios = state.get("static_ratios") or [0.0] * net.num_layers
    if len(ratios) != net.num_layers:
        raise UsageError(f"checkpoint {args.checkpoint} has {len(ratios)} static ratios for "
                         f"{net.num_layers} layers: pass the checkpoint.pt a run wrote")
    try:
        result = export(net, ratios, args.out)
    except OSError as e:
        raise UsageError(f"cannot write {args.out} ({e.strerror or e}): pass a writable --out path") from None
    dense = CostModel(net).dense_params
    print(f"exported {args.out}: params {result['params']} (params ratio {result['params'] / dense:.4f} "
          f"of {dense} dense), bytes {result['bytes']}, widths {result['widths']}")


if __name__ == "__main__":
    main()
