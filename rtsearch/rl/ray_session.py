"""The Ray session a run's RLlib agents sample in: the one already up (a Tune trial, a cluster), else a local one."""
from __future__ import annotations

import os

import ray


def ensure_ray(num_env_runners: int) -> bool:
    """Start a local Ray instance unless one is already up (a Tune trial, a cluster). True if started here."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, 1 + num_env_runners), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    return True
