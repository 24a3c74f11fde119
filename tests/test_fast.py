"""The skip path (rtsearch.net.fast) and the deployed model (rtsearch.deploy.deployed) against the masked reference."""
import subprocess
import sys

import pytest
import torch

from conftest import assert_usage_error, run_main

from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.fast import SkipNet
from rtsearch.net.models import MODELS, build_model
from rtsearch.net.supervised import policy_forward

SHAPES = {"small": (1, 28, 28), "mcifarnet": (3, 32, 32), "resnet20": (3, 32, 32), "resnet56": (3, 32, 32),
          "resnet18": (3, 32, 32)}


def trained_looking(name: str, lam: float, seed: int = 0):
    """A network with distinct static importances, informative predictors and non-trivial BN statistics."""
    torch.manual_seed(seed)
    net = build_model(name, SHAPES[name], 10, lam=lam)
    for gate in net.gates:
        gate.static_importance.data = torch.rand(gate.out_channels)
        gate.predictor.weight.data.normal_(0, 0.3)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, *SHAPES[name]))
    return net.eval()


@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.parametrize("name", MODELS)
def test_skip_path_gives_the_masked_logits_for_every_backbone(name, lam):
    net = trained_looking(name, lam)
    L = net.num_layers
    static = torch.rand(L) * 0.6
    runtime = torch.rand(6, L) * 0.9                  # a different ratio per input and layer
    x = torch.randn(6, *SHAPES[name])
    with torch.no_grad():
        reference, walk = net.forward_walk(x, static, runtime)
    skip = SkipNet(net, static)
    assert skip.widths == walk.static_kept.tolist()   # the statically pruned channels are gone
    runs = [skip.run(x[i:i + 1], lambda t, r, kept, i=i: float(runtime[i, t])) for i in range(6)]
    logits = torch.cat([r[0] for r in runs])
    assert reference.abs().max() > 0.05               # the comparison is not between zeros
    assert (logits - reference).abs().max() < 1e-4
    assert torch.tensor([r[1] for r in runs]).equal(walk.runtime_kept)
    with torch.no_grad():                             # no policy: the whole batch at once, every kept channel
        assert (skip(x) - net(x, static)).abs().max() < 1e-4


def test_at_lam_0_the_kept_filters_are_a_slice():
    net = trained_looking("small", 0.0)
    skip = SkipNet(net)
    layer = skip.layers[1]
    order = net.gates[1].static_scores().argsort(descending=True)
    assert layer.order.equal(order)                   # output channels in static-importance order
    x = torch.randn(1, *SHAPES["small"])
    seen = []
    hook = layer.register_forward_hook(lambda m, args, out: seen.append((args[1], out[1])))
    skip.run(x, lambda t, r, kept: 0.5)
    hook.remove()
    in_idx, idx = seen[0]
    assert isinstance(in_idx, int) and isinstance(idx, int)   # prefixes, not index tensors


@pytest.mark.parametrize("name", ["small", "resnet20"])
def test_deployed_policy_observes_and_acts_as_the_training_policy(name):
    from rtsearch.deploy import deployed
    from rtsearch.rl.observations import layer_descriptors
    from rtsearch.rl.policies import runtime_policy
    net = trained_looking(name, 0.5)
    static = [0.3] * net.num_layers                   # observations pad the removed channels with zeros
    module = deployed.untrained_module(net.num_layers, 0.95)
    shift = 0.1
    policy = deployed.DeployedPolicy(module, net, static, 0.2, 0.95, shift)
    cost = CostModel(net)
    agent = runtime_policy(module, net, cost, layer_descriptors(net, cost), 0.2, 0.95)
    x = torch.randn(5, *SHAPES[name])
    with torch.no_grad():
        reference, walk = policy_forward(net, x, static, lambda w: (agent(w) + shift).clamp(0.0, 0.95))
    skip = SkipNet(net, static)
    runs = [skip.run(x[i:i + 1], policy) for i in range(5)]
    assert (torch.cat([r[0] for r in runs]) - reference).abs().max() < 1e-4
    kept = torch.tensor([r[1] for r in runs])
    assert kept.equal(walk.runtime_kept)
    assert len(set(kept.flatten().tolist())) > 1     # the agent's ratios changed the keep counts


