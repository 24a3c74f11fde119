"""The search, `python -m rtsearch.tune`, run the way a user runs it (a subprocess in its own folder).

Tiny sweeps: digits, model small, uniform ratios (the hidden --fixed-ratios flag: no agents, so
they run fast today), a 1-epoch dense model in a cache of this module's own, 2 iterations.
"""
import glob
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import MIN_TIMEOUT, assert_usage_error, end_group, ok, run_cli, run_main, tune, tune_refused
from rtsearch import methods
from rtsearch.search import space

TINY = ["--dataset", "digits", "--model", "small", "--method", "both", "--fixed-ratios", "--dense-epochs", "1",
        "--max-iterations", "2", "--num-cpus", "2"]
# the same with both agents (no --fixed-ratios): a sweep of the method itself
TINY_AGENTS = [a for a in TINY if a != "--fixed-ratios"]
DEFAULT_SPACE = space.default_path(methods.get("both"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A dense-model cache for these sweeps only (their 1-epoch dense model must not serve other tests)."""
    return str(tmp_path_factory.mktemp("tune-dense-cache"))


def history_lines(results, trial_id) -> int:
    with open(os.path.join(results, "trials", trial_id, "history.jsonl")) as f:
        return sum(1 for line in f if line.strip())


def iterations(results, trial_id) -> int:
    """Distinct iterations in a trial's history."""
    with open(os.path.join(results, "trials", trial_id, "history.jsonl")) as f:
        return len({json.loads(line)["iteration"] for line in f if line.strip()})


def mlflow_runs(uri: str, experiment: str):
    """(parents, children) of a sweep's MLflow experiment, read back with mlflow.search_runs."""
    import mlflow
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    parent_col = "tags.mlflow.parentRunId"
    is_child = runs[parent_col].notna() if parent_col in runs else runs["run_id"].isna()
    return runs[~is_child], runs[is_child]


def check_children(uri, parents, children, results, searched="lam", artifacts=("metrics.json", "best.pt", "model.pt")):
    """Each child belongs to a parent, has the trial's params (`searched` among them), one score per iteration (step =
    iteration, one value per step even where an iteration was run again after a resume), and once completed the
    run's files (`artifacts` among them)."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    assert set(children["tags.mlflow.parentRunId"]) <= set(parents["run_id"])
    assert children["tags.rtsearch.trial_id"].is_unique
    for _, child in children.iterrows():
        trial_id = child["tags.rtsearch.trial_id"]
        steps = [m.step for m in client.get_metric_history(child["run_id"], "val_score")]
        assert steps == list(range(1, iterations(results, trial_id) + 1)), (trial_id, steps)
        assert child["params.trial_id"] == trial_id and f"params.{searched}" in child
        record = json.load(open(os.path.join(results, "trials", trial_id, "trial.json")))
        if record["status"] == "completed":
            assert child["status"] == "FINISHED"
            assert set(artifacts) <= {a.path for a in client.list_artifacts(child["run_id"])}
            metrics = json.load(open(os.path.join(results, "trials", trial_id, "metrics.json")))
            assert metrics["mlflow_run_id"] == child["run_id"]
        else:
            assert child["status"] in ("KILLED", "FAILED"), child["status"]


def check_best_follows_the_rule(sweep, out=None, md=None):
    """The named best trial is the one the stated rule (rtsearch.search.selection.SELECTION) picks from the
    recorded figures, and its "chosen by" sentence names the rule's branch that decided, whichever trials ASHA
    let complete (that depends on which trial reaches a rung first, so on timing): trials listed in validation
    order; of the completed ones (none: those with a score), the top few by that order; the highest held-out
    score among them if more than one was compared there (ties: the validation order), else the first."""
    from rtsearch.search.selection import TOP_FEW
    trials, best, said = sweep["trials"], sweep["best"], sweep["best_chosen_by"]
    order = sorted(trials, key=lambda t: (t["score"] is None, -(t["score"] or 0.0), t.get("tiebreak") is None,
                                          -(t.get("tiebreak") or 0.0), t["started"] or 0.0))
    assert [t["trial_id"] for t in trials] == [t["trial_id"] for t in order], trials
    completed = [t for t in trials if t["status"] == "completed"]
    pool = completed or [t for t in trials if t["score"] is not None]
    top = pool[:TOP_FEW]
    held = [t for t in top if t["holdout_score"] is not None]
    want = max(held, key=lambda t: (t["holdout_score"], -top.index(t))) if held else pool[0]
    assert best["trial_id"] == want["trial_id"], (said, trials)
    if held and len(top) > 1:
        assert said.startswith(f"highest score on {want['holdout_size']} held-out images "
                               f"({want['holdout_score']:.4f}, against "), said
        assert f"among the top {len(top)} by validation score of the {len(pool)} " in said, said
    else:
        assert said.startswith(f"highest best validation score ({want['score']:.4f}) among the {len(pool)} "), said
        assert want["score"] == max(t["score"] for t in pool)
    if out is not None:         # the closing lines print the same sentence as the summary
        assert f"chosen by: {said}\n" in out, out[-3000:]
    if md is not None:
        assert f"Chosen by: {said}." in md
    return completed


@pytest.mark.parametrize("args, words", [
    (["--budget", "0.5,0"], ["--budget", "(0, 1]"]),
    (["--budget", "0.5", "--num-samples", "0"], ["--num-samples"]),
    (["--budget", "0.5", "--max-iterations", "0"], ["--max-iterations"]),
    (["--budget", "0.5", "--method", "ladder", "--max-iterations", "0"], ["--max-iterations"]),
    (["--budget", "0.5", "--search", "grid"], ["--search"]),
    (["--budget", "0.5", "--resume", "--name", "never-ran"], ["--resume", "never-ran"]),
    (["--resume", "--name", "never-ran"], ["--resume", "never-ran"]),
    (["--resume"], ["--resume", "--name"]),
    (["--dataset", "digits"], ["--budget"]),
    (["--budget", "0.5", "--seed", "-1"], ["--seed"]),
    (["--budget", "0.5", "--holdout-share", "0.9"], ["--holdout-share", "[0, 0.5]"]),
    (["--budget-range", "0.5:0.1", "--method", "both"], ["--budget-range", "inverted"]),
    (["--budget-range", "0.1:0.5", "--budget", "0.3", "--method", "both"], ["--budget-range", "not both"]),
    (["--budget-range", "0.1:0.5"], ["--budget-range", "default method, ladder", "--method both"]),
    (["--budget", "0.5", "--fixed-ratios"], ["--fixed-ratios", "default method, ladder", "--method both"]),
    (["--budget", "0.5", "--address", "127.0.0.1:x"], ["--address", "HOST:PORT"]),
    (["--budget-range", "0.05:0.2", "--method", "ladder"], ["--method ladder", "--budget-range"]),
    (["--budget", "0.08", "--method", "ladder", "--space", DEFAULT_SPACE],
     ["lr_runtime does nothing", "ladder.yaml", "--method both"]),
])
def test_bad_flags_exit_2_with_one_line(args, words, tmp_path, cache, monkeypatch):
    assert_usage_error(tune_refused(monkeypatch, tmp_path, cache, *args), *words)
    assert not (tmp_path / "runs" / "sweeps").exists()


def test_unreachable_mlflow_exits_2_before_any_trial(tmp_path, cache, monkeypatch):
    began = time.time()
    result = tune_refused(monkeypatch, tmp_path, cache, *TINY, "--budget", "0.5", "--name", "u", "--mlflow-uri",
                          "http://127.0.0.1:9")
    assert_usage_error(result, "http://127.0.0.1:9", "unreachable")
    assert "trial" not in result.stdout and "dense" not in result.stdout
    assert not (tmp_path / "runs" / "sweeps").exists()
    assert time.time() - began < 60


def test_unreachable_address_exits_2_fast_before_any_training(tmp_path, cache, monkeypatch):
    began = time.time()
    result = tune_refused(monkeypatch, tmp_path, cache, *TINY, "--budget", "0.5", "--name", "a", "--address",
                          "127.0.0.1:1")
    assert_usage_error(result, "--address 127.0.0.1:1", "ray start --head")
    assert "dense" not in result.stdout
    assert not (tmp_path / "runs" / "sweeps").exists()
    assert time.time() - began < 30


@pytest.mark.slow
def test_remote_storage_is_checked_and_passed_through_untouched(tmp_path, cache):
    # No network here: the bucket cannot be reached, so the sweep stops before any compute; the URI
    # must not turn into a local folder named "s3:".
    began = time.time()
    result = tune(tmp_path, cache, *TINY, "--budget", "0.5", "--name", "s3", "--storage-path", "s3://some-bucket/x",
                  timeout=120)
    assert_usage_error(result, "--storage-path s3://some-bucket/x", "cannot be written")
    assert "dense" not in result.stdout
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "runs" / "sweeps").exists()
    assert time.time() - began < 60


def test_errors_are_named_after_the_command_the_user_ran(tmp_path):
    """`python -m rtsearch.tune` runs rtsearch/tune.py: its errors say rtsearch.tune, whoever raised them."""
    for args in (["--budget", "2"], ["--budget", "0.5", "--bogus"]):
        result = run_cli("rtsearch.tune", *args, timeout=60, cwd=tmp_path)
        assert_usage_error(result, args[-1])
        assert result.stderr.startswith("rtsearch.tune: error: "), result.stderr


def test_help_shows_defaults_and_choices(tmp_path, monkeypatch):
    result = tune_refused(monkeypatch, tmp_path, None, "--help")
    text = " ".join(result.stdout.split())            # argparse wraps the lines
    assert result.returncode == 0 and text.startswith("usage: python -m rtsearch.tune ")
    assert ("--dataset DATASET data set (one of mnist5k, digits, cifar10, cifar100, imagefolder); "
            "default mnist5k") in text
    assert "--model MODEL backbone (one of small, mcifarnet, resnet20, resnet56, resnet18); default small" in text
    assert "--search {tpe,random} the sampler: Optuna TPE, or random search; default tpe" in text
    assert "--seed SEED seed of the data split, the dense model, every trial and the sampler; default 0;" in text
    assert "required unless --budget-range, --front or --resume is given" in text
    assert "--no-baseline run the fixed-ratio static-only baseline each budget's best trial is set against; on by " \
           "default, this flag turns it off" in text


def test_cluster_help_says_what_it_adds_and_where_it_writes(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster", "search.py")
    result = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=MIN_TIMEOUT)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0 and text.startswith("usage: cluster/search.py "), result.stderr
    assert "--address auto (join the running cluster) is added unless an --address is given" in text
    assert ("writes there: <results-dir>/<name>/ (default runs/sweeps/<name>/: summary.md, summary.json, pareto.png, "
            "trials/)") in text
    assert "--address ADDR Ray cluster address (default here: auto" in text
    assert "--dataset DATASET data set (one of mnist5k," in text            # rtsearch.tune's options follow


def test_unwritable_storage_exits_2_and_leaves_no_sweep_behind(tmp_path, cache, monkeypatch):
    result = tune_refused(monkeypatch, tmp_path, cache, *TINY, "--budget", "0.5", "--name", "p", "--storage-path",
                          "/proc/nope")
    assert_usage_error(result, "--storage-path /proc/nope", "cannot be written")
    assert "dense" not in result.stdout
    assert not (tmp_path / "runs" / "sweeps").exists()          # a rerun is not told the sweep already exists


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    folder = tmp_path / "server"
    folder.mkdir()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlflow"), "server",
                             "--backend-store-uri", f"sqlite:///{folder}/db.sqlite",
                             "--artifacts-destination", str(folder / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            # no job runner: its seven consumer processes (GenAI jobs, unused here) took the CPU the
                            # server's own start needs
                            env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + MIN_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (folder / "server.log").read_text()
            assert time.time() < deadline, f"mlflow server did not answer /health in {MIN_TIMEOUT} s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        end_group(proc)
        log.close()


def check_a_range_sweep(cwd, name: str, out: str) -> None:
    """A range sweep (--budget-range 0.2:0.5) scores each trial over the range: the best's curve at four budgets
    spread geometrically, its score the curve's mean, and summary.md says so."""
    folder = cwd / "runs" / "sweeps" / name
    summary = json.load(open(folder / "summary.json"))
    best = summary["sweeps"]["0.5"]["best"]
    assert summary["settings"]["budget_range"] == [0.2, 0.5] and best["status"] == "completed", out
    assert [round(p["budget"], 3) for p in best["curve"]] == [0.2, 0.271, 0.368, 0.5]
    rows = [json.loads(line) for line in open(folder / "trials" / best["trial_id"] / "history.jsonl") if line.strip()]
    assert rows[-1]["score"] == pytest.approx(sum(p["score"] for p in rows[-1]["curve"]) / 4)   # the curve's mean
    md = (folder / "summary.md").read_text()
    assert "one model for every budget in 0.2:0.5" in md and "| 0.271 |" in md


@pytest.mark.slow
def test_a_ladder_sweep_retries_failing_trials_resumes_from_its_rungs_and_registers_its_model(tmp_path, cache,
                                                                                             monkeypatch):
    """--method ladder end to end: each trial makes its rungs, then reports its re-run agent's PPO iterations to ASHA;
    a trial that scores NaN is retried from the start, one that fails mid-agent continues from its checkpoint with
    its rungs read back and scores what an unbroken one would; progress, closing lines, summary, MLflow runs and
    `rtsearch.report` agree; the best deployed ladder is registered in fixed-shape form and answers as its
    deployed.pt does."""
    from mlflow.tracking import MlflowClient
    base = ["--dataset", "digits", "--model", "small", "--dense-epochs", "1", "--num-cpus", "2", "--method", "ladder",
            "--budget", "0.15", "--max-iterations", "3", "--param-budget", "0.6"]
    out = ok(tune(tmp_path, cache, *base, "--num-samples", "2", "--nan-on-iteration", "1", "--fail-on-iteration", "2",
                  "--max-failures", "2", "--name", "ladder"))
    results = tmp_path / "runs" / "sweeps" / "ladder"
    summary = json.load(open(results / "summary.json"))
    assert summary["settings"]["method"] == "ladder" and summary["settings"]["max_iterations"] == 3
    sweep = summary["sweeps"]["0.15"]
    trials = sweep["trials"]
    # Every trial reports a NaN score once at iteration 1 and fails once at iteration 2 (both injected, first
    # attempt only): the NaN attempt has no checkpoint, so the trial starts over; the failure is retried from the
    # trial's last checkpoint. ASHA (rungs at iterations 1 and 3) stops the second trial to reach iteration 1 if it
    # scored below the first there, so which trials complete depends on timing; the first to get there goes on.
    assert "FloatingPointError: score is NaN at iteration 1" in out
    assert "retry 1/2 from its last checkpoint" in out and "retry 2/2 from its last checkpoint" in out
    completed = [t for t in trials if t["status"] == "completed"]
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert len(trials) == 2 and completed and len(completed) + len(stopped) == 2, trials
    assert all(t["attempts"] == 3 for t in completed), trials        # met the NaN and the failure, went on
    for t in stopped:           # stopped at the first rung, below the other's score there, before its failure
        other = next(o for o in trials if o is not t)
        assert (t["attempts"], t["iterations"]) == (2, 1) and t["scores"][0] < other["scores"][0], trials
    assert all(1 <= t["iters_to_best"] <= t["iterations"] for t in trials)
    assert 1 <= sweep["sweep_iters_to_best"] <= sum(t["iterations"] for t in trials)
    md = (results / "summary.md").read_text()
    # a completed trial was re-evaluated on held-out images, and the best is the one the stated rule picks
    assert all(t["holdout_size"] > 0 and t["holdout_score"] is not None for t in completed), trials
    check_best_follows_the_rule(sweep, out, md)
    check_progress_and_closing_lines(out, md, trials, str(tmp_path))
    assert all(set(t["config"]) == set(space.method_keys(methods.get("ladder"))) - {"param_budget", "lr_finetune"}
               for t in trials)        # the agent's keys: the rungs are shared (the rung cache)
    ladder_space = space.load(space.default_path(methods.get("ladder")))
    assert min(trials, key=lambda t: t["started"])["config"] == ladder_space.defaults()
    for t in completed:
        metrics = json.load(open(results / "trials" / t["trial_id"] / "metrics.json"))
        assert metrics["iterations"] == 3 and len(metrics["rungs"]) == 10 and metrics["cascade"]["accuracy"] > 0
        assert metrics["param_budget"] == 0.6 and metrics["params_ratio"] <= 0.6    # what it stores fits the cap
        assert iterations(str(results), t["trial_id"]) == 3
    assert "--iterations 12" in sweep["baseline"]["command"]      # fine-tuned as long as the rungs
    assert "of the ladder's re-run agent" in md
    assert set(sweep["phase_seconds"]) == {"rungs", "agent"} and sweep["phase_seconds"]["rungs"] > 0
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(uri)
    check_ladder_runs_in_mlflow(uri, str(results), sweep)
    best = sweep["best"]
    folder = client.download_artifacts(best["mlflow_run_id"], "", str(tmp_path / "best"))
    log = open(os.path.join(folder, "train.log")).read()
    assert log.count("done before, read back") == 10            # the retry kept its rungs ...
    first_iteration = [line.rsplit("  ", 1)[0] for line in log.splitlines() if line.startswith("iter   1/3")]
    assert len(first_iteration) == 2 and first_iteration[0] == first_iteration[1], first_iteration   # ... and agrees
    assert "models:/rtsearch-digits-small-ladder@best-0_15" in out      # one registered model per method
    check_registered_ladder(uri, folder, best)
    check_read_back_as_the_readme_says(uri, trials, best)
    check_the_report_is_made_again_from_what_the_sweep_stored(results, summary)
    # --resume refuses budgets other than the stored ones (a resume that runs: the MLflow-server test below)
    assert_usage_error(tune_refused(monkeypatch, tmp_path, cache, "--name", "ladder", "--resume", "--budget", "0.3"),
                       "--resume", "0.15")


def check_ladder_runs_in_mlflow(uri: str, results: str, sweep: dict) -> None:
    """One parent run (finished, with the sweep's iterations to the best), one child run per trial with the ladder's
    settings."""
    parents, children = mlflow_runs(uri, "ladder")
    assert len(parents) == 1 and len(children) == 2 and parents.iloc[0]["status"] == "FINISHED"
    assert parents.iloc[0]["metrics.sweep_iters_to_best"] == sweep["sweep_iters_to_best"]
    check_children(uri, parents, children, results, searched="lr_rerun", artifacts=("metrics.json", "deployed.pt"))
    assert parents.iloc[0]["params.method"] == "ladder" and set(children["params.method"]) == {"ladder"}
    assert set(children["params.agent_iterations"]) == {"3"} and set(children["params.param_budget"]) == {"0.6"}


def check_progress_and_closing_lines(out: str, md: str, trials: list[dict], tmp: str) -> None:
    """One line per finished trial as it ends (before the first, the time left is being estimated); the closing
    lines name the best, where it is registered and the MLflow store; one wall clock, labelled alike in the
    closing lines and summary.md, which holds no absolute path of this machine."""
    ended = re.findall(r"^\[budget 0\.15\] trial (\d) of 2 finished: (\w+) score [\d.]+ \(val\), (?:completed|stopped "
                       r"early by ASHA after 1/3 iterations) · best so far [\d.]+ \(trial \w+\) · elapsed \w+ · "
                       r"(?:about \w+ left|no trial left)$", out, re.M)
    assert [n for n, _ in ended] == ["1", "2"], out[-3000:]
    assert sorted(t for _, t in ended) == sorted(t["trial_id"] for t in trials)
    assert "· time left: estimating...\n" in out
    for text in ("best config (trial", "iterations to best", "summary.md", "chosen by: highest",
                 "MLflow runs: experiment 'ladder' in sqlite:///mlruns.db (open with: mlflow ui --backend-store-uri "
                 "sqlite:///mlruns.db)", "[budget 0.15] best model (trial"):
        assert text in out, text
    wall = re.search(r"^sweep 'ladder' done; (wall time, whole sweep incl\. dense pre-training and baseline: \d+ s)$",
                     out, re.M)
    assert wall and f"\n{wall.group(1)}\n" in md, out[-3000:]
    assert tmp not in md


def check_the_report_is_made_again_from_what_the_sweep_stored(results, summary: dict) -> None:
    """python -m rtsearch.report regenerates the same summary (and summary.md) from the sweep's files."""
    for name in ("summary.md", "summary.json", "pareto.png"):
        assert os.path.getsize(results / name) > 0, name
    before = {k: v for k, v in summary.items() if k != "generated"}
    os.remove(results / "summary.md")
    report = run_main("rtsearch.report", str(results))
    assert report.returncode == 0, report.stderr
    after = json.load(open(results / "summary.json"))
    assert {k: v for k, v in after.items() if k != "generated"} == before
    assert os.path.isfile(results / "summary.md")


def check_registered_ladder(uri: str, folder: str, best: dict) -> None:
    """The registered best ladder, loaded by alias, answers as the trial's deployed.pt does."""
    import mlflow
    import mlflow.pytorch
    import torch

    from rtsearch import data
    mlflow.set_tracking_uri(uri)
    registered = mlflow.pytorch.load_model("models:/rtsearch-digits-small-ladder@best-0_15")
    x, y = data.load("digits", 0).test
    deployed = torch.load(os.path.join(folder, "deployed.pt"), weights_only=False).eval()
    with torch.no_grad():
        got, want = registered(x), deployed(x)
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert float((got.argmax(1) == y).float().mean()) == pytest.approx(best["accuracy"])


def check_read_back_as_the_readme_says(uri: str, trials: list[dict], best: dict) -> None:
    """The ladder sweep as its user reads it back with the README's MLflow recipe: the trials with the ladder's own
    settings (not the agents'), and one registered model whose version names the best trial and its figures."""
    from mlflow.tracking import MlflowClient
    from test_mlflow_recipe import check_trial_run, child, run_recipe
    check_trial_run(uri, "ladder", "ladder", best["trial_id"], iterations=3)
    trial = child(uri, "ladder", best["trial_id"])
    assert not {"lam", "lr_runtime", "fixed_ratios", "lr_static"} & set(trial.data.params)
    assert {"lr_rerun", "entropy_rerun", "agent_iterations"} <= set(trial.data.params)
    names, printed = run_recipe(uri, "ladder", "ladder")
    assert "params.lr_rerun" in names["params"] and "params.lam" not in names["params"]
    assert "metrics.val_best_score" in names["figures"] and "metrics.test_score" in names["figures"]
    assert sorted(names["trials"]["tags.rtsearch.trial_id"]) == sorted(t["trial_id"] for t in trials)
    assert best["trial_id"] in printed and "params.lr_rerun" in printed, printed
    assert "{'best-0_15': 1}" in printed and "1 Sweep 'ladder' (MLflow experiment ladder)" in printed, printed
    client = MlflowClient(uri)
    name = "rtsearch-digits-small-ladder"
    assert [m.name for m in client.search_registered_models()] == [name]
    version = client.get_model_version_by_alias(name, "best-0_15")
    assert version.tags["rtsearch.trial_run_id"] == trial.info.run_id == best["mlflow_run_id"]
    assert f"best trial {best['trial_id']} (run {trial.info.run_id})" in version.description
    assert f"accuracy {trial.data.metrics['test_accuracy']:.4f}" in version.description


@pytest.mark.slow
def test_sweep_logs_to_an_mlflow_server_and_a_second_range_sweep_moves_the_alias(tmp_path, cache, mlflow_server):
    # both agents (not the fixed-ratio baseline), one iteration per trial
    out = ok(tune(tmp_path, cache, *TINY_AGENTS, "--max-iterations", "1", "--budget", "0.3,0.5", "--param-budget",
                  "0.8", "--num-samples", "1", "--search", "random", "--name", "http", "--mlflow-uri", mlflow_server))
    assert "pareto (best feasible per budget)" in out and "View run" not in out
    results = str(tmp_path / "runs" / "sweeps" / "http")
    parents, children = mlflow_runs(mlflow_server, "http")
    assert sorted(parents["tags.rtsearch.budget"]) == ["0.3", "0.5"] and len(children) == 2
    check_children(mlflow_server, parents, children, results)
    from mlflow.tracking import MlflowClient
    for run_id in children["run_id"]:        # CPU and memory of each trial, from MLflow's system metrics monitor
        logged = MlflowClient(mlflow_server).get_run(run_id).data.metrics
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(logged), logged
    summary = json.load(open(os.path.join(results, "summary.json")))
    assert {p["budget"] for p in summary["pareto"]} <= {0.3, 0.5}
    for trial_id in children["tags.rtsearch.trial_id"]:                # the agents ran and were rewarded
        with open(os.path.join(results, "trials", trial_id, "history.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        assert rows and all("runtime_reward" in r and "static_reward" in r for r in rows), rows
    assert "## Pareto: best feasible trial per budget" in open(os.path.join(results, "summary.md")).read()
    assert not os.path.exists(tmp_path / "mlruns.db")                  # everything went to the server
    assert f"MLflow runs: experiment 'http' in {mlflow_server} " in out and summary["mlflow_uri"] == mlflow_server
    check_registered_models(mlflow_server, "http", "rtsearch-digits-small-both", summary, tmp_path, out)
    # A budget that finished before its baseline ran (an older sweep, or one killed right then) runs it on
    # --resume, once, and its parent run gets the figures; a budget that has one keeps it. --resume needs only the
    # name (the budgets are stored) and names its own wall clock.
    from rtsearch.search import sweep_baseline as baseline
    os.remove(baseline.path(results, 0.3))
    again = ok(tune(tmp_path, cache, "--name", "http", "--resume"))
    assert "[budget 0.3] baseline: fixed-ratio" in again and "[budget 0.5] baseline" not in again
    assert "[budget 0.3] already finished" in again and "[budget 0.5] already finished" in again
    assert "sweep 'http' done; wall time, this --resume run incl. dense pre-training and baseline: " in again
    summary = json.load(open(os.path.join(results, "summary.json")))
    parents, _ = mlflow_runs(mlflow_server, "http")
    check_baselines(summary, parents, results, tmp_path, cache)
    from mlflow.tracking import MlflowClient
    logged = {row["tags.rtsearch.budget"]: len(MlflowClient(mlflow_server).get_metric_history(
        row["run_id"], "baseline_test_accuracy")) for _, row in parents.iterrows()}
    assert logged == {"0.3": 2, "0.5": 1}          # the resumed budget's parent run got its baseline again
    # The second sweep is a range sweep: one model for every budget in 0.2:0.5, registered under its top's alias.
    from test_mlflow_recipe import check_a_second_sweep_adds_a_version_and_moves_the_alias
    second = check_a_second_sweep_adds_a_version_and_moves_the_alias(
        tmp_path, cache, mlflow_server, "http", [*TINY_AGENTS, "--max-iterations", "1", "--param-budget", "0.8",
                                                 "--search", "random"], budgets=("--budget-range", "0.2:0.5"))
    check_a_range_sweep(tmp_path, "again", second)


def check_baselines(summary, parents, results, cwd, cache):
    """Each budget's fixed-ratio static-only baseline ran once, with the sweep's held-out share and a full
    trial's epochs (2 warm-up + 1 iteration): within its budget, static pruning only, its gain over it in
    the summary and on the MLflow parent run, and its command alone reproduces its test accuracy."""
    for key, sweep in summary["sweeps"].items():
        base = sweep["baseline"]
        assert base["epochs"] == 3 and base["test_images"] > 0
        assert base["macs_ratio"] <= float(key) + 1e-9 and base["params_ratio"] < 1.0
        assert sweep["best_minus_baseline"] == pytest.approx(sweep["best"]["accuracy"] - base["accuracy"])
        assert "--holdout-share 0.15" in base["command"] and "--method static-only" in base["command"]
        parent = parents[parents["tags.rtsearch.budget"] == key].iloc[0]
        assert parent["metrics.baseline_test_accuracy"] == pytest.approx(base["accuracy"])
        assert parent["metrics.best_minus_baseline_accuracy"] == pytest.approx(sweep["best_minus_baseline"])
    md = open(os.path.join(results, "summary.md")).read()
    assert md.count("Fixed-ratio static-only baseline (no agents, same seed and data)") == 2
    base = summary["sweeps"]["0.3"]["baseline"]
    args = shlex.split(base["command"])[3:]
    args[args.index("--out") + 1] = "again"
    again = subprocess.run([sys.executable, "-m", "rtsearch.train", *args], cwd=cwd,
                           env=dict(os.environ, RTSEARCH_CACHE=cache), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.load(open(cwd / "again" / "metrics.json"))["accuracy"] == pytest.approx(base["accuracy"])


def check_registered_models(uri, sweep_name, name, summary, cwd, out):
    """Each budget's best trial, where it meets its budget on test, is registered as <name>@best-<budget> (budget's
    point as "_"): loaded by alias with mlflow.pytorch.load_model it predicts logits on a batch of validation images,
    the same as the masked network of the trial's last Tune checkpoint under its runtime policy; one that misses it
    is not, and the closing lines say why. The experiment opens as model training."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from rtsearch import data
    from rtsearch.net.supervised import policy_forward
    from rtsearch.deploy import deployed
    client = MlflowClient(uri)
    assert client.get_experiment_by_name(sweep_name).tags["mlflow.experimentKind"] == "custom_model_development"
    mlflow.set_tracking_uri(uri)
    x = data.load("digits", 0).val[0][:16]
    for key, sweep in summary["sweeps"].items():
        best = sweep["best"]
        assert best["status"] == "completed" and sweep["best_chosen_by"].startswith("highest best validation score")
        assert best["holdout_size"] > 0 and best["holdout_score"] is not None     # re-evaluated on held-out images
        alias = "best-" + key.replace(".", "_")
        if not best["feasible"]:
            assert f"[budget {key}] best model not registered in MLflow: trial {best['trial_id']} misses" in out
            continue
        version = client.get_model_version_by_alias(name, alias)
        assert version.tags["rtsearch.trial_run_id"] == best["mlflow_run_id"]
        model = mlflow.pytorch.load_model(f"models:/{name}@{alias}")
        with torch.no_grad():
            got = model(x)
        assert got.shape == (16, 10)
        folder = os.path.join(cwd, "runs", "tune", f"{sweep_name}-b{key}", f"trial_{best['trial_id']}")
        run = deployed.load(max(glob.glob(os.path.join(folder, "checkpoint_*", "best.pt"))))
        with torch.no_grad():      # the masked network under the same policy, as the trial evaluated it
            want = policy_forward(run.net, x, run.static_ratios, run.masked_policy())[0]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert torch.equal(got.argmax(1), want.argmax(1))
