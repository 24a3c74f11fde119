"""The rung cache (rtsearch.methods.rung_cache): a ladder's rung is made once per setting and copied into every run
that asks for it again, whole, under a key that holds what makes the rung and nothing else."""
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import run_cli
from rtsearch import methods
from rtsearch.config import RunConfig
from rtsearch.methods import ladder, rung_cache

DENSE = "digits-small-seed0-e15-0123456789ab.pt"     # a dense model's cache name, for keys only


def own_cache(root: Path, monkeypatch, dense_cache: str) -> Path:
    """A rung cache at `root` that shares the session's dense models (so none is trained again), made this process's
    and its children's RTSEARCH_CACHE."""
    os.makedirs(os.path.join(dense_cache, "dense"), exist_ok=True)
    root.mkdir()
    (root / "dense").symlink_to(os.path.join(dense_cache, "dense"))
    monkeypatch.setenv("RTSEARCH_CACHE", str(root))
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch, dense_cache):
    """A rung cache of this test's own."""
    return own_cache(tmp_path / "cache", monkeypatch, dense_cache)


def entries(cache) -> list:
    """The cache's rung entries (no lock files, no temporary or discarded folders)."""
    return sorted(p.name for p in (cache / "rungs").iterdir() if p.is_dir())


def one_rung(out, **settings):
    """The 0.04 rung of a tiny digits ladder (one fine-tuning iteration), through the cache: (metrics, reused,
    the lines logged)."""
    cfg = RunConfig(dataset="digits", method="ladder", budget=0.08, iterations=1, warmup_epochs=0, out=str(out),
                    **settings)
    rc = ladder.rung_config(cfg, 0.04)
    lines = []
    metrics, reused = rung_cache.obtain(rc, rung_cache.key(rc, rung_cache.dense_name(cfg)),
                                        lambda: ladder.train_rung(rc, "rung 1/1", lines.append, False), lines.append,
                                        "rung 1/1")
    return metrics, reused, lines


def stored(out) -> dict:
    """The metrics.json of the 0.04 rung in the run folder `out`."""
    return json.loads((out / "rungs" / "0.04" / "metrics.json").read_text())


def test_the_key_holds_every_setting_that_makes_the_rung_and_nothing_else():
    cfg = RunConfig(dataset="digits", method="ladder", budget=0.08, out="runs/a")
    rc = ladder.rung_config(cfg, 0.04)
    key = rung_cache.key(rc, DENSE)
    assert set(key["run"]) | set(rung_cache.UNKEYED) == methods.get(ladder.RUNG_METHOD).uses(rc)
    same = [{"lr_rerun": 0.003}, {"entropy_rerun": 0.05}, {"agent_iterations": 3}, {"rerun_width": 16},
            {"num_env_runners": 2}, {"out": "runs/b"}, {"mlflow_run_id": "x"}, {"device": "cpu"},
            {"data_dir": "/elsewhere"}, {"dense_epochs": 15}, {"param_budget": 0.5}]
    for change in same:         # the agent's settings, where the run lives and what it logs to: the same rung
        assert rung_cache.key(ladder.rung_config(replace(cfg, **change), 0.04), DENSE) == key, change
    other = [{"seed": 1}, {"finetune_epochs": 2}, {"lr_finetune": 3e-3}, {"iterations": 3}, {"distill": True},
             {"agent_share": 0.25}, {"holdout_share": 0.15}, {"dense_epochs": 5}]
    paths = {rung_cache.entry_path(key)}
    for change in other:
        changed = rung_cache.key(ladder.rung_config(replace(cfg, **change), 0.04), DENSE)
        assert changed != key, change
        paths.add(rung_cache.entry_path(changed))
    assert rung_cache.key(ladder.rung_config(cfg, 0.05), DENSE) != key
    assert rung_cache.key(rc, DENSE.replace("0123", "4567")) != key      # other data, another dense model
    assert len(paths) == len(other) + 1


def test_a_uri_cache_root_leaves_the_rungs_uncached(monkeypatch):
    monkeypatch.setenv("RTSEARCH_CACHE", "s3://bucket/cache")
    rc = ladder.rung_config(RunConfig(dataset="digits", out="runs/a"), 0.04)
    assert rung_cache.entry_path(rung_cache.key(rc, DENSE)) is None
    assert rung_cache.obtain(rc, rung_cache.key(rc, DENSE), lambda: {"built": 1}, print, "rung") == ({"built": 1},
                                                                                                      False)


