"""`python -m rtsearch.bench --pareto` and the compiled deployed forms it times: the fronts and comparisons on
hand-made points, TorchScript forms that answer as the models they compile, and refusals before any run."""
import os

import numpy as np
import pytest
import torch

from conftest import assert_usage_error, run_main
from rtsearch import bench_deployed, bench_pareto
from rtsearch.deploy import compiled
from rtsearch.methods.ladder import LadderModel
from rtsearch.net.fast import SkipNet
from rtsearch.net.models import build_model


def point(kind, budget, ms, accuracy, seed=0, batch=64, macs=None, stored=None):
    return {"model": "small", "kind": kind, "budget": budget, "seed": seed, "batch": batch, "median_ms": ms,
            "accuracy": accuracy, "macs_ratio": macs or budget, "stored_bytes": stored or int(budget * 1e6)}


def test_front_keeps_only_points_nothing_beats_on_both_axes():
    points = [point("tp-l1", 0.05, 1.0, 0.90), point("tp-l1", 0.08, 2.0, 0.89), point("tp-l1", 0.15, 3.0, 0.95),
              point("tp-l1", 0.3, 3.0, 0.96)]
    assert [p["budget"] for p in bench_pareto.front(points, "median_ms")] == [0.05, 0.3]


def test_interpolate_is_linear_between_neighbours_and_none_outside():
    assert bench_pareto.interpolate(1.5, [2.0, 1.0], [0.9, 0.8]) == pytest.approx(0.85)
    assert bench_pareto.interpolate(0.5, [1.0, 2.0], [0.8, 0.9]) is None
    assert bench_pareto.interpolate(2.5, [1.0, 2.0], [0.8, 0.9]) is None


def test_a_point_is_compared_with_the_reference_of_its_own_seed_and_batch():
    rows = [point("tp-l1", 0.05, 1.0, 0.90, stored=100), point("tp-l1", 0.15, 3.0, 0.96, stored=300),
            point("tp-l1", 0.05, 1.0, 0.50, seed=1), point("tp-l1", 0.15, 3.0, 0.60, seed=1),
            point("ladder", 0.08, 2.0, 0.95, macs=0.1, stored=600)]
    [cmp_] = bench_pareto.against_reference(rows)
    assert cmp_["ref_accuracy"] == pytest.approx(0.93)          # halfway between 0.90 and 0.96 (seed 0 only)
    assert cmp_["accuracy_gain"] == pytest.approx(0.02)
    predicted = np.interp(np.log(0.1), np.log([0.05, 0.15]), [1.0, 3.0])   # the MACs-latency curve, log MACs
    assert cmp_["latency_over_macs"] == pytest.approx(2.0 / predicted)
    assert cmp_["bytes_over_ref"] == pytest.approx(600 / (100 + 200 * (0.95 - 0.90) / 0.06))


def test_operating_points_read_each_front_at_the_reference_latency():
    rows = [point("tp-l1", 0.08, 2.0, 0.90), point("tp-l1", 0.15, 4.0, 0.94),
            point("ladder", 0.05, 1.0, 0.91), point("ladder", 0.08, 3.0, 0.95),
            point("both", 0.08, 5.0, 0.97)]
    found = {(p["kind"], p["budget"]): p["gain"] for p in bench_pareto.operating_points(rows)}
    assert found[("ladder", 0.08)] == pytest.approx(0.93 - 0.90)    # its front at 2 ms: halfway from 0.91 to 0.95
    assert found[("ladder", 0.15)] is None                          # its front ends at 3 ms
    assert found[("both", 0.08)] is None                            # its only point is slower than 2 ms
    text = bench_pareto.markdown([{**r, "iqr_ms": 0.1, "eager_ms": 2 * r["median_ms"], "form": "TorchScript",
                                   "params_ratio": r["budget"], "file_bytes": 1} for r in rows], "cmd", "cpu")
    assert "| small | 64 | 0.08 | 2.000 | 0.9000 | ladder | +0.0300 | ahead |" in text
    assert "| small | 64 | 0.15 | 4.000 | 0.9400 | ladder | n/a | no point that slow |" in text
    assert "| small | 64 | 0.08 | 2.000 | 0.9000 | both | n/a | slower: its fastest point takes 5.000 ms |" in text


