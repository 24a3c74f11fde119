"""Where a sweep keeps what every node must see (Tune's experiment folders, the dense cache): a local
or shared folder, or any URI Ray Tune accepts (s3://, gs://, ...), read and written through pyarrow's
filesystems as Tune itself does. A URI passes through untouched; only a plain path is made absolute.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import uuid

from rtsearch.errors import UsageError

CHECK_TIMEOUT_S = 30


def is_uri(path: str) -> bool:
    return "://" in path


def normalise(path: str) -> str:
    """A URI as given; a plain path made absolute (trials run in other working folders)."""
    return path if is_uri(path) else os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def _filesystem(uri: str):
    import pyarrow.fs
    return pyarrow.fs.FileSystem.from_uri(uri)


def _probe(path: str) -> None:
    """Create the folder and write, read back and delete one small file in it."""
    name = f".rtsearch-probe-{uuid.uuid4().hex}"
    if not is_uri(path):
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, name)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
        return
    fs, root = _filesystem(path)
    fs.create_dir(root, recursive=True)
    probe = f"{root.rstrip('/')}/{name}"
    with fs.open_output_stream(probe) as f:
        f.write(b"ok")
    fs.delete_file(probe)


def check_writable(path: str, flag: str = "--storage-path", timeout: float = CHECK_TIMEOUT_S) -> None:
    """Fail fast with a UsageError (one line) when `path` cannot be written, before any compute.
    A remote store gets `timeout` seconds: without a network it may not answer at all."""
    outcome: dict = {}

    def attempt():
        try:
            _probe(path)
            outcome["ok"] = True
        except Exception as e:  # any filesystem, credential or network error says the same to the user
            outcome["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    if outcome.get("ok"):
        return
    reason = outcome.get("error") or f"no answer within {timeout:.0f}s"
    raise UsageError(f"{flag} {path} cannot be written ({reason}): pass a folder every node can write "
                     f"(a shared mount) or a reachable s3:// or gs:// URI with credentials")


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.isfile(path)
    import pyarrow.fs
    fs, root = _filesystem(path)
    return fs.get_file_info(root).type == pyarrow.fs.FileType.File


def download(path: str, local: str) -> None:
    """Copy a file from `path` (a URI or a local path) to the local file `local`."""
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    if not is_uri(path):
        shutil.copyfile(path, local)
        return
    fs, root = _filesystem(path)
    with fs.open_input_stream(root) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst)


@contextlib.contextmanager
def replacing(path: str):
    """A temporary name beside `path`, unique to this writer, moved onto `path` when the block ends without an
    error (and removed when it raises): `path` is never half-written, whether a reader looks mid-write, the
    writer is killed (its temporary file stays behind), or a second process writes it at once (two runs making
    one dense model)."""
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def latest_checkpoint(trial_path: str, holding: str):
    """The newest `checkpoint_*` folder of a Tune trial folder (a URI or a local path) that holds the file `holding`,
    as a Tune Checkpoint; None where there is none. What a trial wrote to storage survives a driver killed before
    its own state recorded that checkpoint."""
    import pyarrow.fs
    from ray import tune
    fs, root = pyarrow.fs.FileSystem.from_uri(trial_path if is_uri(trial_path) else os.path.abspath(trial_path))
    try:
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError:
        return None
    folders = sorted((f.path for f in found if f.type == pyarrow.fs.FileType.Directory
                      and f.base_name.startswith("checkpoint_")), reverse=True)
    for folder in folders:
        if fs.get_file_info(f"{folder}/{holding}").type == pyarrow.fs.FileType.File:
            return tune.Checkpoint(folder, filesystem=fs)
    return None


def upload(local: str, path: str) -> None:
    """Copy the local file `local` to `path` (a URI or a local path), whole or not at all."""
    if not is_uri(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with replacing(path) as tmp:
            shutil.copyfile(local, tmp)
        return
    fs, root = _filesystem(path)
    fs.create_dir(root.rsplit("/", 1)[0], recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(root) as dst:
        shutil.copyfileobj(src, dst)


def write_json(path: str, payload) -> None:
    """Atomic write, its folder made if need be: a reader (or a killed writer) never leaves a half-written file."""
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)


def save_plot(fig, ax, path: str) -> None:
    """A one-axes matplotlib figure finished alike everywhere (grid, legend where something is labelled) and
    written as a PNG whole or not at all, then closed."""
    import matplotlib.pyplot as plt
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
