"""The cluster side: launcher configs checked against Ray's own schema, and a real two-node Ray
cluster on 127.0.0.1 (`ray start`) running a sweep submitted with `ray job submit`, with its worker
node killed mid-sweep."""
import copy
import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import HUNG, MIN_TIMEOUT, assert_usage_error
from rtsearch.rl.ray_session import STARTUP_TIMEOUT, STARTUP_TRIES

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


# ---------------------------------------------------------------------------------------- configs

def load_config(name: str) -> dict:
    with open(REPO / "cluster" / name) as f:
        return yaml.safe_load(f)


def validate(config: dict) -> None:
    """Ray's own cluster-config schema, the file `ray up` validates against (ray/autoscaler/ray-schema.json)."""
    import jsonschema
    import ray.autoscaler
    with open(Path(ray.autoscaler.__file__).parent / "ray-schema.json") as f:
        jsonschema.validate(copy.deepcopy(config), json.load(f))


def validate_like_ray_up(config: dict) -> dict:
    """What `ray up` does before it touches a machine: merge the provider's defaults (AWS, local) and
    validate the result (schema, head node type among the node types, min_workers within max_workers)."""
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", ["config.yaml", "local.yaml"])
def test_launcher_configs_pass_rays_schema(name):
    config = load_config(name)
    validate(config)
    prepared = validate_like_ray_up(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_schema_check_catches_a_broken_config():
    import jsonschema
    broken = load_config("config.yaml")
    broken["max_workers"] = "many"                          # a wrong type
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    unknown = load_config("config.yaml")
    unknown["head_node_tpye"] = unknown["head_node_type"]   # an unknown top-level key
    with pytest.raises(jsonschema.ValidationError):
        validate(unknown)
    typo = load_config("config.yaml")
    typo["available_node_types"]["cpu_rollout"]["resources"]["CPU"] = "16"     # a wrong type, deep down
    with pytest.raises(jsonschema.ValidationError):
        validate(typo)
    headless = load_config("config.yaml")
    headless["head_node_type"] = "gpu_head"                 # valid JSON, but no such node type
    validate(headless)
    with pytest.raises(ValueError, match="head_node_type"):
        validate_like_ray_up(headless)


def test_aws_config_has_cpu_head_cpu_and_gpu_workers_and_installs_like_make():
    config = load_config("config.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU", 0) >= 1
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) == 0 and t["resources"].get("CPU", 0) >= 1 for t in workers)
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert all(t["min_workers"] <= t["max_workers"] for t in workers)
    assert "." in config["file_mounts"].values()                # this working tree goes up
    assert any("make install" in c for c in config["setup_commands"])


def test_local_config_uploads_the_tree_and_installs_like_make():
    config = load_config("local.yaml")
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    assert "." in config["file_mounts"].values()
    assert any("make install" in c for c in config["setup_commands"])


# ---------------------------------------------------------------------------------------- cluster

HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port never handed out before in this process: the OS may give a just-closed port again, and
    `ray start` refuses two components on one port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def with_descendants(roots: set[int]) -> set[int]:
    found, pids = set(roots), all_pids()
    while True:
        more = {p for p in pids if parent(p) in found} - found
        if not more:
            return found
        found |= more


def kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Cluster:
    """A Ray cluster of this test's own on 127.0.0.1, stopped by process id only.

    Every process of it carries a marker of its own: its unique temp dir on the command line (the
    Ray daemons) or the RTSEARCH_TEST_CLUSTER variable in its environment (everything the daemons
    start, the job's driver included), so `stop` finds them all and touches nothing else. A node is
    its raylet (found by the node manager port it was given) with the processes under it."""

    def __init__(self):
        self.temp = f"/tmp/rtc{secrets.token_hex(3)}"          # short: Ray's socket paths must fit 107 bytes
        self.port, self.dashboard = free_port(), free_port()
        self.raylets: dict[str, int] = {}                      # node name -> raylet pid
        self.node_ids: dict[str, str] = {}                     # node name -> Ray node id
        # Ray's token authentication, with a token of this cluster's own (never the user's ~/.ray one)
        self.token = secrets.token_hex(32)

    def env(self) -> dict:
        env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RTSEARCH_TEST_CLUSTER=self.temp,
                   # a dead node is noticed in ~3 s instead of ~15 s
                   RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
        env.pop("RAY_ADDRESS", None)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"     # what the job's `python` is
        env["TMPDIR"] = os.path.join(self.temp, "scratch")       # the trials' node-local scratch, removed by stop
        os.makedirs(env["TMPDIR"], exist_ok=True)
        return env

    def ours(self) -> set[int]:
        marker = f"RTSEARCH_TEST_CLUSTER={self.temp}".encode()
        found = set()
        for pid in all_pids():
            if pid == os.getpid():
                continue
            if self.temp in cmdline(pid):
                found.add(pid)
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.add(pid)
            except OSError:
                pass
        return found

    def start(self, name: str, *args: str, ip: str = "127.0.0.1") -> str:
        """`ray start` a node (on loopback address `ip`); returns its Ray node id. Where Ray gave up waiting for the
        node's raylet (its fixed startup wait, which a busy 2-core machine can exceed), the processes the attempt left
        are ended and the node started again, up to STARTUP_TRIES times, as ray_session.init_local does."""
        for attempt in range(1, STARTUP_TRIES + 1):
            before = self.ours()
            manager, command = self._command(ip, args)
            done = subprocess.run(command, capture_output=True, text=True, timeout=MIN_TIMEOUT, env=self.env())
            if done.returncode == 0 or STARTUP_TIMEOUT not in done.stdout + done.stderr or attempt == STARTUP_TRIES:
                break
            kill(with_descendants(self.ours() - before))
        assert done.returncode == 0, done.stdout + done.stderr
        raylets = [p for p in self.ours() if f"--node_manager_port={manager} " in cmdline(p) + " "
                   and "/raylet " in cmdline(p)]
        assert len(raylets) == 1, [cmdline(p)[:300] for p in self.ours()]
        self.raylets[name] = raylets[0]
        self.node_ids[name] = cmdline(raylets[0]).split("--node_id=", 1)[1].split()[0]
        return self.node_ids[name]

    def _command(self, ip: str, args) -> tuple[int, list[str]]:
        """(the node manager's port, the `ray start` command of the next node), on fresh ports."""
        manager = free_port()
        ports = ["--node-manager-port", str(manager), "--object-manager-port", str(free_port()),
                 "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                 "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
                 "--min-worker-port", "0", "--max-worker-port", "0"]
        common = ["--node-ip-address", ip, "--disable-usage-stats", *ports]
        if not self.raylets:
            return manager, [RAY, "start", "--head", "--port", str(self.port), "--temp-dir", self.temp,
                             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard), "--ray-client-server-port", str(free_port()),
                             *common, *args]
        return manager, [RAY, "start", "--address", f"127.0.0.1:{self.port}", *common, *args]

    def kill_node(self, name: str) -> None:
        """The node dies at once: its raylet and every process under it (agents, workers), SIGKILL."""
        kill(with_descendants({self.raylets.pop(name)}))

    def jobs(self):
        from ray.job_submission import JobSubmissionClient
        # The token goes in the header: this process's Ray settings were read at its first `import ray`.
        return JobSubmissionClient(f"http://127.0.0.1:{self.dashboard}",
                                   headers={"Authorization": f"Bearer {self.token}"})

    def stop(self) -> set[int]:
        """Kill every process of this cluster; returns those still alive afterwards (none expected)."""
        for _ in range(10):
            left = with_descendants(self.ours())
            if not left:
                break
            kill(left)
            time.sleep(0.5)
        left = with_descendants(self.ours())
        subprocess.run(["rm", "-rf", self.temp])
        return left


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        left = c.stop()
        assert not left, f"processes of the test cluster outlived it: {[cmdline(p)[:200] for p in left]}"


def wait_job(client, job_id: str, timeout: float) -> tuple[str, str]:
    """(final status, logs) of a Ray job."""
    deadline = time.time() + timeout
    while not client.get_job_status(job_id).is_terminal():
        assert time.time() < deadline, f"job {job_id} ran past {timeout}s:\n{client.get_job_logs(job_id)[-4000:]}"
        time.sleep(1)
    return str(client.get_job_status(job_id)).rsplit(".", 1)[-1], client.get_job_logs(job_id)


def checkout_copy(folder: Path) -> Path:
    """What `ray job submit --working-dir` ships: the package, the launcher scripts, the search spaces."""
    import shutil
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("rtsearch", "cluster", "search_spaces"):
        shutil.copytree(REPO / part, folder / part, ignore=skip)
    shutil.copy(REPO / "pyproject.toml", folder)
    return folder


def histories(workdir: Path, name: str) -> dict:
    rows = {}
    for path in glob.glob(str(workdir / "runs" / "sweeps" / name / "trials" / "*" / "history.jsonl")):
        with open(path) as f:
            rows[Path(path).parent.name] = [json.loads(line) for line in f if line.strip()]
    return rows


def runner_nodes(hist: dict) -> set[str]:
    return {n for rows in hist.values() for r in rows for n in r.get("env_runner_nodes", [])}


def submit_when_ready(client, entrypoint: str, wait: float = 60.0) -> str:
    """Submit a job, retrying while the head's dashboard agent is still starting (Ray answers 500 "No available
    agent to submit job, please try again later" for a few seconds after `ray start`)."""
    deadline = time.time() + wait
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


