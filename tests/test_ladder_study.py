"""The ladder study's plan and verdict (experiments.ladder_study), on made-up figures."""
import pytest

from experiments import peers_study as peers
from experiments.ladder_study import AGENTS, CASCADE, LADDER, RUNG, plan, verdict

pytestmark = pytest.mark.study


def test_every_rung_is_a_torch_pruning_l1_peer_run_and_the_peers_run_at_the_budgets():
    runs = plan("runs/x", [0.08, 0.05], [0, 1], iterations=10)
    assert len({r["out"] for r in runs}) == len(runs)
    rungs = [r for r in runs if r["kind"] == RUNG]
    assert sorted({r["budget"] for r in rungs}) == sorted(LADDER) and len(rungs) == 2 * len(LADDER)
    # the rungs at the study's budgets are the peers study's own Torch-Pruning L1 runs, same command
    peer_commands = {r["command"] for r in peers.plan("runs/x", [0.08, 0.05], [0, 1], 10) if r["kind"] == RUNG}
    assert peer_commands <= {r["command"] for r in rungs}
    for r in rungs:
        assert "--torch-pruning-l1" in r["args"] and r["args"][r["args"].index("--iterations") + 1] == "12"
    at_budgets = {r["kind"] for r in runs if r["budget"] in (0.08, 0.05)}
    assert at_budgets == {"uniform runtime-only", "uniform static-only", RUNG}      # no learned run is made
    assert not any(r["kind"] == "range" for r in runs)


def test_the_verdict_compares_with_the_best_of_the_given_methods():
    AGENT = AGENTS["ce"]
    at = {AGENT: [{"accuracy": a, "macs_ratio": 0.08} for a in (0.95, 0.946, 0.948)],
          CASCADE: [{"accuracy": a, "macs_ratio": 0.08} for a in (0.957, 0.948, 0.947)],
          "Torch-Pruning L1": [{"accuracy": a, "macs_ratio": 0.0776} for a in (0.946, 0.944, 0.938)],
          "uniform static-only": [{"accuracy": a, "macs_ratio": 0.0776} for a in (0.936, 0.944, 0.941)]}
    line = verdict(at, AGENT, ["Torch-Pruning L1", "uniform static-only"], 0.08)
    assert "against Torch-Pruning L1" in line and "+0.004, +0.002, +0.010" in line
    assert line.endswith("beats it by a clear margin.")         # mean +0.0053 against a spread of 0.0042
    assert verdict(at, AGENT, [CASCADE], 0.08).endswith("not a clear win.")