def test_a_rung_another_process_is_making_is_left_for_last(tmp_path, cache, monkeypatch):
    """While another process holds the cheapest rung's lock, the run makes the other nine first, then comes back to
    it (made here once the other process lets go without leaving an entry)."""
    import fcntl

    import torch
    cfg = RunConfig(dataset="digits", method="ladder", budget=0.08, iterations=1, warmup_epochs=0,
                    out=str(tmp_path / "run"))
    budgets = ladder.rung_budgets(cfg.budget)
    first = ladder.rung_config(cfg, budgets[0])
    entry = rung_cache.entry_path(rung_cache.key(first, rung_cache.dense_name(cfg)))
    os.makedirs(os.path.dirname(entry))
    other = open(f"{entry}.lock", "a")
    fcntl.flock(other, fcntl.LOCK_EX)           # another process is making the cheapest rung
    made = []

    def fake_rung(rc, head, log, resume):       # a rung without training: what the cache and the ladder read
        made.append(rc.budget)
        if len(made) == len(budgets) - 1:
            other.close()                        # the other process ends without an entry
        os.makedirs(rc.out, exist_ok=True)
        torch.save({"budget": rc.budget}, os.path.join(rc.out, "deployed.pt"))
        metrics = {"macs_ratio": rc.budget, "params_ratio": rc.budget, "accuracy": 0.5, "stored_bytes": 1,
                   "seconds": 0.1}
        (Path(rc.out) / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(ladder, "train_rung", fake_rung)
    lines = []
    rungs = ladder.train_rungs(cfg, lines.append, resume=False)
    assert made == [*budgets[1:], budgets[0]]
    assert [r["budget"] for r in rungs] == budgets and not any(r["read_back"] for r in rungs)
    assert lines == [f"rung 1/10 (MACs budget {budgets[0]:g}): another process is making it; making the other rungs "
                     f"first"], lines
    assert len(entries(cache)) == len(budgets)


def check_a_second_run_reuses_every_rung(first, args: list[str], made: Path, copied: Path, cache: Path) -> None:
    """Called by the ladder's contract test (tests/test_method_contract.py) on its run `first`, made in `made` with
    `args` and a rung cache of its own (`cache`): a second ladder run with other agent settings, in `copied`, copies
    every rung from the cache instead of making it again."""
    second = run_cli("rtsearch.train", *args, "--agent-iterations", "1", "--lr-rerun", "3e-3", "--entropy-rerun",
                     "0.05", "--out", str(copied))
    assert second.returncode == 0, second.stderr[-3000:]
    budget = float(args[args.index("--budget") + 1])
    budgets = ladder.rung_budgets(budget)
    assert first.stdout.count("Torch-Pruning L1, fine-tuned in") == len(budgets)
    assert "rung cache" not in first.stdout
    reused = re.findall(r"^rung (\d+)/10 \(MACs budget ([\d.]+)\): reused from the rung cache (\S+)$", second.stdout,
                        re.M)
    assert [(int(i), float(b)) for i, b, _ in reused] == list(enumerate(budgets, 1)), second.stdout[-3000:]
    assert "fine-tuned" not in second.stdout and {p for *_, p in reused} == {str(cache / "rungs" / e)
                                                                             for e in entries(cache)}
    for entry in entries(cache):       # keyed by the dense model the rungs started from
        assert (cache / "dense" / json.loads((cache / "rungs" / entry / "key.json").read_text())["dense"]).is_file()
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (made, copied))
    assert a["rungs"] == b["rungs"] and a["config"]["lr_rerun"] != b["config"]["lr_rerun"]
    for budget in budgets:              # each rung copied whole; its manifest names the run it is in now
        rung_made, rung_copied = made / "rungs" / f"{budget:g}", copied / "rungs" / f"{budget:g}"
        for name in ("metrics.json", "deployed.pt", "test_per_input.npz", "best.pt"):
            assert (rung_made / name).read_bytes() == (rung_copied / name).read_bytes(), name
        assert json.loads((rung_copied / "run.json").read_text())["config"]["out"] == str(rung_copied)
        seconds = rung_cache.read_back(str(rung_copied))["seconds"]       # what --resume counts: the copy
        assert seconds == json.loads((rung_copied / "reused.json").read_text())["seconds"]
        assert seconds < json.loads((rung_copied / "metrics.json").read_text())["seconds"]
    assert b["phase_seconds"]["rungs"] < a["phase_seconds"]["rungs"]