def skip_net(seed: int, ratio: float) -> SkipNet:
    torch.manual_seed(seed)
    net = build_model("small", widths=[8, 8, 16, 16, 16]).eval()
    with torch.no_grad():       # BatchNorm statistics other than the identity, so folding them is exercised
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    skip = SkipNet(net, [ratio] * net.num_layers)
    with torch.no_grad():       # confident, input-dependent answers, as a trained network gives
        skip.fc_weight.mul_(30.0)
    return skip


def test_compiled_network_answers_as_the_skip_path_at_any_batch():
    skip = skip_net(0, 0.5)
    script = compiled.network(skip, (1, 28, 28))
    for batch in (1, 5, 64):
        x = torch.randn(batch, 1, 28, 28)
        assert torch.allclose(script(x), skip(x), atol=1e-5)


def test_compiled_ladder_answers_and_routes_as_the_ladder():
    rungs = [skip_net(0, 0.8), skip_net(1, 0.5), skip_net(2, 0.0)]
    actor = torch.nn.Linear(21, 4)      # features: 10 sorted probabilities, the entropy (column 10), a one-hot
    with torch.no_grad():               # by entropy: keep the cheap answer, rung 1 or rung 2
        actor.weight.zero_()
        actor.bias.zero_()
        actor.weight[2, 10], actor.bias[2] = 1000.0, -929.0
        actor.weight[3, 10], actor.bias[3] = 2000.0, -1864.0
    model = LadderModel(rungs, actor, [0, 2, 3], [0.0, 0.3, 1.0], 0.1, [0.1, 0.4, 1.1], (1, 28, 28)).eval()
    script = model.compiled()
    x = torch.randn(64, 1, 28, 28) * torch.linspace(0.1, 30.0, 64).view(-1, 1, 1, 1)   # answers that differ
    expected, choice = model.decide(x)
    assert len(set(choice.tolist())) > 1, "the test needs inputs sent to more than one rung"
    assert torch.allclose(script(x), expected, atol=1e-5)
    for i in range(8):       # one input at a time: the path without gathering
        assert torch.allclose(script(x[i:i + 1]), expected[i:i + 1], atol=1e-5)
    path = f"{pytest.importorskip('tempfile').mkdtemp()}/ladder.ts"
    torch.jit.save(script, path)
    assert torch.allclose(torch.jit.load(path)(x), expected, atol=1e-5)


