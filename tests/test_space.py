"""Search-space files: the format, its validation, and the conversion to a Ray Tune param space."""
import pytest

from conftest import assert_usage_error, tune_refused
from rtsearch import methods
from rtsearch.config import RunConfig
from rtsearch.errors import UsageError
from rtsearch.search import space

AGENTS_SPACE = space.default_path(methods.get("both"))

GOOD = """
lr_runtime: {distribution: loguniform, low: 1e-5, high: 1.0e-3}
lam: {distribution: uniform, low: 0.0, high: 1.0}
beta_f: {distribution: quniform, low: 0.5, high: 4.0, q: 0.5}
p_max: {distribution: choice, values: [0.8, 0.9]}
param_budget: 0.7
"""

# (file text, words the one-line message must hold)
BAD = {
    "unknown key": ("lr_runtim: {distribution: uniform, low: 0.1, high: 0.2}\n", ["'lr_runtim'", "lr_runtime"]),
    "inverted range": ("lam: {distribution: uniform, low: 0.9, high: 0.1}\n", ["'lam'", "low < high"]),
    "empty range": ("beta_f: {distribution: loguniform, low: 2, high: 2}\n", ["'beta_f'", "low < high"]),
    "unknown distribution": ("beta_p: {distribution: gaussian, low: 0.1, high: 2}\n",
                             ["'beta_p'", "gaussian", "loguniform"]),
    "log of zero": ("lr_static: {distribution: loguniform, low: 0, high: 1.0e-3}\n", ["'lr_static'", "low > 0"]),
    "log of negative": ("lr_finetune: {distribution: loguniform, low: -1, high: 1}\n", ["'lr_finetune'", "positive"]),
    "outside the field": ("lam: {distribution: uniform, low: 0.5, high: 2}\n", ["'lam'", "[0, 1]"]),
    "missing bound": ("p_max: {distribution: uniform, low: 0.5}\n", ["'p_max'", "high"]),
    "empty choice": ("p_max: {distribution: choice, values: []}\n", ["'p_max'", "non-empty"]),
    "not a number": ("lam: {distribution: uniform, low: zero, high: 1}\n", ["'lam'", "low", "number"]),
    "malformed yaml": ("lam: {distribution: uniform, low: 0.1, high: 0.9\nbeta_f: [\n", ["not valid YAML", "line"]),
    "not a mapping": ("- lam\n- beta_f\n", ["mapping"]),
    "empty file": ("", ["empty"]),
    "a count from a continuous distribution": ("paper_rl_epochs: {distribution: uniform, low: 1, high: 4}\n",
                                               ["'paper_rl_epochs'", "is a count", "quniform"]),
    "a fractional count": ("paper_backbone_epochs: {distribution: choice, values: [1, 2.5]}\n",
                           ["'paper_backbone_epochs'", "2.5", "whole"]),
    "a fractional count step": ("paper_batch: {distribution: quniform, low: 64, high: 256, q: 32.5}\n",
                                ["'paper_batch'", "32.5", "whole"]),
}


def test_good_space_loads_and_converts(tmp_path):
    from ray.tune.search.sample import Categorical, Float
    path = tmp_path / "space.yaml"
    path.write_text(GOOD)
    s = space.load(str(path))
    assert list(s) == ["lr_runtime", "lam", "beta_f", "p_max", "param_budget"]
    assert s["lr_runtime"].low == 1e-5          # "1e-5" (a string to YAML 1.1) is read as a number
    assert s.searched == ["lr_runtime", "lam", "beta_f", "p_max"]
    tune_space = s.to_tune()
    assert isinstance(tune_space["lr_runtime"], Float) and isinstance(tune_space["p_max"], Categorical)
    assert tune_space["param_budget"] == 0.7
    assert space.from_dict(s.to_dict(), s.path).describe() == s.describe()


def test_counts_are_sampled_as_whole_numbers(tmp_path):
    """Epochs and a batch size reach the trial, its MLflow parameters and the summary as 4, not 4.0."""
    from ray import tune
    from ray.tune.search.sample import Integer
    path = tmp_path / "space.yaml"
    path.write_text("paper_rl_epochs: {distribution: choice, values: [2, 4.0]}\n"
                    "paper_batch: {distribution: quniform, low: 64, high: 256, q: 64}\npaper_backbone_epochs: 2.0\n")
    s = space.from_dict(space.load(str(path)).to_dict(), str(path))        # as a resumed sweep reads it back
    tune_space = s.to_tune()
    assert isinstance(tune_space["paper_batch"], Integer) and tune_space["paper_backbone_epochs"] == 2
    assert type(tune_space["paper_backbone_epochs"]) is int
    assert s.defaults() == {"paper_rl_epochs": RunConfig.paper_rl_epochs, "paper_batch": RunConfig.paper_batch}
    assert all(type(v) is int for v in s.defaults().values())
    for _ in range(20):
        drawn = {k: d.sample() if isinstance(d, tune.search.sample.Domain) else d for k, d in tune_space.items()}
        assert all(type(v) is int for v in drawn.values()), drawn
        assert drawn["paper_rl_epochs"] in (2, 4) and drawn["paper_batch"] in (64, 128, 192, 256)


