"""results/ is an index of current answers: results/README.md lists every file and sweep folder under results/,
results/sweeps/ and results/archive/ with its status; no file there holds an absolute path of the machine it was
made on; every file the index calls current exists and is not marked superseded or stale; and every training or
search command a current table records names its --method (without one, rtsearch.train and rtsearch.tune run
today's default, which may not be the method the table measured). Reads files only: no training."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
INDEX = RESULTS / "README.md"
# the folders whose entries the index lists one by one (the two containers are described in its text)
LISTED = ["", "sweeps", "archive", "archive/sweeps"]
CONTAINERS = {"README.md", "sweeps", "archive", "archive/sweeps"}
TEXT = {".md", ".json", ".jsonl", ".yaml", ".yml", ".csv", ".txt", ".log"}
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home|Users)/")
MARKER = re.compile(r"^\W*(Superseded|Stale|Reverted)\b")
PATH_CELL = re.compile(r"`(results/[^`]+)`")

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")      # an inline code span, possibly wrapped once
INDENTED = re.compile(r"^ {4,}(\S.*)$", re.M)
COMMAND = re.compile(r"-m rtsearch\.(?:train|tune)\s+-")


def tracked_paths() -> list[str]:
    """Paths under results/, relative to it: what git tracks or would add (ignored outputs left out); the files
    on disk where there is no git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "results"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        paths = [p[len("results/"):] for p in out.splitlines() if (ROOT / p).exists()]
        if paths:
            return paths
    except (OSError, subprocess.CalledProcessError):
        pass
    return [str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*") if p.is_file()]


def entries() -> set[str]:
    """Every file or folder one level inside a LISTED folder, as `results/...` (folders with a trailing /)."""
    found = set()
    for path in tracked_paths():
        parts = path.split("/")
        for folder in LISTED:
            depth = len(folder.split("/")) if folder else 0
            if parts[:depth] == (folder.split("/") if folder else []) and len(parts) > depth:
                name = "/".join(parts[:depth + 1])
                if name not in CONTAINERS:
                    found.add("results/" + name + ("/" if len(parts) > depth + 1 else ""))
    return found


def index_rows() -> list[tuple[str, str]]:
    """(path, status) of every row of the index's tables: the path in its file (or folder) column, its status
    column."""
    rows, header = [], None
    for line in INDEX.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            where = next(i for i, h in enumerate(header) if h in ("file", "folder"))
            paths = PATH_CELL.findall(cells[where])
            assert len(paths) == 1, f"results/README.md: one results/ path per row expected: {line[:120]}"
            rows.append((paths[0], cells[header.index("status")]))
    return rows


def listed(rows) -> set[str]:
    return {path for path, _ in rows}


def commands(text: str) -> list[str]:
    """The rtsearch.train / rtsearch.tune command lines a markdown file records: fenced lines (backslash
    continuations joined), inline code spans and indented code lines that run the module with arguments."""
    found = []
    for block in FENCE.findall(text):
        found += re.sub(r"\\\n\s*", " ", block).splitlines()
    rest = FENCE.sub("", text)
    found += [m.group(1) for m in SPAN.finditer(rest)]
    found += INDENTED.findall(SPAN.sub("", rest))
    found = [" ".join(c.split()) for c in found]
    return [c for c in found if COMMAND.search(c)]


def test_every_entry_under_results_is_in_the_index():
    rows = index_rows()
    missing = sorted(e for e in entries() if e not in listed(rows) and e.rstrip("/") not in listed(rows))
    assert not missing, "not listed in results/README.md:\n" + "\n".join(missing)


def test_no_absolute_machine_path_under_results():
    hits = []
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in TEXT:
            for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if MACHINE_PATH.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not hits, "absolute machine paths (write them relative to the repository root, or <tmp>/...):\n" + \
        "\n".join(hits[:40])


def test_current_entries_exist_and_carry_no_superseded_or_stale_marker():
    rows = index_rows()
    assert rows and any(status == "current" for _, status in rows)
    wrong = []
    for path, status in rows:
        target = ROOT / path
        if status == "being written":
            continue
        if not target.exists():
            wrong.append(f"{path} ({status}): no such file or folder")
            continue
        archived = path.startswith("results/archive/")
        if status.startswith("archived") != archived:
            wrong.append(f"{path}: status {status!r} but {'in' if archived else 'outside'} results/archive/")
        if status == "current" and target.suffix == ".md":
            head = [line for line in target.read_text().splitlines() if line.strip()][:5]
            if any(MARKER.search(line) for line in head):
                wrong.append(f"{path}: marked current, but its first lines say superseded or stale")
    assert not wrong, "\n".join(wrong)


def test_current_tables_name_the_method_of_every_command():
    current = [ROOT / path for path, status in index_rows()
               if status == "current" and path.endswith(".md") and "/" not in path[len("results/"):]]
    assert current
    bare = [f"{path.relative_to(ROOT)}: {c[:140]}" for path in current for c in commands(path.read_text())
            if "--method" not in c]
    assert not bare, "commands without --method (they would run today's default):\n" + "\n".join(bare)


def test_the_command_finder_sees_wrapped_and_fenced_commands():
    text = ("Run `python -m rtsearch.tune --budget 0.5 --name\nx` and `python -m rtsearch.tune` alone.\n\n"
            "```\npython -m rtsearch.train --budget 0.1 \\\n    --method ladder --out runs/a\n```\n\n"
            "    time python -m rtsearch.train --seed 0 --out runs/b\n")
    assert commands(text) == ["python -m rtsearch.train --budget 0.1 --method ladder --out runs/a",
                              "python -m rtsearch.tune --budget 0.5 --name x",
                              "time python -m rtsearch.train --seed 0 --out runs/b"]