@pytest.mark.slow
def test_sweep_on_a_two_node_cluster_survives_losing_its_worker(cluster, tmp_path):
    # Two nodes of 2 CPUs, the second marked by a custom resource. A trial with 3 env runners takes
    # 1 + 3 CPU bundles, all 4 CPUs, SPREAD over the two nodes: each node holds at least one runner bundle.
    head = cluster.start("head", "--num-cpus", "2")
    worker = cluster.start("worker", "--num-cpus", "2", "--resources", json.dumps({"worker_node": 2}))
    assert head != worker
    client = cluster.jobs()

    # A job's `python` is this venv's (the cluster was started with its bin first on PATH).
    probe = submit_when_ready(client, "python -c 'import sys; print(\"job python:\", sys.executable)'")
    status, logs = wait_job(client, probe, MIN_TIMEOUT)
    assert status == "SUCCEEDED", logs
    assert f"job python: {Path(sys.executable).parent}/python" in logs, logs

    workdir, storage = tmp_path / "work", tmp_path / "storage"
    workdir.mkdir()
    runtime_env = {"env_vars": {"RTSEARCH_WORKDIR": str(workdir), "RTSEARCH_CACHE": str(tmp_path / "cache")}}
    sweep = ["python", "cluster/search.py", "--budget", "0.5", "--method", "both", "--dataset", "digits",
             "--model", "small",
             "--num-samples", "1", "--max-iterations", "2", "--num-env-runners", "3", "--dense-epochs", "1",
             "--max-failures", "2", "--storage-path", str(storage), "--name", "clu", "--param-budget", "0.8"]
    submit = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard}",
                             "--submission-id", "clu", "--no-wait",
                             "--working-dir", str(checkout_copy(tmp_path / "src")),
                             "--runtime-env-json", json.dumps(runtime_env), "--", *sweep],
                            capture_output=True, text=True, timeout=MIN_TIMEOUT, env=cluster.env())
    assert submit.returncode == 0, submit.stdout + submit.stderr

    # The first iteration of the trial: its rollouts ran on both nodes. Then the worker node dies.
    deadline = time.time() + HUNG
    while not any(histories(workdir, "clu").values()):
        assert not client.get_job_status("clu").is_terminal(), client.get_job_logs("clu")[-4000:]
        assert time.time() < deadline, client.get_job_logs("clu")[-4000:]
        time.sleep(0.5)
    before = histories(workdir, "clu")
    assert runner_nodes(before) == {head, worker}, before
    cluster.kill_node("worker")
    # What an autoscaler does: a fresh node, on an address of its own (127.0.0.2), replaces the lost one, so the
    # retried trial finds room.
    time.sleep(3)
    fresh = cluster.start("worker2", "--num-cpus", "2", "--resources", json.dumps({"worker_node": 2}), ip="127.0.0.2")

    status, logs = wait_job(client, "clu", HUNG)
    assert status == "SUCCEEDED", logs[-4000:]
    summary = json.loads((workdir / "runs" / "sweeps" / "clu" / "summary.json").read_text())
    trials = summary["sweeps"]["0.5"]["trials"]
    assert [t["trial_id"] for t in trials] == list(before), trials                     # not lost, not doubled
    hit = trials[0]
    assert hit["attempts"] >= 2 and hit["status"] == "completed", (trials, logs[-3000:])
    assert f"trial {hit['trial_id']} failed" in logs and "from its last checkpoint" in logs, logs[-3000:]
    after = histories(workdir, "clu")
    for trial_id, rows in after.items():                       # every iteration reported once, none lost
        assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1)), (trial_id, rows)
    assert runner_nodes(after) == {head, worker, fresh}, after  # later rollouts ran on the new node
    local_sqlite_store_is_refused_when_a_node_is_on_another_address(cluster, tmp_path / "shared")


def local_sqlite_store_is_refused_when_a_node_is_on_another_address(cluster, cwd: Path) -> None:
    """A sweep started now, with the default local SQLite store, is refused before any compute: the node on
    127.0.0.2 could not open the driver's SQLite file."""
    cwd.mkdir()
    began = time.time()
    result = subprocess.run([sys.executable, "-m", "rtsearch.tune", "--budget", "0.5", "--dataset", "digits",
                             "--address", f"127.0.0.1:{cluster.port}", "--name", "shared"],
                            capture_output=True, text=True, timeout=MIN_TIMEOUT, cwd=cwd, env=cluster.env())
    assert_usage_error(result, "--mlflow-uri", "127.0.0.2", "mlflow server")
    assert "dense" not in result.stdout
    assert not (cwd / "runs" / "sweeps").exists()
    assert time.time() - began < 60
