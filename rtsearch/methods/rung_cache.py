"""The rung cache: a ladder's rung is made once per setting and copied into every run that needs it.

Trials of a ladder sweep that share the rungs' settings (seed, budget, fine-tuning) and differ only in the re-run
agent's make the same ten rungs, much of a trial's time; here the first makes each rung and the others copy it.

- **Where.** `<cache>/rungs/<dataset>-<model>-s<seed>-b<budget>-<hash>/` beside the dense models (the cache root is
  rtsearch.net.dense.cache_dir: RTSEARCH_CACHE, else ~/.cache/rtsearch). An entry holds the rung's whole folder
  (deployed.pt, metrics.json, run.json, best.pt, model.pt, checkpoint.pt, test_per_input.npz) and key.json, its
  key. A run copies an entry into its own folder rather than hard-linking it: a file written in place in one
  run's folder would change the entry under every other run. A cache root that is a URI (s3://, gs://) is not
  used for rungs: they are trained as before.
- **Key** (`key`): the dense model's cache name (dataset, model, seed, dense epochs and the data fingerprint, as
  rtsearch.net.dense computes them) and every RunConfig field the rung's run uses (its method's `uses`: budget,
  iterations, fine-tuning epochs and rate, distill, agent_share, holdout_share, ...) but those in UNKEYED; and
  FORMAT, raised when the way a rung is made changes.
- **Writing.** An entry is built in a temporary folder beside it and renamed into place, so a reader never sees
  half of one. A lock file (`<entry>.lock`, fcntl.flock) marks a rung being made. A ladder run that finds a rung
  locked by another process makes its other rungs first (`obtain` with `wait` False) and comes back to it at the
  end, waiting then for the other process and copying its entry: two trials that start together make half the
  rungs each, on two cores, instead of one making them all while the other waits. The lock goes with the process that
  holds it, killed or not. On storage without working locks (some NFS or cluster mounts) both processes train the
  rung and both renames are tried: the first wins, the second finds the folder taken and keeps its own copy in
  its run folder. Both hold a correct rung; the entry is whole either way.
- **Corrupt entries.** An entry whose key.json, metrics.json or deployed.pt cannot be read is moved aside and
  deleted, and the rung is made again, with one line saying so.
- **Seconds.** A rung copied from the cache costs a run the seconds it waited for and copied it, which
  <rung out>/reused.json records; its metrics.json keeps the seconds its training took, once, where it was made.
  A resumed run reads back the copy's seconds, not the training's (`read_back`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from typing import Callable

import torch

from rtsearch import data, storage
from rtsearch.config import RunConfig
from rtsearch.methods import gated
from rtsearch.methods.base import MANIFEST, write_manifest
from rtsearch.net import dense

FORMAT = "rtsearch-rung-1"      # raise it when how a rung is made changes (the pruner, the fine-tuning loop)
# fields a rung's run uses that do not change the rung, and why
UNKEYED = {
    "out": "where a run keeps its copy, not what the rung is",
    "mlflow_run_id": "what the run is logged to",
    "data_dir": "where the data lies: the data fingerprint in the dense model's name stands for what it holds",
    "device": "the CPU and a GPU give the same rung up to float rounding, as thread counts do; the dense model it "
              "starts from is shared across devices the same way",
}
KEY_FILE = "key.json"
REUSED = "reused.json"          # in a run's rung folder copied from the cache: the entry, and the seconds it took
METRICS = "metrics.json"
NEEDED = ("macs_ratio", "params_ratio", "accuracy", "stored_bytes", "seconds")   # what the ladder reads of a rung


def root() -> str | None:
    """The folder rung entries live in, or None where the cache root is a URI."""
    base = dense.cache_dir()
    return None if storage.is_uri(base) else os.path.join(storage.normalise(base), "rungs")


def dense_name(cfg: RunConfig) -> str:
    """The cache name of the dense model the run's rungs start from: dataset, model, seed, dense epochs and the data
    fingerprint, of the splits rtsearch.methods.base.prepared loads."""
    splits = data.hold_out(data.load(cfg.dataset, cfg.seed, cfg.data_dir), cfg.holdout_share, cfg.seed)
    return os.path.basename(dense.cache_path(cfg.dataset, cfg.model, cfg.seed, splits, cfg.dense_epochs))


def key(rc: RunConfig, dense_model: str) -> dict:
    """What determines the rung `rc` makes: FORMAT, the dense model's cache name and the settings its run uses
    (dense epochs as the recipe resolves them, so leaving them unset and naming the default agree)."""
    method = next(m for m in gated.METHODS if m.name == rc.method)
    values = rc.to_dict()
    fields = {name: values[name] for name in sorted(method.uses(rc) - set(UNKEYED))}
    fields["dense_epochs"] = dense.recipe(rc.dataset, rc.model, rc.dense_epochs)["epochs"]
    return json.loads(json.dumps({"format": FORMAT, "dense": dense_model, "run": fields}, sort_keys=True))


def entry_path(rung_key: dict) -> str | None:
    """The entry of a key, named so a person can tell entries apart; None where the cache root is a URI."""
    folder = root()
    if folder is None:
        return None
    run = rung_key["run"]
    digest = hashlib.sha256(json.dumps(rung_key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"{run['dataset']}-{run['model']}-s{run['seed']}-b{run['budget']:g}-{digest}")


def read_entry(entry: str, rung_key: dict) -> tuple[dict | None, str | None]:
    """(the entry's metrics, None) if it is whole and holds `rung_key`, else (None, what is wrong with it)."""
    try:
        with open(os.path.join(entry, KEY_FILE)) as f:
            if json.load(f) != rung_key:
                return None, f"{KEY_FILE} holds another key"
        with open(os.path.join(entry, METRICS)) as f:
            metrics = json.load(f)
        missing = [name for name in NEEDED if name not in metrics]
        if missing:
            return None, f"{METRICS} lacks {', '.join(missing)}"
    except (OSError, ValueError, TypeError) as e:
        return None, f"{KEY_FILE} or {METRICS} unreadable ({type(e).__name__})"
    try:
        torch.load(os.path.join(entry, "deployed.pt"), weights_only=False, map_location="cpu")     # our own pickle
    except Exception as e:      # a truncated or foreign file: torch and pickle raise many kinds
        return None, f"deployed.pt unreadable ({type(e).__name__})"
    return metrics, None


@contextlib.contextmanager
def locked(entry: str, on_wait: Callable[[], None], wait: bool = True):
    """Hold `<entry>.lock` exclusively (fcntl.flock) for the block and yield True; `on_wait` runs once if another
    process holds it. With `wait` False the block gets False at once instead of waiting. Where the filesystem has
    no working locks the block runs unlocked (see the module docstring)."""
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    with open(f"{entry}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            pass
        yield True      # closing the file releases the lock


def copy_file(src: str, dst: str) -> None:
    with storage.replacing(dst) as tmp:
        shutil.copyfile(src, tmp)


def copy_out(entry: str, rc: RunConfig, started: float) -> None:
    """The entry copied into the run's rung folder, its own run.json written for this run, metrics.json last, so a
    copy cut short never looks finished to --resume; reused.json records the entry and the seconds spent."""
    os.makedirs(rc.out, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(rc.out, METRICS))
    for name in sorted(os.listdir(entry)):
        if name not in (KEY_FILE, METRICS, MANIFEST):
            copy_file(os.path.join(entry, name), os.path.join(rc.out, name))
    write_manifest(rc)
    storage.write_json(os.path.join(rc.out, REUSED), {"cache": entry, "seconds": time.time() - started})
    copy_file(os.path.join(entry, METRICS), os.path.join(rc.out, METRICS))


def publish(out: str, entry: str, rung_key: dict) -> bool:
    """The finished rung in `out` made an entry: copied into a temporary folder beside it and renamed into place.
    False if another writer's entry took the name first (storage without working locks): that one stands."""
    tmp = f"{entry}.{uuid.uuid4().hex[:8]}.tmp"
    os.makedirs(tmp)
    try:
        for name in sorted(os.listdir(out)):
            if name != REUSED and not name.endswith(".tmp") and os.path.isfile(os.path.join(out, name)):
                shutil.copyfile(os.path.join(out, name), os.path.join(tmp, name))
        storage.write_json(os.path.join(tmp, KEY_FILE), rung_key)
        try:
            os.rename(tmp, entry)
        except OSError:         # the folder is there and not empty
            return False
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def discard(entry: str) -> None:
    """Move a corrupt entry aside (one rename, so no reader sees it half-deleted), then delete it."""
    aside = f"{entry}.{uuid.uuid4().hex[:8]}.corrupt"
    os.rename(entry, aside)
    shutil.rmtree(aside, ignore_errors=True)


def obtain(rc: RunConfig, rung_key: dict, build: Callable[[], dict], log, head: str,
           wait: bool = True) -> tuple[dict, bool] | None:
    """The rung `rc` in rc.out: copied from its cache entry if there is a whole one, else made by `build` (which
    trains it in rc.out and returns its metrics) and added to the cache. Returns (its metrics, whether it was
    reused); with `wait` False, None at once where another process is making it. `head` starts each line logged
    ("rung 3/10 (MACs budget 0.04)")."""
    entry = entry_path(rung_key)
    if entry is None:
        return build(), False
    started = time.time()
    with locked(entry, lambda: log(f"{head}: another process is making it; waiting for {entry}"), wait) as held:
        if not held:
            return None
        metrics, problem = read_entry(entry, rung_key) if os.path.isdir(entry) else (None, None)
        if metrics is not None:
            copy_out(entry, rc, started)
            log(f"{head}: reused from the rung cache {entry}")
            return metrics, True
        if problem:
            log(f"{head}: the rung cache entry {entry} is corrupt ({problem}): discarded, the rung is made again")
            discard(entry)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(rc.out, REUSED))      # what is in rc.out now is this run's own
        metrics = build()
        try:
            publish(rc.out, entry, rung_key)
        except OSError as e:        # the run has its rung; only later runs miss it
            log(f"{head}: not added to the rung cache {entry} ({e.strerror or type(e).__name__})")
        return metrics, False


def read_back(out: str) -> dict:
    """A finished rung's metrics, for a resumed run; a rung copied from the cache counts the seconds that copy
    took (the run's time), not its training's."""
    with open(os.path.join(out, METRICS)) as f:
        metrics = json.load(f)
    reused = os.path.join(out, REUSED)
    if os.path.isfile(reused):
        with open(reused) as f:
            metrics = {**metrics, "seconds": json.load(f)["seconds"]}
    return metrics
