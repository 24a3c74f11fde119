"""The study behind results/round-to.md (experiments.round_to): channel counts rounded to multiples, and each rounded
network's latency read against the unrounded networks' curve at its own MACs."""
import pytest

from experiments import round_to

pytestmark = pytest.mark.study


def row(m: int, macs: float, ms: float, batch: int = 1) -> dict:
    return {"model": "small", "budget": 0.08, "multiple": m, "widths": [m], "macs_ratio": macs, "batch": batch,
            "median_ms": ms, "iqr_ms": 0.01, "runs": 5}


def test_a_rounded_network_is_read_against_the_unrounded_curve_at_its_own_macs(tmp_path):
    rows = [row(1, 0.1, 1.0), row(1, 0.3, 2.0), row(8, 0.2, 1.2), row(8, 0.5, 1.0), row(1, 0.1, 9.0, batch=64),
            row(1, 0.3, 9.0, batch=64), row(8, 0.2, 10.8, batch=64)]
    round_to.against_unrounded(rows)
    assert rows[2]["vs_unrounded"] == pytest.approx(1.2 / 1.5)      # the curve at MACs 0.2: halfway, 1.5 ms
    assert rows[3]["vs_unrounded"] is None                          # beyond the curve's MACs: not read
    assert rows[6]["vs_unrounded"] == pytest.approx(1.2)            # each batch size against its own curve
    page = round_to.markdown(rows, "python -m experiments.round_to")
    assert "| small | 0.08 | 8 | 8 | 0.2000 | 1 | 1.200 | 0.010 | 0.80 |" in page
    assert "| small | 1 | 8 | 1 | 0.80 | 0.80 | 0.80 |" in page
    assert "| small | 64 | 8 | 1 | 1.20 | 1.20 | 1.20 |" in page
