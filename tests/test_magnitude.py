"""The Torch-Pruning L1 peer (`--torch-pruning-l1`): the uniform static-only widths, its channels
chosen and removed by Torch-Pruning's magnitude pruner."""
import json

import pytest
import torch

from conftest import run_cli
from rtsearch import data
from rtsearch.net import checkpoint
from rtsearch.config import Pruning
from rtsearch.net.baseline import uniform_ratios
from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.magnitude import cost_against, l1_pruned
from rtsearch.net.models import build_model


def test_l1_pruning_keeps_the_largest_channels_at_the_baseline_widths():
    torch.manual_seed(0)
    net = build_model("small", (1, 28, 28))
    strong = [1, 3, 5, 9, 11, 14]              # gate 0's channels made far larger than the rest
    with torch.no_grad():
        net.gates[0].conv.weight[strong] *= 100.0
    reference = CostModel(net, predictors=False)
    static, _ = uniform_ratios(reference, 0.15, Pruning(static=True, runtime=False))
    keep = static_kept_for(reference.widths, static)
    assert keep[0] == len(strong)
    pruned = l1_pruned(net, keep)
    assert pruned.widths == keep.tolist()
    kept_rows = pruned.gates[0].conv.weight
    originals = net.gates[0].conv.weight
    matches = [int((originals - row).abs().flatten(1).sum(1).argmin()) for row in kept_rows]
    assert sorted(matches) == strong
    cost = cost_against(pruned, reference)
    full = cost.macs_ratio(cost.widths[None, :], cost.widths).item()
    assert abs(full - reference.macs_ratio(keep[None, :], keep).item()) < 1e-9 and full <= 0.15
    assert net.widths == [16, 32, 32, 64, 64]      # the caller's network is untouched


def test_counts_round_to_the_nearest_multiple_within_the_layers_width():
    """What --round-to and experiments.round_to both round by."""
    from rtsearch.net.baseline import rounded

    def by(counts, widths, m):
        return rounded(torch.tensor(counts), torch.tensor(widths), m).tolist()
    assert by([3, 5, 13, 30], [16, 32, 64, 32], 1) == [3, 5, 13, 30]
    assert by([3, 5, 13, 30], [16, 32, 64, 32], 8) == [8, 8, 16, 32]       # at least 8, nearest
    assert by([3, 5, 13, 30], [16, 32, 64, 20], 16) == [16, 16, 16, 20]    # never over the width
    assert by([10, 20], [64, 64], 4) == [12, 20] and by([12, 20], [64, 64], 8) == [16, 24]     # halves go up


@pytest.mark.parametrize("model, budget, multiple", [("small", 0.15, 8), ("mcifarnet", 0.08, 8),
                                                     ("mcifarnet", 0.08, 16), ("mcifarnet", 0.3, 4)])
def test_rounded_widths_are_multiples_within_the_budget_and_as_wide_as_uniform_rounding_allows(model, budget,
                                                                                             multiple):
    """--round-to M: every layer keeps a multiple of M (at least M, at most its width), within the MACs budget,
    and one more step of the uniform keep fraction would round over it."""
    from rtsearch.net.baseline import rounded, rounded_keep_counts
    from rtsearch.net.pruning import keep_count
    cost = CostModel(build_model(model, (1, 28, 28), predictors=False), predictors=False)
    kept = rounded_keep_counts(cost, budget, multiple)
    assert all(k % multiple == 0 and multiple <= k <= w for k, w in zip(kept.tolist(), cost.widths.tolist()))
    assert cost.macs_ratio(kept[None, :], kept).item() <= budget
    unrounded = keep_count(torch.tensor(0.0), cost.widths)
    for p in torch.linspace(0.0, 0.999, 200):           # the widest uniform rounding that meets the budget
        counts = rounded(keep_count(p, cost.widths), cost.widths, multiple)
        if cost.macs_ratio(counts[None, :], counts).item() <= budget:
            assert (counts <= kept).all(), (counts, kept)
            break
    assert (kept <= unrounded).all()


def test_a_multiple_that_cannot_meet_the_budget_is_refused():
    from rtsearch.errors import UsageError
    from rtsearch.net.baseline import rounded_keep_counts
    cost = CostModel(build_model("small", (1, 28, 28), predictors=False), predictors=False)
    with pytest.raises(UsageError, match="--round-to 16: 16 channels on every layer already cost more"):
        rounded_keep_counts(cost, 0.08, 16)


@pytest.mark.slow
def test_l1_peer_run_lands_on_the_static_only_macs_and_deploys(tmp_path):
    runs = {}
    for name, extra in (("static", []), ("l1", ["--torch-pruning-l1"])):
        out = tmp_path / name
        result = run_cli("rtsearch.train", "--dataset", "digits", "--budget", "0.3", "--fixed-ratios", "--method",
                         "static-only", "--iterations", "2", "--out", str(out), *extra)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads((out / "metrics.json").read_text())
    assert "Torch-Pruning L1 pruner: widths" in result.stdout
    assert abs(runs["l1"]["macs_ratio"] - runs["static"]["macs_ratio"]) < 1e-9
    assert abs(runs["l1"]["params_ratio"] - runs["static"]["params_ratio"]) < 0.01
    assert runs["l1"]["accuracy"] > 0.5 and runs["l1"]["config"]["torch_pruning_l1"]
    # the deployed model is the smaller network: it scores the run's accuracy at every channel it has
    model = torch.load(tmp_path / "l1" / "deployed.pt", weights_only=False)
    x, y = data.load("digits", 0).test
    outputs = [model.skip.run(x[i:i + 1], model.policy) for i in range(len(x))]
    assert float((torch.cat([o[0] for o in outputs]).argmax(1) == y).float().mean()) == \
        pytest.approx(runs["l1"]["accuracy"], abs=1e-6)
    assert model.skip.widths == checkpoint.network(checkpoint.load(str(tmp_path / "l1" / "best.pt"))).widths
    # --round-to 4: every width a multiple of 4, still within the budget, deployed at those widths
    result = run_cli("rtsearch.train", "--dataset", "digits", "--budget", "0.3", "--fixed-ratios", "--method",
                     "static-only", "--torch-pruning-l1", "--round-to", "4", "--iterations", "1", "--out",
                     str(tmp_path / "r4"))
    assert result.returncode == 0, result.stderr
    rounded = json.loads((tmp_path / "r4" / "metrics.json").read_text())
    widths = torch.load(tmp_path / "r4" / "deployed.pt", weights_only=False).skip.widths
    assert all(w % 4 == 0 for w in widths) and rounded["macs_ratio"] <= 0.3 and rounded["config"]["round_to"] == 4
