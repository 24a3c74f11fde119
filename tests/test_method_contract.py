"""The contract every registered method keeps, end to end on a tiny run: `rtsearch.train` writes the manifest
naming the method and its settings, `--resume` continues the run from it, `rtsearch.export` writes the deployed
model from any file of the folder, and that model scores on the test split what metrics.json says, at its MACs.
A method's own end-to-end checks run on the same run (the ladder's in tests/test_ladder_method.py and
tests/test_rung_cache.py, the two agents' in tests/test_loop.py), so that no run is made twice."""
import json

import pytest
import test_ladder_method
import test_loop
import test_rung_cache
import torch

from conftest import check_deployed_model_scores_as_the_run, run_cli, run_main
from rtsearch import data, methods
from rtsearch.config import RunConfig

TINY = {"ladder": ["--budget", "0.08", "--iterations", "1", "--agent-share", "0.25", "--agent-iterations", "3"],
        "both": ["--budget", "0.4", "--param-budget", "0.6", "--iterations", "2"],
        "runtime-only": ["--budget", "0.3", "--iterations", "1"],
        "static-only": ["--budget", "0.3", "--iterations", "2"],
        "paper": ["--budget", "0.3", "--paper-epochs", "1", "--paper-rl-epochs", "1", "--paper-backbone-epochs", "1",
                  "--paper-batch", "256"]}

# The run of `both` is killed (-9, with its Ray) right after its first iteration's checkpoint and finished by --resume
# (the others' first --resume continues a finished run)
KILLED = {"both"}
# What --resume adds: the ladder trains its agent again (its rungs read back), here once, on a rollout worker of its own
RESUMED = {"ladder": ["--agent-iterations", "1", "--num-env-runners", "1"]}


def test_every_registered_method_has_a_tiny_run_here():
    assert set(TINY) == set(methods.names())


def scores_as_the_run(name: str, out, model) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    if name == "ladder":
        from rtsearch.methods.ladder import evaluate
        test = evaluate(model, *data.load("digits", 0).test)
        assert test["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
        assert test["macs_ratio"] == pytest.approx(metrics["macs_ratio"], abs=1e-6)
    else:
        check_deployed_model_scores_as_the_run(out)
    compiled = model.compiled()        # its TorchScript form, where it has one, answers as the run measured
    if compiled is not None:
        x, y = data.load("digits", 0).test
        with torch.no_grad():
            accuracy = float((compiled(x).argmax(1) == y).float().mean())
        # the masked form of a runtime policy equals the skip path to float rounding: a tie may fall either way
        assert accuracy == pytest.approx(metrics["accuracy"], abs=2 / len(y))


def lands_on_its_macs_budget(metrics: dict) -> None:
    """Nothing prunes at run time: the static agent's ratios are shifted onto the MACs budget, so every input costs
    the same (the spread is zero up to float rounding: its mean is summed in float)."""
    assert metrics["feasible"] and 0.29 <= metrics["macs_ratio"] <= 0.3, metrics["macs_ratio"]
    assert metrics["macs_ratio_std"] < 1e-9 and metrics["params_ratio"] < 1.0
    assert all("static_shift" in row for row in metrics["history"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_run_manifest_resume_export_and_the_deployed_model(name, tmp_path, monkeypatch, dense_cache):
    out = tmp_path / name
    args = ["--dataset", "digits", "--method", name, *TINY[name], "--out", str(out)]
    if name == "ladder":        # a rung cache of its own: a second run copies every rung from it
        rungs = test_rung_cache.own_cache(tmp_path / "cache", monkeypatch, dense_cache)
    if name in KILLED:
        test_loop.kill_9_after_the_first_iteration(args, out)
        first = run_cli("rtsearch.train", *args, "--resume", timeout=600)
    else:
        first = run_cli("rtsearch.train", *args, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    if name in KILLED:
        test_loop.check_the_killed_run_resumed(first, out)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["method"] == name and manifest["config"]["out"] == str(out)
    assert manifest["config"]["pruning"] == {"static": methods.get(name).pruning.static,
                                             "runtime": methods.get(name).pruning.runtime}
    metrics = json.loads((out / "metrics.json").read_text())
    if name == "static-only":
        lands_on_its_macs_budget(metrics)
    if name == "both":          # its own checks on this run: tests/test_loop.py
        test_loop.check_both_agents_wrote_every_metric(RunConfig.from_dict(manifest["config"]))
    if name == "ladder":        # its own checks on this run: tests/test_ladder_method.py
        first_ladder = test_ladder_method.check_a_first_ladder_run(first, out, tmp_path)
        test_rung_cache.check_a_second_run_reuses_every_rung(first, args[:-2], out, tmp_path / "copied", rungs)

    again = run_cli("rtsearch.train", *args, "--resume", *RESUMED.get(name, []), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((out / "metrics.json").read_text())
    if name != "ladder":        # continued from its last checkpoint: nothing left to train, the same best state
        assert resumed["iterations"] == metrics["iterations"]
        assert resumed["accuracy"] == metrics["accuracy"] and resumed["macs_ratio"] == metrics["macs_ratio"]

    # in this process: export starts no Ray and trains nothing, so a fresh interpreter would only add its start-up
    exported = run_main("rtsearch.export", "--checkpoint", str(out / "run.json"), "--out", str(tmp_path / "x.pt"))
    assert exported.returncode == 0, exported.stderr
    written = torch.load(tmp_path / "x.pt", weights_only=False)
    if name == "ladder":
        scores_as_the_run(name, out, written)
        test_ladder_method.check_a_resumed_ladder_run(again, exported, args, out, tmp_path, first_ladder)
    else:       # the storage-reduced network of the best iteration; deployed.pt holds its runtime policy too
        assert "params" in exported.stdout
        scores_as_the_run(name, out, torch.load(out / "deployed.pt", weights_only=False))

    other = run_main("rtsearch.train", "--dataset", "digits", "--method", "ladder" if name != "ladder" else "both",
                     "--resume", "--out", str(out))
    assert other.returncode == 2 and "method" in other.stderr      # the manifest says what the folder holds
