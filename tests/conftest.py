import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def dense_cache(tmp_path_factory):
    """Every test session trains its dense models into its own cache, never the user's."""
    path = str(tmp_path_factory.mktemp("dense-cache"))
    os.environ["RTSEARCH_CACHE"] = path
    return path


def run_cli(module: str, *args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m module args` the way a user would."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=dict(os.environ))


def assert_usage_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, exactly one stderr line naming the problem, no traceback, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