def run_bench(*args):
    return subprocess.run([sys.executable, "-m", "rtsearch.bench", "--latency", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_latency_bench_refuses_a_corrupt_or_foreign_checkpoint(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    net = build_model("small")
    checkpoint.save(str(foreign), net, [0.0] * net.num_layers)
    state = torch.load(foreign, weights_only=True)
    state["model"]["name"] = "resnet20"                # weights of one architecture, config of another
    torch.save(state, foreign)
    for path, words in ((corrupt, "corrupt"), (foreign, "does not hold a loadable network"),
                        (tmp_path / "missing.pt", "does not exist")):
        result = run_bench("--checkpoint", str(path))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("flags, words", [(["--budgets", "0.5,2"], "--budgets"),
                                          (["--batch-sizes", "0"], "--batch-sizes"),
                                          (["--runs", "5"], "--runs"), (["--networks", "vgg:3,32,32"], "--networks")])
def test_latency_bench_bad_flags_exit_2(flags, words):
    assert_usage_error(run_main("rtsearch.bench", "--latency", *flags), words)


@pytest.mark.slow
def test_latency_bench_times_every_row_and_meets_the_budget(tmp_path):
    import json
    out = tmp_path / "latency"
    result = run_bench("--networks", "small:1,28,28", "--budgets", "0.15", "--batch-sizes", "1,4", "--threads", "1",
                       "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "latency.json").read_text())
    rows = {(r["row"], r["batch"]): r for r in report["rows"]}
    assert {"dense", "static-only", "skip lam=0.5", "replayed lam=0.5", "skip lam=0", "replayed lam=0",
            "masked"} == {row for row, batch in rows if batch == 1}
    assert {("skip lam=0", 4), ("masked", 4), ("dense", 4)} <= rows.keys()
    assert all(r["runs"] >= 30 and r["median_ms"] > 0 for r in report["rows"])
    assert rows[("static-only", 1)]["macs_ratio"] <= 0.15
    assert abs(rows[("skip lam=0.5", 1)]["macs_ratio"] - 0.15) < 0.03     # calibrated onto the budget
    assert rows[("dense", 1)]["latency_ratio"] == 1.0
    assert "| latency / MACs |" in (tmp_path / "latency.md").read_text()


@pytest.mark.slow
def test_latency_profile_says_where_the_time_goes(tmp_path):
    out = tmp_path / "profile.md"
    result = run_bench("--profile", "--networks", "small:1,28,28", "--budgets", "0.15", "--batch-sizes", "4",
                       "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "python -m rtsearch.bench --latency --profile" in text
    assert "- dense" in text and "- static-only, budget 0.15" in text and "convolution" in text


@pytest.mark.slow
def test_traceable_form_predicts_as_the_skip_path_and_exports():
    """The masked form MLflow stores (fixed shapes, the agent batched) gives the skip path's logits, and
    torch.export traces it with a free batch dimension."""
    from rtsearch.net.surgery import prune_static
    from rtsearch.deploy import deployed
    from rtsearch.deploy.deployed import TraceableModel
    net = trained_looking("resnet20", 0.5)
    static = [0.3] * net.num_layers
    policy = deployed.DeployedPolicy(deployed.untrained_module(net.num_layers, 0.95), net, static, 0.2, 0.95, 0.1)
    model = deployed.DeployedModel(SkipNet(net, static), policy, net.input_shape, prune_static(net, static))
    traced = TraceableModel(model)
    x = torch.randn(6, *SHAPES["resnet20"])
    with torch.no_grad():
        skip = torch.cat([model.skip.run(x[i:i + 1], policy)[0] for i in range(6)])
        masked, batch_of_6 = traced(x), model(x)        # a batch takes the masked form with the agent batched
    assert (skip - masked).abs().max() < 1e-4
    assert (batch_of_6 - masked).abs().max() < 1e-5
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(traced, (x[:2],), dynamic_shapes={"x": {0: batch}})
    assert (program.module()(x) - masked).abs().max() < 1e-4
    script = model.compiled()           # TorchScript of the same form, the agent batched inside the graph
    assert (script(x) - masked).abs().max() < 1e-5 and (script(x[:1]) - masked[:1]).abs().max() < 1e-5


def test_moving_a_deployed_model_moves_its_runtime_agent():
    """`.to(device)` moves the feed-forward agent's tensors with the network (they are not a module's), so the
    model runs where it is put; the model it was copied from keeps its own."""
    import copy

    from rtsearch.deploy import deployed
    from rtsearch.net.surgery import prune_static
    net = trained_looking("small", 0.5)
    static = [0.3] * net.num_layers
    policy = deployed.DeployedPolicy(deployed.untrained_module(net.num_layers, 0.95), net, static, 0.2, 0.95, 0.1)
    model = deployed.DeployedModel(SkipNet(net, static), policy, net.input_shape, prune_static(net, static))
    assert model.policy.lean is not None
    moved = copy.deepcopy(model).to("meta")
    lean = moved.policy.lean
    tensors = [*lean.const, *lean.resample, lean.w_extra, lean.w_summary, *[t for pair in lean.rest for t in pair]]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert all(p.device.type == "meta" for p in moved.parameters())
    assert model.policy.lean.w_summary.device.type == "cpu"
    x = torch.randn(4, *SHAPES["small"])
    with torch.no_grad():                   # the one it was copied from still answers, one input and a batch
        assert model(x).shape == (4, 10) and model(x[:1]).shape == (1, 10)
