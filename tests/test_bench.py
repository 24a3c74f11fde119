"""python -m rtsearch.bench: the no-op env's episode shape, and one tiny throughput run."""
import re

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, run_main
from rtsearch.bench_sampling import NoOpVectorEnv
from rtsearch.rl.observations import RUNTIME_OBS_DIM


def test_noop_env_has_the_runtime_env_spaces_and_next_step_autoreset():
    env = NoOpVectorEnv({"world": {"model": {"widths": [4, 4, 4]}}, "p_max": 0.9}, num_envs=3)
    assert env.single_observation_space.shape == (RUNTIME_OBS_DIM,)
    assert env.action_space.shape == (3, 1) and env.single_action_space.high[0] == np.float32(0.9)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, RUNTIME_OBS_DIM) and not obs.any()
    for episode in range(2):
        for t in range(3):
            obs, reward, terminated, truncated, _ = env.step(np.zeros((3, 1), np.float32))
            assert terminated.all() == (t == 2) and not terminated.any() == (t < 2) and not truncated.any()
            assert not reward.any()
        # NEXT_STEP: the step after the last one only resets (reward 0, not terminated)
        obs, reward, terminated, truncated, _ = env.step(np.zeros((3, 1), np.float32))
        assert not terminated.any() and not reward.any() and obs.shape == (3, RUNTIME_OBS_DIM)


@pytest.mark.slow
def test_sampling_prints_real_and_noop_throughput_and_their_ratio():
    result = run_cli("rtsearch.bench", "--sampling", "--dataset", "digits", "--seconds", "1",
                     "--train-iterations", "0", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    match = re.search(r"runtime env: ([\d,]+) agent steps/s, no-op env: ([\d,]+) agent steps/s.*?; ratio ([\d.]+)",
                      result.stdout)
    assert match, result.stdout
    real, noop = (float(match.group(i).replace(",", "")) for i in (1, 2))
    assert real > 0 and noop > 0
    assert abs(float(match.group(3)) - real / noop) < 0.01
    assert "sampling only ratio" in result.stdout


def test_bad_input_exits_2_with_one_line(tmp_path):
    assert_usage_error(run_main("rtsearch.bench", "--dataset", "digits"), "--sampling")
    assert_usage_error(run_main("rtsearch.bench", "--sampling", "--model", "nope"), "nope")
    assert_usage_error(run_main("rtsearch.bench", "--sampling", "--network", "resnet56:3,32"), "--network")
    # --data-dir is an option of bench too: an empty folder is named for what it lacks
    assert_usage_error(run_main("rtsearch.bench", "--sampling", "--dataset", "cifar10", "--data-dir", str(tmp_path)),
                       "cifar-10-batches-py")
    assert_usage_error(run_main("rtsearch.bench", "--deployed", str(tmp_path)), "--deployed", "deployed.pt")
