"""The device of a run: one place decides it (rtsearch.device), every phase computes there, a GPU that
cannot exist is refused at once, and the CIFAR path trains with the standard augmentation."""
import json
import pickle
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import assert_usage_error, run_cli, run_main, tune_refused
from rtsearch import data, device

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens on a machine without a GPU")


@no_gpu
@pytest.mark.parametrize("module, args, words", [
    ("rtsearch.train", ["--device", "cuda"], ["--device cuda", "no CUDA GPU"]),
    ("rtsearch.tune", ["--budget", "0.5", "--device", "cuda", "--gpus-per-trial", "1"], ["--device cuda", "no CUDA"]),
    ("rtsearch.tune", ["--budget", "0.5", "--device", "cuda"], ["--device cuda", "--gpus-per-trial"]),
    ("rtsearch.tune", ["--budget", "0.5", "--dataset", "digits", "--num-samples", "1", "--gpus-per-trial", "1"],
     ["--gpus-per-trial 1", "0 GPU"]),
    ("rtsearch.train", ["--device", "tpu"], ["--device", "auto, cpu, cuda"]),
])
def test_a_gpu_that_cannot_exist_exits_2_at_once(module, args, words, tmp_path, monkeypatch):
    began = time.time()
    monkeypatch.chdir(tmp_path)
    assert_usage_error(tune_refused(monkeypatch, tmp_path, None, *args) if module == "rtsearch.tune"
                       else run_main(module, *args), *words)
    assert time.time() - began < 30
    assert not (tmp_path / "runs" / "sweeps").exists()


def test_resolve_is_the_one_decision():
    assert device.resolve("cpu") == torch.device("cpu")
    assert device.resolve("cuda") == torch.device("cuda")
    assert device.resolve("auto", gpu_ids=[]) == torch.device("cpu")        # a trial Ray gave no GPU
    assert device.resolve("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.slow
@no_gpu
def test_cpu_and_auto_give_the_same_numbers(tmp_path):
    metrics = []
    for name in ("cpu", "auto"):
        out = tmp_path / name
        result = run_cli("rtsearch.train", "--dataset", "digits", "--budget", "0.3", "--method", "both",
                         "--fixed-ratios", "--iterations", "2", "--device", name, "--out", str(out))
        assert result.returncode == 0, result.stderr
        m = json.loads((out / "metrics.json").read_text())
        metrics.append({k: m[k] for k in ("accuracy", "macs_ratio", "params_ratio", "score")} |
                       {"history": [{k: r[k] for k in ("accuracy", "macs_ratio", "score")} for r in m["history"]]})
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_every_phase_of_a_run_computes_on_the_run_device(tmp_path, monkeypatch):
    # Every forward of a gated layer during a run with both agents (dense start, warm-up, the runtime
    # env's batched walk and the static env's evaluation in-process, fine-tuning, calibration,
    # evaluation, the test split) sees its input on the device rtsearch.device decided, as do its weights.
    from rtsearch.config import RunConfig
    from rtsearch.net.pruning import GatedConv
    from rtsearch.rl import loop
    from rtsearch.methods import run
    decided, seen, phases = [], [], set()
    real_resolve = device.resolve
    monkeypatch.setattr(device, "resolve", lambda *a, **k: decided.append(real_resolve(*a, **k)) or decided[-1])

    def record(module, args):
        if isinstance(module, GatedConv):
            seen.append((args[0].device, module.conv.weight.device))

    real_agents = loop.Agents

    class Watched(real_agents):
        def __init__(self, cfg, net, cost):
            super().__init__(cfg, net, cost)
            phases.add(("env", self.runtime.config.env_config["device"], self.static.config.env_config["device"]))

    monkeypatch.setattr(loop, "Agents", Watched)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        cfg = RunConfig(dataset="digits", method="both", budget=0.4, iterations=1, warmup_epochs=1,
                        out=str(tmp_path / "run"), device="cpu")
        run(cfg, log=lambda _: None)
    finally:
        handle.remove()
    assert decided == [torch.device("cpu")]                       # decided once, in one place
    assert phases == {("env", "cpu", "cpu")}                       # the in-process envs were handed that device
    assert len(seen) > 100 and set(seen) == {(decided[0], decided[0])}


def test_recorder_says_what_a_waiting_sweep_waits_for(capsys):
    from rtsearch.search.recorder import WAIT_NOTE_S, Recorder
    recorder = Recorder("/nonexistent", 0.5, 2, 3, 1, None, "budget 0.5", None)
    trial = SimpleNamespace(status="PENDING", placement_group_factory=SimpleNamespace(bundles=[{"CPU": 1, "GPU": 1}]))
    recorder.say_what_it_waits_for([trial], now=0.0, free={"CPU": 2.0})
    recorder.say_what_it_waits_for([trial], now=WAIT_NOTE_S - 1, free={"CPU": 2.0})
    assert capsys.readouterr().out == ""                            # not before a minute has passed
    recorder.say_what_it_waits_for([trial], now=WAIT_NOTE_S + 1, free={"CPU": 2.0, "memory": 1e9})
    line = capsys.readouterr().out
    assert "1 trial(s) pending and none running" in line and "1 CPU, 1 GPU" in line and "2 CPU free" in line
    running = SimpleNamespace(status="RUNNING")
    recorder.say_what_it_waits_for([trial, running], now=10 * WAIT_NOTE_S, free={})
    assert capsys.readouterr().out == ""                            # a running trial: nothing to say


def write_cifar(root, name="cifar10", per_batch=24, classes=10, seed=0):
    """Small files in torchvision's CIFAR layout (the python version: pickled batches of uint8 rows)."""
    from torchvision.datasets import CIFAR10, CIFAR100
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    key = b"labels" if name == "cifar10" else b"fine_labels"
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for file_name, _ in cls.train_list + cls.test_list:
        labels = np.arange(per_batch) % classes
        images = rng.integers(0, 64, (per_batch, 3, 32, 32)) + (labels * 16)[:, None, None, None]  # learnable
        with open(folder / file_name, "wb") as f:
            pickle.dump({b"data": images.astype(np.uint8).reshape(per_batch, -1), key: labels.tolist()}, f)
    return root


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_layout_is_read_and_trains_with_augmentation(tmp_path, name, classes):
    splits = data.load(name, data_dir=str(write_cifar(tmp_path, name, classes=classes)))
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == classes and splits.augment
    train_files = 5 if name == "cifar10" else 1                     # data_batch_1..5, or one "train" file
    assert len(splits.train[0]) + len(splits.val[0]) == train_files * 24 and len(splits.test[0]) == 24
    assert not data.load("digits").augment


def test_random_crop_flip_is_a_padded_crop_per_image():
    x = torch.arange(3 * 2 * 6 * 6, dtype=torch.float32).view(3, 2, 6, 6) + 1
    y = data.random_crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(3):
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(y[i], w) or torch.equal(y[i], w.flip(2)) for w in windows)
    assert y.shape == x.shape and not torch.equal(y, x)


@pytest.mark.slow
def test_cifar_run_end_to_end_on_generated_files(tmp_path):
    root = write_cifar(tmp_path / "data")
    out = tmp_path / "run"
    result = run_cli("rtsearch.train", "--dataset", "cifar10", "--data-dir", str(root), "--model", "small",
                     "--budget", "0.5", "--method", "both", "--fixed-ratios", "--iterations", "1",
                     "--dense-epochs", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "dense epoch 2/2" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 1 and metrics["feasible"] and 0.0 <= metrics["accuracy"] <= 1.0