@pytest.mark.slow
def test_another_rung_setting_makes_a_new_entry_and_agent_settings_do_not(tmp_path, cache):
    _, reused, lines = one_rung(tmp_path / "a")
    assert not reused and any("fine-tuned in" in line for line in lines)
    assert len(entries(cache)) == 1
    longer, reused, lines = one_rung(tmp_path / "b", finetune_epochs=2)
    assert not reused and not any("rung cache" in line for line in lines)
    assert len(entries(cache)) == 2
    again, reused, lines = one_rung(tmp_path / "c", lr_rerun=3e-3, entropy_rerun=0.05)
    (line,) = lines
    entry = line.removeprefix("rung 1/1: reused from the rung cache ")
    assert reused and json.loads((Path(entry) / "key.json").read_text())["run"]["finetune_epochs"] == 1
    assert again == stored(tmp_path / "a") == stored(tmp_path / "c")
    assert len(entries(cache)) == 2 and longer["accuracy"] == stored(tmp_path / "b")["accuracy"]


RACER = """
import sys
from rtsearch.config import RunConfig
from rtsearch.methods import ladder
cfg = RunConfig(dataset="digits", method="ladder", budget=0.08, iterations=1, warmup_epochs=0, out=sys.argv[1])
for rung in ladder.train_rungs(cfg, print, resume=False):
    print("RUNG", rung["budget"], repr(rung["metrics"]["accuracy"]))
"""


@pytest.mark.slow
def test_two_processes_making_one_ladder_make_each_rung_once_and_agree(tmp_path, cache):
    # two trials of a sweep starting together: they share the rungs out, each making those the other has not taken
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / name)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ)) for name in "ab"]
    results = [racer.communicate(timeout=600) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err[-2000:] for _, err in results]
    budgets = ladder.rung_budgets(0.08)
    made = [re.findall(r"^rung \d+/10 \(MACs budget ([\d.]+)\): Torch-Pruning L1, fine-tuned", out, re.M)
            for out, _ in results]
    assert sorted(float(b) for b in made[0] + made[1]) == budgets, made        # each rung made once, by one of them
    for out, _ in results:           # and every rung in both runs, with the same figures
        assert [line.split()[1] for line in out.splitlines() if line.startswith("RUNG ")] == [f"{b}" for b in budgets]
    assert [line for line in results[0][0].splitlines() if line.startswith("RUNG ")] == \
        [line for line in results[1][0].splitlines() if line.startswith("RUNG ")]
    assert len(entries(cache)) == len(budgets)
    assert sorted(p.name for p in (cache / "rungs").iterdir()) == sorted(
        [*entries(cache), *(f"{e}.lock" for e in entries(cache))])        # nothing half-made left
    for budget in budgets:
        for name in ("metrics.json", "deployed.pt"):
            assert (tmp_path / "a" / "rungs" / f"{budget:g}" / name).read_bytes() == \
                (tmp_path / "b" / "rungs" / f"{budget:g}" / name).read_bytes()
    # without working locks both would build: the rename lets the first entry stand and the second go
    entry = entries(cache)[0]
    key = json.loads((cache / "rungs" / entry / "key.json").read_text())
    before = (cache / "rungs" / entry / "deployed.pt").read_bytes()
    budget = key["run"]["budget"]
    listed = sorted(p.name for p in (cache / "rungs").iterdir())
    assert not rung_cache.publish(str(tmp_path / "b" / "rungs" / f"{budget:g}"), str(cache / "rungs" / entry), key)
    assert (cache / "rungs" / entry / "deployed.pt").read_bytes() == before
    assert sorted(p.name for p in (cache / "rungs").iterdir()) == listed      # the losing copy left nothing behind


@pytest.mark.slow
def test_a_corrupt_entry_is_made_again_with_one_line_saying_so(tmp_path, cache):
    first, _, _ = one_rung(tmp_path / "a")
    (entry,) = entries(cache)
    deployed = cache / "rungs" / entry / "deployed.pt"
    deployed.write_bytes(deployed.read_bytes()[:100])           # truncated
    again, reused, lines = one_rung(tmp_path / "b")
    corrupt = [line for line in lines if "is corrupt" in line]
    assert not reused and len(corrupt) == 1 and "deployed.pt unreadable" in corrupt[0] and entry in corrupt[0]
    assert any("fine-tuned in" in line for line in lines)
    assert entries(cache) == [entry]
    key = json.loads((cache / "rungs" / entry / "key.json").read_text())
    assert rung_cache.read_entry(str(cache / "rungs" / entry), key)[0] == stored(tmp_path / "b")   # whole again
    assert again["accuracy"] == first["accuracy"]
    _, reused, lines = one_rung(tmp_path / "c")
    assert reused and len(lines) == 1
    (cache / "rungs" / entry / "metrics.json").write_text('{"accuracy": ')       # cut short
    assert "metrics.json unreadable" in rung_cache.read_entry(str(cache / "rungs" / entry), key)[1]
