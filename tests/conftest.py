import os
import signal
import subprocess
import sys

import pytest

# Seconds some tests took in one run of the whole suite (results/suite-time.md): a scheduling hint only. The
# workers take tests in collection order; run last, two sweeps of several minutes leave the other workers idle while
# they finish, so the modules holding the longest tests go first and the short ones fill the end.
LONGEST = {"test_cluster.py::test_sweep_on_a_two_node_cluster": 130,
           "test_tune.py::test_a_ladder_sweep": 116,
           "test_tune.py::test_sweep_logs_to_an_mlflow_server": 140,
           "test_method_contract.py::test_run_manifest_resume_export_and_the_deployed_model[ladder]": 92,
           "test_front.py::test_a_front_sweep": 85,
           "test_method_contract.py::test_run_manifest": 55,
           "test_loop.py::": 20}


def expected_seconds(item) -> int:
    if not (item.get_closest_marker("slow") or item.get_closest_marker("study")):
        return 0
    name = item.nodeid.split("/")[-1]
    return next((s for prefix, s in LONGEST.items() if name.startswith(prefix)), 5)


def pytest_collection_modifyitems(items):
    """The modules with the longest tests first, the longest first within each (a stable sort: otherwise in the
    order collected). A module's tests stay together, so its module-scoped fixtures are made once."""
    seconds = {item: expected_seconds(item) for item in items}
    module_max: dict[str, int] = {}
    for item, s in seconds.items():
        module_max[item.nodeid.split("::")[0]] = max(module_max.get(item.nodeid.split("::")[0], 0), s)
    modules = list(module_max)
    items.sort(key=lambda item: (-module_max[item.nodeid.split("::")[0]], modules.index(item.nodeid.split("::")[0]),
                                 -seconds[item]))


@pytest.fixture(scope="session", autouse=True)
def dense_cache(tmp_path_factory):
    """Every test session trains its dense models into its own cache, never the user's."""
    path = str(tmp_path_factory.mktemp("dense-cache"))
    os.environ["RTSEARCH_CACHE"] = path
    return path


def run_cli(module: str, *args: str, timeout: float | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m module args` the way a user would. `timeout` only catches a hung process: HUNG unless given,
    never less than MIN_TIMEOUT, so that a verdict does not depend on how loaded the machine is."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=HUNG if timeout is None else max(timeout, MIN_TIMEOUT), cwd=cwd, env=dict(os.environ))


MIN_TIMEOUT = 300       # seconds: a fresh interpreter importing torch and Ray on a busy 2-core machine
# Seconds after which a whole sweep (or a cluster's job) is taken for hung. Never a verdict on speed: beside another
# CPU-heavy job on this 2-core machine a tiny ladder sweep took over 300 s and a cluster trial's first iteration
# over 240 s, which is slow, not broken. Under pyproject's per-test timeout (1200 s), which catches the rest.
HUNG = 900


def run_main(module: str, *args: str) -> subprocess.CompletedProcess:
    """Call `module.main(args)` in this process, with what it prints captured: for bad input, which must
    end before any compute, the same exit status and lines as `run_cli` without a fresh interpreter's
    start-up (seconds per case). A traceback raises here and fails the test."""
    import contextlib
    import importlib
    import io
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = importlib.import_module(module).main(list(args)) or 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def tune_refused(monkeypatch, cwd, cache, *args: str) -> subprocess.CompletedProcess:
    """`rtsearch.tune` run by `run_main` in `cwd`, for a sweep refused before any compute (so no Ray, no trial);
    the dense cache in `cache` (None: the default), and what the driver would leave in the environment put back."""
    monkeypatch.chdir(cwd)
    if cache is not None:
        monkeypatch.setenv("RTSEARCH_CACHE", cache)
    before = dict(os.environ)
    try:
        return run_main("rtsearch.tune", *args)
    finally:
        os.environ.clear()
        os.environ.update(before)


def assert_usage_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, exactly one stderr line naming the problem, no traceback, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def check_deployed_model_scores_as_the_run(out):
    """deployed.pt (static channels removed, the run's runtime policy on the skip path) scores on the test
    split what metrics.json says, at the same MACs ratio."""
    import json

    import pytest
    import torch

    from rtsearch import data
    from rtsearch.net import checkpoint
    from rtsearch.net.cost import CostModel
    metrics = json.loads((out / "metrics.json").read_text())
    model = torch.load(out / "deployed.pt", weights_only=False)
    x, y = data.load("digits", 0).test
    outputs = [model.skip.run(x[i:i + 1], model.policy) for i in range(len(x))]
    accuracy = float((torch.cat([o[0] for o in outputs]).argmax(1) == y).float().mean())
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
    state = checkpoint.load(str(out / "best.pt"))
    net = checkpoint.network(state)     # its predictors are counted where the method keeps them
    cost = CostModel(net, predictors=state["config"]["pruning"]["runtime"])
    macs = cost.macs_ratio(torch.tensor([o[1] for o in outputs]), torch.tensor(model.skip.widths))
    assert float(macs.mean()) == pytest.approx(metrics["macs_ratio"], abs=1e-6)


def start(cwd, cache, *args, log=None) -> subprocess.Popen:
    """Start `python -m rtsearch.tune args` in `cwd` (dense models in `cache`) in a session of its own, so that
    whatever it leaves (Ray's processes included) can be ended by its group id."""
    return subprocess.Popen([sys.executable, "-m", "rtsearch.tune", *args], cwd=cwd, text=True,
                            env=dict(os.environ, RTSEARCH_CACHE=cache), start_new_session=True,
                            stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT if log else subprocess.PIPE)


def end_group(proc: subprocess.Popen) -> None:
    """Kill what is left of the process group this test started (Ray agents outlive a killed driver)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tune(cwd, cache, *args, timeout=HUNG) -> subprocess.CompletedProcess:
    """`rtsearch.tune` run to its end; `timeout` (at least MIN_TIMEOUT) only catches a hung sweep."""
    timeout = max(timeout, MIN_TIMEOUT)
    proc = start(cwd, cache, *args)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"rtsearch.tune ran past {timeout}s:\n{out[-3000:]}\n{err[-3000:]}")
    finally:
        end_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def ok(result: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must have exited 0 (else its last lines in the failure)."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def kill_9_after_a_trial_ends(cwd, cache, name: str, *args) -> dict:
    """Start the sweep `name` (`rtsearch.tune args`), kill -9 its driver (by its pid only) as soon as one of its
    trials has finished, and end what it left; returns the finished trials' records (trial.json) at that moment."""
    import glob
    import json
    import time
    results = os.path.join(cwd, "runs", "sweeps", name)
    log_path = os.path.join(cwd, f"{name}-killed.log")
    with open(log_path, "w") as log:
        proc = start(cwd, cache, *args, "--name", name, log=log)
        try:
            finished, deadline = {}, time.time() + HUNG
            while not finished:
                assert proc.poll() is None, open(log_path).read()
                assert time.time() < deadline, open(log_path).read()
                time.sleep(0.5)
                for path in glob.glob(os.path.join(results, "trials", "*", "trial.json")):
                    try:
                        record = json.load(open(path))
                    except json.JSONDecodeError:
                        continue
                    if record.get("status") in ("completed", "stopped"):
                        finished[record["trial_id"]] = record
            proc.send_signal(signal.SIGKILL)            # the driver only, by its pid
            proc.wait(timeout=30)
        finally:
            end_group(proc)
    assert proc.returncode == -signal.SIGKILL
    return finished