@pytest.mark.parametrize("args, words", [
    (["--models", "small,nope"], ["--models", "nope"]),
    (["--kinds", "ladder"], ["--kinds", "tp-l1"]),
    (["--kinds", "tp-l1,magic"], ["--kinds", "magic"]),
    (["--seeds", "0,x"], ["--seeds"]),
    (["--out", "no/such/folder/p.md"], ["--out", "folder"]),
    (["--no-train", "--train-only"], ["--no-train", "--train-only"]),
])
def test_pareto_bad_input_exits_2_before_any_run(args, words, tmp_path):
    result = run_main("rtsearch.bench", "--pareto", "--runs-dir", str(tmp_path / "runs"), *args)
    assert_usage_error(result, *words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens on a machine without a GPU")
@pytest.mark.parametrize("args", [["--pareto", "--no-train"], ["--deployed", "no-such-run"]])
def test_timing_on_a_gpu_that_cannot_exist_exits_2_at_once(args, tmp_path):
    result = run_main("rtsearch.bench", *args, "--device", "cuda", "--runs-dir", str(tmp_path / "runs"))
    assert_usage_error(result, "--device cuda", "no CUDA GPU")


def test_a_form_that_fails_off_the_cpu_is_a_finding_and_on_the_cpu_a_bug():
    error = RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu!\nmore")
    assert bench_deployed.failed(error, torch.device("cuda")) == \
        "RuntimeError: Expected all tensors to be on the same device, but found cuda:0 and cpu!"
    with pytest.raises(RuntimeError, match="same device"):
        bench_deployed.failed(error, torch.device("cpu"))


def test_a_corrupt_deployed_model_given_to_the_bench_exits_2(tmp_path):
    for name in ("metrics.json", "test_per_input.npz"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "deployed.pt").write_bytes(b"not a torch file")
    assert_usage_error(run_main("rtsearch.bench", "--deployed", str(tmp_path)), "deployed.pt", "cannot be read")
    torch.save({"weights": 1}, tmp_path / "deployed.pt")
    assert_usage_error(run_main("rtsearch.bench", "--deployed", str(tmp_path)), "deployed.pt", "dict")


@pytest.mark.slow
def test_a_started_pareto_run_is_resumed_with_its_own_flags(tmp_path, monkeypatch):
    """A run folder holding run.json but no results (the bench was stopped mid-run) is resumed, not refused."""
    monkeypatch.chdir(tmp_path)
    out = os.path.join("runs", "digits-small", "uniform-0.3-s0")
    run = {"dataset": "digits", "model": "small", "kind": "uniform", "budget": 0.3, "seed": 0, "out": out}
    lines = []
    bench_pareto.make_runs([run], None, log=lines.append)
    assert bench_pareto.finished(out) and os.path.isfile(os.path.join(out, "run.json"))
    for name in bench_pareto.FILES:         # as if stopped after it started: only its manifest and checkpoints left
        os.remove(os.path.join(out, name))
    bench_pareto.make_runs([run], None, log=lines.append)
    log = open(os.path.join(out, "train.log")).read()
    assert bench_pareto.finished(out) and f"resumed {out} after iteration" in log, log[-2000:]


@pytest.mark.slow
def test_a_training_run_that_fails_ends_the_bench_with_one_line_and_no_traceback(tmp_path):
    """Not bad input (exit 1, not 2), but said as plainly: which run, where its log is, what to do."""
    out = tmp_path / "runs" / "digits-small" / "tp-l1-0.03-s0"
    out.mkdir(parents=True)
    (out / "run.json").write_text("{not json")         # a started run whose manifest was damaged: its resume fails
    result = run_main("rtsearch.bench", "--pareto", "--dataset", "digits", "--models", "small", "--kinds", "tp-l1",
                      "--seeds", "0", "--train-only", "--runs-dir", str(tmp_path / "runs"),
                      "--out", str(tmp_path / "p.md"))
    assert result.returncode == 1 and [line for line in result.stderr.splitlines() if "error" in line] == [
        f"rtsearch.bench: error: {out}: rtsearch.train failed (exit 2); its log {out}/train.log says why; fix that "
        f"and run the same command again (finished runs are kept)"], result.stderr
    assert "run.json is corrupt" in (out / "train.log").read_text()


def test_the_pictures_tick_labels_do_not_overlap(tmp_path, monkeypatch):
    """Latencies over about one decade (0.4 to 3.9 ms) and bytes over one and a half: every labelled tick readable."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [point(kind, b, ms, acc, batch=batch, stored=stored)
            for batch in (1, 64) for kind, b, ms, acc, stored in (("tp-l1", 0.05, 0.4, 0.97, 180_000),
                                                                   ("tp-l1", 0.15, 0.85, 0.98, 350_000),
                                                                   ("ladder", 0.08, 2.1, 0.983, 2_500_000),
                                                                   ("dense", 1.0, 3.9, 0.979, 6_800_000))]
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)       # keep the figure the picture was drawn from
    bench_pareto.plot(rows, "small", str(tmp_path / "p.png"))
    monkeypatch.undo()
    assert (tmp_path / "p.png").stat().st_size > 0
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels(which="both")
                 if t.get_visible() and t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(boxes) >= 2, ax.get_xlabel()                 # the axis says where its points are
        boxes.sort(key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), (ax.get_xlabel(), [
            t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text()])
    close(fig)


def test_replot_draws_the_pictures_again_from_the_saved_rows_and_refuses_other_files(tmp_path):
    import json
    rows = [point(kind, b, ms, acc, batch=batch) for batch in (1, 64) for kind, b, ms, acc in
            (("tp-l1", 0.05, 0.4, 0.97), ("tp-l1", 0.15, 0.85, 0.98), ("ladder", 0.08, 2, 0.98))]
    saved = tmp_path / "front.json"
    saved.write_text(json.dumps({"command": "cmd", "device": "CPU: x86_64, 2 cores", "rows": rows, "failures": []}))
    done = run_main("rtsearch.bench", "--pareto", "--replot", str(saved))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "front-small.png").stat().st_size > 0 and f"wrote {tmp_path}/front-small.png" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front-small.png", "front.json"]     # nothing else
    (tmp_path / "other.json").write_text(json.dumps({"rows": [{"model": "small"}], "device": "cpu"}))
    for path in (tmp_path / "nope.json", tmp_path / "other.json"):
        assert_usage_error(run_main("rtsearch.bench", "--pareto", "--replot", str(path)), f"--replot {path}",
                           "--pareto")
