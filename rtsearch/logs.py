"""Progress output shared by every layer: where log lines go, and quieting the libraries' start-up
notices so that the lines about this run stay readable."""
from __future__ import annotations


def log_to_stdout(message: str) -> None:
    print(message, flush=True)


def quiet_libraries() -> None:
    """Keep progress output readable: drop the libraries' start-up notices that say nothing about
    this run (RLlib's new-API-stack and deprecation notices, gymnasium re-registering RLlib's env,
    Tune's optional GPU monitor, Ray's local token-authentication notice). Errors still show.
    Call it after RLlib is imported: RLlib sets its own log level on import."""
    import logging
    import warnings
    warnings.filterwarnings("ignore", message=".*Overriding environment.*already in registry.*")
    for name in ("ray.rllib", "ray._common.deprecation", "ray.tune.utils.util", "ray._private.authentication"):
        logging.getLogger(name).setLevel(logging.ERROR)
