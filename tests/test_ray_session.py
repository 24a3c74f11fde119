"""Starting a local Ray instance on a busy machine: Ray gives its raylet a fixed 30 s to register, then raises; the
start is tried again, with what the failed start left behind ended first. `ray.init` is replaced here by a stand-in
that fails as Ray does, so that the retry, not Ray, is what is tested."""
import subprocess

import psutil
import pytest

from rtsearch.rl import ray_session

TIMED_OUT = ("The current node timed out during startup. This could happen because some of the raylet failed to "
             "startup or the GCS has become overloaded.")


class FailingStart:
    """`ray.init` that fails `failures` times as Ray does on a busy machine, each time leaving a process of its own
    behind (as a half-started GCS or raylet would), then succeeds."""

    def __init__(self, failures: int, error: str = TIMED_OUT):
        self.failures, self.error, self.calls, self.left = failures, error, [], []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            self.left.append(subprocess.Popen(["sleep", "60"]))
            raise Exception(self.error)


def gone(proc: subprocess.Popen) -> bool:
    proc.poll()
    return not psutil.pid_exists(proc.pid) or proc.returncode is not None


def test_a_start_that_timed_out_is_made_again_after_ending_what_it_left(monkeypatch):
    start, said = FailingStart(failures=2), []
    monkeypatch.setattr(ray_session.ray, "init", start)
    monkeypatch.setattr(ray_session.ray, "shutdown", lambda: None)
    ray_session.init_local(log=said.append, num_cpus=2)
    assert start.calls == [{"num_cpus": 2}] * 3
    assert all(gone(p) for p in start.left)
    assert len(said) == 2 and "attempt 1 of 3" in said[0] and "starting it again" in said[0]


def test_a_third_timeout_or_any_other_failure_is_raised(monkeypatch):
    monkeypatch.setattr(ray_session.ray, "shutdown", lambda: None)
    start = FailingStart(failures=3)
    monkeypatch.setattr(ray_session.ray, "init", start)
    with pytest.raises(Exception, match="timed out during startup"):
        ray_session.init_local(log=lambda line: None)
    assert len(start.calls) == 3 and all(gone(p) for p in start.left)
    other = FailingStart(failures=1, error="address already in use")
    monkeypatch.setattr(ray_session.ray, "init", other)
    with pytest.raises(Exception, match="already in use"):
        ray_session.init_local(log=lambda line: None)
    assert len(other.calls) == 1
    for p in other.left:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_a_run_without_rollout_workers_starts_no_idle_ray_workers(monkeypatch):
    """A run whose agents sample in its own process (no rollout workers) still needs Ray for RLlib's object store,
    but no worker processes: none is started waiting for tasks. With rollout workers, Ray starts as it would."""
    import time

    import ray
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    try:
        assert ray_session.ensure_ray(num_env_runners=0)
        ray.get(ray.put(1))
        time.sleep(3)                   # Ray's prestarted workers show up within about a second of the driver
        names = [p.name() for p in psutil.Process().children(recursive=True) if p.is_running()]
        assert not [n for n in names if n.startswith("ray::IDLE")], names
        assert any("raylet" in n for n in names), names
    finally:
        ray.shutdown()
    calls = []
    monkeypatch.setattr(ray_session.ray, "init", lambda **kwargs: calls.append(kwargs))
    ray_session.ensure_ray(num_env_runners=2)
    assert "_system_config" not in calls[0] and calls[0]["num_cpus"] >= 3
