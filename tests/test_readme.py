"""The README stays a five-minute read whose figures are evidence: at most MAX_LINES lines; every figure in its prose
is written exactly as in a current results file the same section cites; every results file it cites is current in
results/README.md; docs/cli.md holds every flag rtsearch.train and rtsearch.tune print, and every flag the README
names is one of them; no absolute machine path in the README or docs/. Reads files and parsers only: no training."""
import contextlib
import io
import re
from pathlib import Path

import pytest

from test_results_index import index_rows

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI = ROOT / "docs" / "cli.md"
MAX_LINES = 260

# Setting values, not measurements, in sections that cite no results file: `make run`'s MACs budget ("a MACs
# budget of 0.08") and the MLflow alias example ("budget 0.5 is `best-0_5`"). Every other figure must come from a
# current results file its section cites.
SETTINGS = {"0.5", "0.08"}
# Flags the README passes to commands other than rtsearch's entry points, and which command takes them.
OTHER_FLAGS = {"--backend-store-uri": "mlflow ui", "--jobs": "python -m experiments.peers_study"}

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`[^`\n]*`")
COMMENT = re.compile(r"<!--.*?-->", re.S)
FIGURE = re.compile(r"[+\-\u2212]?(?<![\d.])\d+(?:\.\d+)?\s?%|[+\-\u2212]?(?<![\d.])\d+\.\d+(?![\d.])")
CITED = re.compile(r"results/[\w./-]*\w")
PENDING = re.compile(r"\((results/[\w./-]*\w): being measured\)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w-])")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|tmp|home)/")


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of the text before the first `## ` heading and of every `## ` section, fences kept whole."""
    parts, heading, body = [], "(top)", []
    for line in FENCE.sub(lambda m: m.group(0).replace("\n## ", "\n##\u00a0"), text).splitlines():
        if line.startswith("## "):
            parts.append((heading, "\n".join(body)))
            heading, body = line[3:], []
        else:
            body.append(line)
    return parts + [(heading, "\n".join(body))]


def prose(body: str) -> str:
    """A section without its code: fenced blocks, inline code spans (commands, flags, paths) and HTML comments."""
    return SPAN.sub(" ", FENCE.sub(" ", COMMENT.sub(" ", body)))


def status_of() -> dict[str, str]:
    return dict(index_rows())


def in_file(figure: str, text: str) -> bool:
    """`figure` written exactly so in `text`: no digit around it (0.952 is not in 0.9520)."""
    return re.search(r"(?<![\d.])" + re.escape(figure) + r"(?![\d])", text) is not None


def test_the_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines, at most {MAX_LINES}: move depth to docs/"


def test_every_cited_results_path_exists_and_is_current():
    text = README.read_text()
    status = status_of()
    pending = set(PENDING.findall(text))
    wrong = []
    for path in sorted(set(CITED.findall(text)) - {"results/README.md"}):
        if path in pending:
            if path not in status:
                wrong.append(f"{path}: marked 'being measured' in README.md but not listed in results/README.md")
        elif not (ROOT / path).exists():
            wrong.append(f"{path}: no such file")
        elif status.get(path) != "current":
            wrong.append(f"{path}: status {status.get(path, 'not listed')!r} in results/README.md, not current")
    assert not wrong, "\n".join(wrong)


def test_every_figure_is_written_as_in_a_current_results_file_its_section_cites():
    status = status_of()
    wrong = []
    for heading, body in sections(README.read_text()):
        sources = [p for p in set(CITED.findall(body)) - set(PENDING.findall(body))
                   if status.get(p) == "current" and (ROOT / p).is_file()]
        texts = [(ROOT / p).read_text() for p in sources]
        for figure in FIGURE.findall(prose(body)):
            figure = figure.replace(" %", "%")
            if figure.lstrip("+-\u2212") in SETTINGS or any(in_file(figure, t) for t in texts):
                continue
            wrong.append(f"## {heading}: {figure} is in none of {sorted(sources) or 'no cited results file'}")
    assert not wrong, "figures not found verbatim in a current results file cited by their section:\n" + \
        "\n".join(wrong)


def help_texts(monkeypatch) -> dict[str, str]:
    """The --help of rtsearch.train (its parse_args, which exits after printing) and rtsearch.tune (its parser),
    unwrapped (argparse wraps at $COLUMNS, and may break a flag in a help text at its hyphen)."""
    from rtsearch import train, tune
    monkeypatch.setenv("COLUMNS", "1000")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        train.parse_args(["--help"])
    assert done.value.code == 0
    return {"rtsearch.train": out.getvalue(), "rtsearch.tune": tune.parser().format_help()}


def test_docs_cli_holds_every_flag_of_train_and_tune(monkeypatch):
    cli = CLI.read_text()
    documented = set(FLAG.findall(cli))
    missing = [f"{command} {flag}" for command, text in help_texts(monkeypatch).items()
               for flag in sorted(set(FLAG.findall(text)) - documented)]
    assert not missing, "docs/cli.md is stale (regenerate it as its first lines say); missing:\n" + \
        "\n".join(missing)


def test_every_flag_the_readme_names_is_documented():
    documented = set(FLAG.findall(CLI.read_text())) | set(OTHER_FLAGS)
    unknown = sorted(set(FLAG.findall(README.read_text())) - documented)
    assert not unknown, f"README.md names flags that no command in docs/cli.md takes: {unknown}"


def test_no_absolute_machine_path_in_the_readme_or_docs():
    hits = []
    for path in [README, *sorted((ROOT / "docs").rglob("*.md"))]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not hits, "absolute machine paths:\n" + "\n".join(hits)
