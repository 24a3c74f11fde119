"""The distillation study's plan and verdict (experiments.distill), on made-up figures."""
import pytest

from experiments.distill import plan, verdict

pytestmark = pytest.mark.study


def test_every_method_runs_plain_and_distilled_with_equal_fine_tuning_epochs():
    runs = plan("runs/x", [0.08], [0, 1], iterations=10)
    assert len(runs) == 2 * 3 * 2 and len({r["out"] for r in runs}) == len(runs)
    for r in runs:
        assert ("--distill" in r["args"]) == (r["tuning"] == "distilled")
        iterations = int(r["args"][r["args"].index("--iterations") + 1])
        assert iterations == (12 if "--fixed-ratios" in r["args"] else 10)


def made_up(figures: dict) -> list[dict]:
    """{(kind, tuning): [accuracy per seed]} -> runs as the report holds them, at budget 0.08."""
    return [{"kind": kind, "tuning": tuning, "budget": 0.08, "seed": seed, "metrics": {"accuracy": a}}
            for (kind, tuning), accuracies in figures.items() for seed, a in enumerate(accuracies)]


def test_the_verdict_compares_with_the_best_peer_under_the_same_fine_tuning():
    runs = made_up({("learned", "plain"): [0.93, 0.94, 0.95], ("uniform static-only", "plain"): [0.925, 0.935, 0.945],
                    ("Torch-Pruning L1", "plain"): [0.90, 0.90, 0.90],
                    ("learned", "distilled"): [0.95, 0.96, 0.97], ("uniform static-only", "distilled"): [0.90] * 3,
                    ("Torch-Pruning L1", "distilled"): [0.945, 0.955, 0.965]})
    plain = verdict(runs, "plain", 0.08)
    assert "best peer is uniform static-only" in plain and "+0.005, +0.005, +0.005" in plain
    assert plain.endswith("not a clear win.")           # +0.005 against a spread of 0.010
    distilled = verdict(runs, "distilled", 0.08)
    assert "best peer is Torch-Pruning L1" in distilled and distilled.endswith("not a clear win.")
    runs = made_up({("learned", "plain"): [0.96, 0.965, 0.97], ("uniform static-only", "plain"): [0.925, 0.935, 0.945],
                    ("Torch-Pruning L1", "plain"): [0.90, 0.91, 0.92]})
    assert verdict(runs, "plain", 0.08).endswith("beats it by a clear margin.")
