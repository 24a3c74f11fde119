"""The search's choices and names, light enough for the command line to check them before anything
heavy (Ray Tune) is imported."""
from __future__ import annotations

SEARCHES = ("tpe", "random")


def budget_key(budget: float) -> str:
    """How a budget names its sweep, its MLflow parent run and its summary entries: 0.5 -> "0.5"."""
    return f"{budget:g}"


def sweep_method(settings: dict) -> str:
    """The method a sweep's trials run, from its stored settings (sweeps stored before the method was recorded
    ran the two agents)."""
    return settings.get("method") or "both"
