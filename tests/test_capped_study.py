"""The capped-ladder study plans resumed runs on copies of the ladder runs' rungs, and refuses to start without them."""
import pytest

from experiments.capped import SETTINGS, main, plan, with_rungs

pytestmark = pytest.mark.study


def test_each_setting_resumes_a_copy_of_the_ladder_runs_rungs(tmp_path):
    runs = plan(str(tmp_path), [0.08], [3], 10)
    assert len(runs) == len(SETTINGS)
    own, *others = runs
    assert own["out"] == own["source"] == f"{tmp_path}/ladder-0.08-s3" and "--resume" not in own["args"]
    for run in others:
        _, cap, width = SETTINGS[run["setting"]]
        assert run["out"] != run["source"] and run["args"][-1] == "--resume"
        assert run["args"][run["args"].index("--param-budget") + 1] == f"{cap:g}"
        assert run["args"][run["args"].index("--rerun-width") + 1] == str(width)
    (tmp_path / "ladder-0.08-s3" / "rungs" / "0.02").mkdir(parents=True)
    (tmp_path / "ladder-0.08-s3" / "run.json").write_text("{}")
    with_rungs(others[0])
    assert (tmp_path / others[0]["out"].rsplit("/", 1)[1] / "rungs" / "0.02").is_dir()
    assert (tmp_path / others[0]["out"].rsplit("/", 1)[1] / "run.json").read_text() == "{}"


def test_without_the_ladder_runs_it_exits_2_in_one_line(tmp_path, capsys):
    assert main(["--runs", str(tmp_path), "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "experiments.peers_study" in err
