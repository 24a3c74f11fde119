"""Export: physically removing statically pruned channels changes storage, never the outputs."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import assert_usage_error, run_main
from rtsearch.config import RunConfig
from rtsearch.methods.base import write_manifest
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.surgery import export, prune_static
from rtsearch.net.models import build_model

CASES = [("small", (1, 28, 28)), ("resnet20", (3, 32, 32))]


def randomised(name, shape):
    """A net whose BN statistics, importances and predictors are random, so that equality is not trivial."""
    torch.manual_seed(0)
    net = build_model(name, shape)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        for g in net.gates:
            g.static_importance.normal_()
            g.predictor.weight.normal_(0, 1.0)
    return net.eval()


def mixed_ratios(layers):
    return [(0.5, 0.25, 0.0, 0.6)[t % 4] for t in range(layers)]


@pytest.mark.parametrize("name,shape", CASES)
def test_exported_outputs_equal_masked(tmp_path, name, shape):
    net = randomised(name, shape)
    ratios = mixed_ratios(net.num_layers)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = tmp_path / "exported.pt"
    result = export(net, ratios, str(out))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # caller's net untouched

    exported = checkpoint.network(checkpoint.load(str(out))).eval()
    x = torch.randn(16, *shape)
    runtime = torch.full((net.num_layers,), 0.3)
    with torch.no_grad():
        y_masked, walk_masked = net.forward_walk(x, ratios, runtime)
        y_export, walk_export = exported.forward_walk(x, None, runtime)
    assert (y_masked - y_export).abs().max().item() < 1e-4
    assert walk_masked.static_kept.tolist() == result["widths"] == exported.widths
    assert torch.equal(walk_masked.runtime_kept, walk_export.runtime_kept)
    assert result["widths"] != net.widths


def test_storage_falls_with_static_ratio(tmp_path):
    net = build_model("small", (1, 28, 28))
    dense = sum(p.numel() for p in net.parameters())
    results = [export(net, [r] * net.num_layers, str(tmp_path / f"{r}.pt")) for r in (0.0, 0.25, 0.5, 0.75)]
    params, sizes = [r["params"] for r in results], [r["bytes"] for r in results]
    assert params[0] == dense
    assert all(a > b for a, b in zip(params, params[1:]))
    assert all(a > b for a, b in zip(sizes, sizes[1:]))
    assert params[2] <= 0.35 * dense


@pytest.mark.parametrize("name,shape", CASES)
def test_params_match_cost_model(tmp_path, name, shape):
    net = randomised(name, shape)
    ratios = mixed_ratios(net.num_layers)
    result = export(net, ratios, str(tmp_path / "exported.pt"))
    kept = torch.stack([g.static_keep(r).sum() for g, r in zip(net.gates, ratios)])
    assert result["params"] == CostModel(net).params(kept)


@pytest.mark.parametrize("name,shape", CASES)
@pytest.mark.parametrize("static_only", [False, True])
def test_exported_model_macs_equal_torch_flop_counter(tmp_path, name, shape, static_only):
    # The MACs a run reports for its static keep sets are what the exported model really computes with
    # every (statically kept) channel on; a static-only model drops its predictors and their MACs.
    from torch.utils.flop_counter import FlopCounterMode
    net = randomised(name, shape)
    ratios = mixed_ratios(net.num_layers)
    cost = CostModel(net, predictors=not static_only)
    result = export(net, ratios, str(tmp_path / "exported.pt"), drop_predictors=static_only)
    exported = checkpoint.network(checkpoint.load(str(tmp_path / "exported.pt"))).eval()
    assert (exported.gates[0].predictor is None) == static_only
    kept = torch.as_tensor(result["widths"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        exported(torch.zeros(1, *shape))
    assert 2 * int(cost.macs(kept[None, :], kept)[0]) == counter.get_total_flops()
    assert result["params"] == cost.params(kept) == sum(p.numel() for p in exported.parameters())
    if static_only:   # the dense reference keeps the predictors: dropping them shows in both ratios
        assert cost.dense_macs == CostModel(net).dense_macs and cost.dense_params == CostModel(net).dense_params
        assert cost.macs(cost.widths[None, :], cost.widths)[0] < cost.dense_macs


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rtsearch.export", *args], capture_output=True, text=True)


def test_cli_exports_and_reloads(tmp_path):
    net = randomised("small", (1, 28, 28))
    ckpt, out = tmp_path / "checkpoint.pt", tmp_path / "model.pt"
    checkpoint.save(str(ckpt), net, static_ratios=[0.5] * net.num_layers)
    write_manifest(RunConfig(method="static-only", out=str(tmp_path)))        # the run.json a run writes first
    proc = run_cli("--checkpoint", str(ckpt), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "params" in proc.stdout and "bytes" in proc.stdout
    exported = checkpoint.network(checkpoint.load(str(out)))
    assert exported.widths == [8, 16, 16, 32, 32]
    assert str(sum(p.numel() for p in exported.parameters())) in proc.stdout


@pytest.mark.parametrize("kind", ["corrupt", "missing"])
def test_cli_bad_checkpoint(tmp_path, kind):
    ckpt = tmp_path / "checkpoint.pt"
    write_manifest(RunConfig(method="both", out=str(tmp_path)))
    if kind == "corrupt":
        ckpt.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    proc = run_main("rtsearch.export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "model.pt"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("corrupt" if kind == "corrupt" else "does not exist") in proc.stderr
    assert not (tmp_path / "model.pt").exists()


def test_a_run_folder_without_a_manifest_is_refused(tmp_path):
    net = randomised("small", (1, 28, 28))
    checkpoint.save(str(tmp_path / "checkpoint.pt"), net, static_ratios=[0.5] * net.num_layers)
    assert_usage_error(run_main("rtsearch.export", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--out",
                                str(tmp_path / "x.pt")), "run.json", "not a run folder")


def test_prune_static_works_under_no_grad():
    net = build_model("small").eval()
    with torch.no_grad():
        pruned = prune_static(net, [0.5] * net.num_layers)
    assert pruned.widths == [8, 16, 16, 32, 32]


@pytest.mark.parametrize("kind", ["corrupt record", "unfinished", "corrupt model"])
def test_a_broken_ladder_folder_exits_2_with_one_line(tmp_path, kind):
    record = {"format": "rtsearch-run-1", "method": "ladder", "config": {"budget": 0.08}}
    (tmp_path / "run.json").write_text("{" if kind == "corrupt record" else json.dumps(record))
    if kind == "corrupt model":
        (tmp_path / "deployed.pt").write_bytes(b"not a model")
        (tmp_path / "metrics.json").write_text("{}")
    words = {"corrupt record": ["run.json", "corrupt or not an rtsearch run manifest"],
             "unfinished": ["not finished", "--resume"],
             "corrupt model": ["deployed.pt", "cannot be read", "--resume"]}[kind]
    result = run_main("rtsearch.export", "--checkpoint", str(tmp_path / "run.json"), "--out", str(tmp_path / "x.pt"))
    assert_usage_error(result, *words)
    assert not (tmp_path / "x.pt").exists()


def test_a_file_is_replaced_whole_and_two_writers_do_not_collide(tmp_path):
    from rtsearch.storage import replacing
    target = tmp_path / "dense.pt"
    target.write_text("old")
    with replacing(str(target)) as first, replacing(str(target)) as second:     # two writers at once
        assert first != second
        open(first, "w").write("first")
        open(second, "w").write("second")
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["dense.pt"]
    with pytest.raises(RuntimeError):
        with replacing(str(target)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["dense.pt"]
