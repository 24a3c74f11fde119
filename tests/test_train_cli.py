import json

import pytest

from conftest import assert_usage_error, run_cli

METRICS_FIELDS = {"accuracy", "dense_accuracy", "macs_ratio", "macs_ratio_p95", "params_ratio", "stored_bytes",
                  "score", "feasible", "iterations", "iters_to_best", "seconds", "mlflow_run_id"}


@pytest.mark.parametrize("args, words", [
    (["--budget", "0"], ["--budget", "(0, 1]"]),
    (["--budget", "1.5"], ["--budget", "(0, 1]"]),
    (["--budget", "abc"], ["--budget", "abc"]),
    (["--param-budget", "-1"], ["--param-budget"]),
    (["--dataset", "nope"], ["unknown dataset", "mnist5k"]),
    (["--model", "nope"], ["unknown model", "small"]),
    (["--dataset", "cifar10"], ["--data-dir"]),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], ["/nonexistent/cifar", "does not exist"]),
    (["--iterations", "0"], ["--iterations"]),
])
def test_bad_input_exits_2_with_one_line(args, words):
    assert_usage_error(run_cli("rtsearch.train", *args, timeout=60), *words)


def test_empty_data_folder_exits_2(tmp_path):
    assert_usage_error(run_cli("rtsearch.train", "--dataset", "cifar100", "--data-dir", str(tmp_path)),
                       "cifar-100-python", str(tmp_path))
    assert_usage_error(run_cli("rtsearch.train", "--dataset", "imagefolder", "--data-dir", str(tmp_path)),
                       "class folders")


def test_resume_without_checkpoint_exits_2(tmp_path):
    assert_usage_error(run_cli("rtsearch.train", "--resume", "--out", str(tmp_path / "nothing")), "--resume")


def test_corrupt_resume_checkpoint_exits_2(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage" * 10)
    assert_usage_error(run_cli("rtsearch.train", "--dataset", "digits", "--resume", "--out", str(tmp_path)),
                       "corrupt")


def test_dense_cache_is_reused_and_says_so():
    first = run_cli("rtsearch.train", "--dataset", "digits", "--dense-only", "--seed", "7")
    assert first.returncode == 0, first.stderr
    assert "cached at" in first.stdout
    second = run_cli("rtsearch.train", "--dataset", "digits", "--dense-only", "--seed", "7")
    assert second.returncode == 0 and "reusing cached" in second.stdout
    assert "dense epoch" not in second.stdout


@pytest.mark.parametrize("method", ["runtime-only", "static-only", "both"])
def test_fixed_ratio_run_meets_budget_and_writes_every_metric(method, tmp_path):
    out = tmp_path / method
    result = run_cli("rtsearch.train", "--dataset", "digits", "--budget", "0.3", "--fixed-ratios",
                     "--method", method, "--iterations", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRICS_FIELDS <= metrics.keys()
    assert metrics["iterations"] == 2 and 1 <= metrics["iters_to_best"] <= 2
    assert metrics["macs_ratio"] <= 0.3 and metrics["feasible"]
    assert metrics["accuracy"] > 0.5 and metrics["mlflow_run_id"] is None
    assert metrics["stored_bytes"] == (out / "model.pt").stat().st_size
    if method == "runtime-only":
        assert metrics["params_ratio"] == 1.0
    else:
        assert metrics["params_ratio"] < 0.8
