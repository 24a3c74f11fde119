import numpy as np
import pytest
import torch

from rtsearch import data


@pytest.mark.slow
def test_mnist5k_is_real_stratified_and_reproducible():
    a, b, c = data.load("mnist5k", seed=0), data.load("mnist5k", seed=0), data.load("mnist5k", seed=1)
    assert [len(s[0]) for s in (a.train, a.val, a.test)] == [3500, 500, 1000]
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert np.bincount(a.test[1].numpy()).tolist() == [100] * 10
    assert np.bincount(a.val[1].numpy()).tolist() == [50] * 10
    assert torch.equal(a.test[0], b.test[0]) and not torch.equal(a.test[0], c.test[0])
    # Standardised with training statistics.
    assert abs(float(a.train[0].mean())) < 1e-3 and abs(float(a.train[0].std()) - 1) < 1e-2


def test_digits_loads_small():
    d = data.load("digits", seed=0)
    assert d.input_shape == (1, 8, 8) and sum(len(s[0]) for s in (d.train, d.val, d.test)) == 1797


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_folder_datasets_need_their_files(name, tmp_path):
    with pytest.raises(data.DataError, match="--data-dir"):
        data.load(name)
    with pytest.raises(data.DataError, match="does not exist"):
        data.load(name, data_dir=str(tmp_path / "missing"))
    with pytest.raises(data.DataError, match=str(tmp_path)):
        data.load(name, data_dir=str(tmp_path))


def test_imagefolder_reads_images_and_names_an_unreadable_one(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    splits = data.load("imagefolder", data_dir=str(tmp_path), image_size=16)
    assert splits.input_shape == (3, 16, 16) and splits.num_classes == 2
    assert sum(len(s[0]) for s in (splits.train, splits.val, splits.test)) == 16
    (tmp_path / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(data.DataError, match="broken.png"):
        data.load("imagefolder", data_dir=str(tmp_path), image_size=16)


@pytest.mark.slow
def test_held_out_images_leave_the_training_split_and_a_run_scores_them(tmp_path):
    from rtsearch.config import RunConfig
    from rtsearch.methods import run
    from rtsearch.rl.world import train_split
    splits = data.load("digits", 0)
    held = data.hold_out(splits, 0.15, 0)
    assert len(held.holdout[0]) == round(0.15 * len(splits.train[0]))
    assert len(held.train[0]) + len(held.holdout[0]) == len(splits.train[0])
    rows = lambda x: {tuple(r.flatten().tolist()) for r in x}      # noqa: E731
    assert not rows(held.train[0]) & rows(held.holdout[0])            # disjoint ...
    assert rows(held.train[0]) | rows(held.holdout[0]) == rows(splits.train[0])     # ... and nothing lost
    assert data.hold_out(splits, 0.0, 0) is splits
    assert torch.equal(data.hold_out(data.load("digits", 0), 0.15, 0).holdout[0], held.holdout[0])   # by seed
    # the agents' rewards come from the training split less the held-out images, too
    env_x = train_split({"dataset": "digits", "seed": 0, "holdout_share": 0.15})[0]
    assert torch.equal(env_x, held.train[0])
    cfg = RunConfig(dataset="digits", budget=0.5, iterations=1, fixed_ratios=True, method="runtime-only",
                    holdout_share=0.15, dense_epochs=2, out=str(tmp_path / "run"))
    metrics = run(cfg, log=lambda _: None)
    assert metrics["holdout"]["size"] == len(held.holdout[0])
    assert 0.0 < metrics["holdout"]["accuracy"] <= 1.0 and 0.0 < metrics["holdout"]["macs_ratio"] <= 0.51
    assert "holdout" not in run(RunConfig(**{**cfg.to_dict(), "holdout_share": 0.0, "out": str(tmp_path / "r0")}),
                                log=lambda _: None)
