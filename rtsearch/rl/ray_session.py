"""The Ray session a run's RLlib agents sample in: the one already up (a Tune trial, a cluster), else a local one."""
from __future__ import annotations

import os

import ray

STARTUP_TRIES = 3
STARTUP_TIMEOUT = "timed out during startup"      # Ray's words when its raylet did not register in time
# Ray starts one worker process per CPU when a driver connects, for tasks to come
NO_PRESTARTED_WORKERS = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}


def ensure_ray(num_env_runners: int) -> bool:
    """Start a local Ray instance unless one is already up (a Tune trial, a cluster). True if started here. Without
    rollout workers the agents sample in this process (RLlib still needs Ray for its object store), so the instance
    starts no idle worker processes for tasks that never come."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        idle_workers = {} if num_env_runners else {"_system_config": NO_PRESTARTED_WORKERS}
        init_local(num_cpus=max(os.cpu_count() or 1, 1 + num_env_runners), include_dashboard=False,
                   log_to_driver=False, configure_logging=False, **idle_workers)
    return True


def init_local(log=print, **kwargs) -> None:
    """`ray.init(**kwargs)` of a local instance, started again (up to STARTUP_TRIES times in all) where Ray gave up
    waiting for its own raylet: Ray allows it a fixed 30 s to register, which a 2-core machine busy with other work
    can exceed. Slow is not broken; any other failure is raised at once."""
    for attempt in range(1, STARTUP_TRIES + 1):
        before = _descendants()
        try:
            ray.init(**kwargs)
            return
        except Exception as e:
            if STARTUP_TIMEOUT not in str(e):
                raise
            _end(_descendants() - before)       # the half-started instance: its GCS and raylet, started here
            ray.shutdown()
            if attempt == STARTUP_TRIES:
                raise
            log(f"Ray's local instance did not start in time (attempt {attempt} of {STARTUP_TRIES}; the machine is "
                f"busy): starting it again")


def _descendants() -> set[int]:
    import psutil
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _end(pids: set[int]) -> None:
    """Kill the given processes (this process's own children: never any other) and wait for them."""
    import psutil
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)