def test_defaults_point_is_the_run_defaults_moved_into_the_space(tmp_path):
    """The first trial of a sweep: RunConfig's values of the searched keys, clipped, rounded or snapped
    to the nearest allowed value; fixed keys are not part of it."""
    path = tmp_path / "space.yaml"
    path.write_text(GOOD.replace("high: 1.0e-3", "high: 1.0e-4"))       # the default lr_runtime (3e-4) lies above
    point = space.load(str(path)).defaults()
    assert point == {"lr_runtime": 1e-4, "lam": RunConfig.lam, "beta_f": 1.0, "p_max": 0.9}
    default = space.load(AGENTS_SPACE)
    assert default.defaults() == {k: getattr(RunConfig, k) for k in default.searched}   # inside the shipped space


def test_default_space_covers_every_searched_field():
    s = space.load(AGENTS_SPACE)
    assert set(s) == set(space.method_keys(methods.get("both")))      # the two agents' keys; the ladder's below
    assert "param_budget" not in space.for_sweep(s, 0.8)
    assert "param_budget" in space.for_sweep(s, None)
    assert space.check_method(s, methods.get("both")) is s


def test_the_ladder_space_searches_the_ladders_keys_from_its_defaults():
    method = methods.get("ladder")
    ladder = space.check_method(space.load(space.default_path(method)), method)
    # the agent's keys only: every trial then shares the same rungs (the rung cache)
    assert set(ladder.searched) == set(space.method_keys(method)) - {"param_budget", "lr_finetune"}
    assert ladder.defaults() == {k: getattr(RunConfig, k) for k in ladder.searched}   # inside the shipped space


def test_a_ladder_space_may_search_the_parameter_budget(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr_rerun: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
                    "param_budget: {distribution: uniform, low: 0.2, high: 0.6}\n")
    ladder = space.check_method(space.load(str(path)), methods.get("ladder"))
    assert set(ladder.searched) == {"lr_rerun", "param_budget"}


@pytest.mark.parametrize("method, key, words", [
    ("ladder", "lam", ["lam does nothing for --method ladder", "search_spaces/ladder.yaml"]),
    ("ladder", "beta_f", ["beta_f does nothing for --method ladder", "param_budget"]),
    ("both", "lr_rerun", ["lr_rerun does nothing for --method both", "--method ladder"]),
])
def test_a_key_the_method_ignores_is_refused(method, key, words, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(f"lr_finetune: {{distribution: loguniform, low: 1.0e-4, high: 1.0e-3}}\n{key}: 0.5\n")
    with pytest.raises(UsageError) as err:
        space.check_method(space.load(str(path)), methods.get(method))
    for word in words:
        assert word in str(err.value)


def test_nothing_left_to_search(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("param_budget: {distribution: uniform, low: 0.3, high: 1.0}\nlam: 0.5\n")
    with pytest.raises(UsageError, match="nothing to search"):
        space.for_sweep(space.load(str(path)), 0.8)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_is_one_line_naming_the_key(case, tmp_path):
    text, words = BAD[case]
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        space.load(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message


def test_missing_space_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        space.load(str(tmp_path / "nope.yaml"))


# The command line: each case ends with exit 2 and one stderr line, before any compute.
@pytest.mark.parametrize("case", ["unknown key", "inverted range", "unknown distribution", "log of zero",
                                  "malformed yaml", "missing file"])
def test_tune_cli_rejects_bad_space(case, tmp_path, monkeypatch):
    path = tmp_path / "space.yaml"
    if case != "missing file":
        path.write_text(BAD[case][0])
    words = BAD[case][1] if case != "missing file" else ["does not exist", "--space"]
    result = tune_refused(monkeypatch, tmp_path, None, "--budget", "0.5", "--dataset", "digits", "--method", "both",
                          "--space", str(path))
    assert_usage_error(result, *words)
    assert not (tmp_path / "runs" / "sweeps").exists() and not (tmp_path / "mlruns.db").exists()


# --space as a user types it: a relative path from the working folder, else from the shipped search_spaces/.
@pytest.mark.parametrize("given, method", [("search_spaces/default.yaml", "both"), ("default.yaml", "both"),
                                           ("search_spaces/ladder.yaml", "ladder")])
def test_a_relative_space_path_falls_back_on_the_shipped_folder(given, method, tmp_path, monkeypatch):
    from rtsearch import tune
    monkeypatch.chdir(tmp_path)            # a folder without search_spaces/
    args, _, _ = tune.parse_args(["--budget", "0.5", "--method", method, "--space", given])
    assert args.space == space.default_path(methods.get(method))


def test_a_space_path_in_the_working_folder_comes_first(tmp_path, monkeypatch):
    from rtsearch import tune
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "default.yaml").write_text("lam: {distribution: uniform, low: 0.1, high: 0.2}\n")
    monkeypatch.chdir(tmp_path)
    args, _, _ = tune.parse_args(["--budget", "0.5", "--method", "both", "--space", "search_spaces/default.yaml"])
    assert args.space == str(tmp_path / "search_spaces" / "default.yaml")


@pytest.mark.parametrize("given", ["search_spaces/nowhere.yaml", "nowhere.yaml"])
def test_a_space_path_found_nowhere_names_both_folders(given, tmp_path, monkeypatch):
    result = tune_refused(monkeypatch, tmp_path, None, "--budget", "0.5", "--dataset", "digits", "--method", "both",
                          "--space", given)
    assert_usage_error(result, f"--space {given} does not exist", f"working folder {tmp_path} ",
                       f"nor in {space.shipped_dir()}", "default.yaml, ladder.yaml")
    assert result.stderr.startswith("rtsearch.tune: error: ")
    assert not (tmp_path / "runs" / "sweeps").exists()
