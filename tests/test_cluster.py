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


@pytest.mark.parametrize("name", ["config.yaml", "local.yaml"])
def test_launcher_configs_pass_rays_schema(name):
    validate(load_config(name))


def test_schema_check_catches_a_broken_config():
    import jsonschema
    broken = load_config("config.yaml")
    broken["max_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    unknown = load_config("config.yaml")
    unknown["head_node_tpye"] = unknown["head_node_type"]
    with pytest.raises(jsonschema.ValidationError):
        validate(unknown)


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


# ---------------------------------------------------------------------------------------- cluster

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """A Ray cluster of this test's own: every process it starts carries its unique temp dir on its
    command line (or descends from one that does), so it is stopped by process id, nothing else."""

    def __init__(self, root: Path):
        self.temp = f"/tmp/rtc{secrets.token_hex(3)}"          # short: Ray's socket paths must fit 107 bytes
        self.port, self.dashboard = free_port(), free_port()
        self.nodes: dict[str, set[int]] = {}
        self.root = root
        # Ray's token authentication, with a token of this cluster's own (never the user's ~/.ray one)
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}

    def ours(self) -> set[int]:
        return {p for p in all_pids() if self.temp in cmdline(p) and p != os.getpid()}

    def start(self, name: str, *args: str) -> None:
        before = self.ours()
        ports = ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                 "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                 "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
                 "--min-worker-port", "0", "--max-worker-port", "0"]
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", *ports]
        if name == "head":
            command = [RAY, "start", "--head", "--port", str(self.port), "--temp-dir", self.temp,
                       "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                       "--dashboard-port", str(self.dashboard), "--ray-client-server-port", str(free_port()),
                       *common, *args]
        else:
            command = [RAY, "start", "--address", f"127.0.0.1:{self.port}", *common, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=self.env())
        assert done.returncode == 0, done.stdout + done.stderr
        self.nodes[name] = self.ours() - before - set().union(*self.nodes.values())

    def env(self) -> dict:
        env = dict(os.environ, **self.auth)
        env.pop("RAY_ADDRESS", None)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def kill_node(self, name: str) -> None:
        kill(with_descendants(self.nodes.pop(name)))

    def stop(self) -> None:
        for _ in range(5):
            left = with_descendants(self.ours())
            if not left:
                break
            kill(left)
            time.sleep(1)
        subprocess.run(["rm", "-rf", self.temp])


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path)
    for key, value in c.auth.items():          # this test's own Jobs API client authenticates too
        monkeypatch.setenv(key, value)
    try:
        yield c
    finally:
        c.stop()


def job_client(cluster):
    from ray.job_submission import JobSubmissionClient
    return JobSubmissionClient(f"http://127.0.0.1:{cluster.dashboard}")


def histories(workdir: Path, name: str) -> dict:
    rows = {}
    for path in glob.glob(str(workdir / "results" / name / "trials" / "*" / "history.jsonl")):
        with open(path) as f:
            rows[Path(path).parent.name] = [json.loads(line) for line in f if line.strip()]
    return rows


@pytest.mark.slow
def test_sweep_on_a_two_node_cluster_survives_losing_its_worker(cluster, tmp_path):
    # Two nodes of 2 CPUs; the second marked by a custom resource. A trial with 3 env runner bundles
    # plus its own takes all 4 CPUs, so its rollouts necessarily run on both nodes.
    cluster.start("head", "--num-cpus", "2")
    cluster.start("worker", "--num-cpus", "2", "--resources", json.dumps({"worker_node": 2}))
    assert cluster.nodes["worker"], "the worker node started no process of its own"
    workdir, storage = tmp_path / "work", tmp_path / "storage"
    workdir.mkdir()
    entry = [sys.executable, str(REPO / "cluster" / "search.py"), "--budget", "0.5", "--dataset", "digits",
             "--model", "small", "--num-samples", "2", "--max-iterations", "3", "--num-env-runners", "3",
             "--dense-epochs", "1", "--max-failures", "2", "--storage-path", str(storage), "--name", "clu",
             "--param-budget", "0.8"]
    runtime_env = {"env_vars": {"RTSEARCH_WORKDIR": str(workdir), "RTSEARCH_CACHE": str(tmp_path / "cache")}}
    submit = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard}",
                             "--submission-id", "clu", "--no-wait", "--runtime-env-json", json.dumps(runtime_env),
                             "--", *entry], capture_output=True, text=True, timeout=120, env=cluster.env())
    assert submit.returncode == 0, submit.stdout + submit.stderr
    client = job_client(cluster)

    # Let the first trial report an iteration with rollouts on both nodes, then kill the worker node.
    deadline = time.time() + 300
    while True:
        status = client.get_job_status("clu")
        assert not status.is_terminal(), client.get_job_logs("clu")[-4000:]
        assert time.time() < deadline, client.get_job_logs("clu")[-4000:]
        rows = [r for h in histories(workdir, "clu").values() for r in h]
        if rows:
            break
        time.sleep(1)
    nodes_before = {n for r in rows for n in r.get("env_runner_nodes", [])}
    assert len(nodes_before) == 2, rows          # env runners ran on both nodes of the cluster
    cluster.kill_node("worker")
    time.sleep(5)
    # What an autoscaler does: a fresh worker node replaces the lost one, so the retry finds room.
    cluster.start("worker2", "--num-cpus", "2", "--resources", json.dumps({"worker_node": 2}))

    deadline = time.time() + 420
    while not client.get_job_status("clu").is_terminal():
        assert time.time() < deadline, client.get_job_logs("clu")[-4000:]
        time.sleep(2)
    logs = client.get_job_logs("clu")
    assert str(client.get_job_status("clu")) in ("SUCCEEDED", "JobStatus.SUCCEEDED"), logs[-4000:]

    summary = json.loads((workdir / "results" / "clu" / "summary.json").read_text())
    trials = summary["sweeps"]["0.5"]["trials"]
    assert len(trials) == 2, trials                                        # none lost
    assert all(t["status"] in ("completed", "stopped") for t in trials), trials
    assert any(t["attempts"] >= 2 for t in trials), (trials, logs[-3000:])  # the hit trial was retried
    assert "from its last checkpoint" in logs
    for trial_id, h in histories(workdir, "clu").items():                 # no iteration reported twice
        assert [r["iteration"] for r in h] == list(range(1, len(h) + 1)), (trial_id, h)
    nodes_after = {n for h in histories(workdir, "clu").values() for r in h for n in r.get("env_runner_nodes", [])}
    assert len(nodes_after - nodes_before) >= 1                           # later rollouts ran on the new node
