"""Where `--method paper`'s static agent leaves its budget (`python -m experiments.paper_drift`): writes
results/paper-static-drift.md from finished runs' metrics.json, training nothing.

Four tables:
- every default `paper` run (mnist5k / small and mcifarnet, budgets 0.255, 0.15 and 0.08, seeds 0 to 2, and small at
  0.08 seed 3): the static agent's greedy keep per layer against the width its Gaussian is centred on, the parameters
  of that keep against its cap, the test MACs and accuracy;
- seed 2 at 0.08 on small made again, with the static agent held at its start (`--paper-lr-static 1e-9`: the
  setting must be above 0, so a rate too small to move it) and without a static budget (`--paper-static-budget 1`);
- at every small budget, seeds 0 to 2, against the default runs (learned): the static agent held at its start, and
  both caps made targets (`--paper-under target`: what either agent leaves under its cap charged at the wall's slope
  at the cap; not the paper's), each with the verdict of experiments' usual rule (a difference counts where its mean
  exceeds the larger seed-to-seed standard deviation).
A run not finished is listed as missing; the command that makes each run is on the page. The page's "## Reading"
section is written by hand from the tables: made again, the page keeps the one it had (`READING`).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from experiments.agents_study import against, command_line, mean_sd
from experiments.paper_study import read_metrics
from rtsearch.cli import ArgumentParser, fail

PROG = "python -m experiments.paper_drift"
BUDGETS, SEEDS = (0.255, 0.15, 0.08), (0, 1, 2)
SAME = 1e-3         # keep fractions that differ by less than this across layers: one width on every layer
HELD_LR = "1e-9"    # the static agent's learning rate that holds it at its start
FIELDS = ("keep_static", "static_width_budget", "static_params_ratio", "param_cap", "macs_ratio", "accuracy",
          "history")
READING = "\n## Reading"     # the hand-written section the page keeps when it is made again


def train_command(model: str, budget: float, seed: int, out: str, flags: str = "") -> str:
    return (f"python -m rtsearch.train --method paper{flags} --dataset mnist5k --model {model} --budget {budget:g} "
            f"--seed {seed} --out {out}")


def default_runs(small: str, mcifarnet: str, diag: str) -> list[dict]:
    runs = [{"model": model, "budget": b, "seed": s, "out": f"{root}/paper-{b:g}-s{s}"}
            for model, root in (("small", small), ("mcifarnet", mcifarnet)) for b in BUDGETS for s in SEEDS]
    runs.insert(9, {"model": "small", "budget": 0.08, "seed": 3, "out": f"{diag}/paper-0.08-s3"})
    return [{**r, "command": train_command(r["model"], r["budget"], r["seed"], r["out"])} for r in runs]


def seed2_runs(diag: str) -> list[dict]:
    variants = [("paper-0.08-s2-again", "", "the default command again"),
                ("paper-frozen-static-0.08-s2", f" --paper-lr-static {HELD_LR}",
                 "the static agent held at its start"),
                ("paper-static1-0.08-s2", " --paper-static-budget 1", "no static budget")]
    return [{"out": f"{diag}/{name}", "what": what, "command": train_command("small", 0.08, 2, f"{diag}/{name}", flags)}
            for name, flags, what in variants]


# the variants run at every small budget and seed beside the default: name, folder prefix, flags
HELD = ("held", "paper-frozen-static", f" --paper-lr-static {HELD_LR}")
TARGET = ("target", "paper-target", " --paper-under target")


def variant_runs(diag: str, variant: tuple[str, str, str]) -> list[dict]:
    _, prefix, flags = variant
    return [{"budget": b, "seed": s, "out": f"{diag}/{prefix}-{b:g}-s{s}",
             "command": train_command("small", b, s, f"{diag}/{prefix}-{b:g}-s{s}", flags)}
            for b in BUDGETS for s in SEEDS]


def keep_text(keep: list[float], every: str = "") -> str:
    lo, hi = min(keep), max(keep)
    return f"{lo:.3f}{every}" if hi - lo < SAME else f"{lo:.3f} to {hi:.3f}"


def of_cap(m: dict) -> float:
    return m["static_params_ratio"] / m["param_cap"]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def present(m: dict | None, width: int, cells) -> list[str]:
    """`cells(m)` for a finished run's metrics; "missing" and blanks, `width` cells in all, for a run not finished."""
    return ["missing"] + [""] * (width - 1) if m is None else cells(m)


def keep_table(runs: list[dict]) -> list[str]:
    def cells(m: dict) -> list[str]:
        return [f"{m['static_width_budget']:.3f}", keep_text(m["keep_static"]), f"{of_cap(m):.2f}",
                f"{m['macs_ratio']:.4f}", f"{m['accuracy']:.4f}"]

    return table(["backbone", "run", "budget", "static centre width", "static keep per layer (greedy, min to max)",
                  "static params / its cap", "test MACs ratio", "test accuracy"],
                 [[r["model"], f"`{r['out']}`", f"{r['budget']:g}", *present(r["metrics"], 5, cells)] for r in runs])


def seed2_table(runs: list[dict]) -> list[str]:
    def cells(m: dict) -> list[str]:
        return [keep_text(m["keep_static"], " on every layer"), f"{of_cap(m):.2f}", f"{m['macs_ratio']:.4f}",
                f"{m['accuracy']:.4f}", ", ".join(f"{h['accuracy']:.3f}" for h in m["history"])]

    return table(["run", "command", "static keep", "static params / its cap", "test MACs ratio", "test accuracy",
                  "validation accuracy per outer epoch"],
                 [[f"`{r['out']}` ({r['what']})", f"`{r['command']}`", *present(r["metrics"], 5, cells)]
                  for r in runs])


def variant_table(learned: dict, runs: list[dict], name: str) -> list[str]:
    """Each variant run beside the default (learned) run of its budget and seed: both figures and the difference."""
    def cells(m: dict) -> list[str]:
        return [f"{m['accuracy']:.4f}", f"{m['macs_ratio']:.4f}", f"{of_cap(m):.2f}"]

    rows = []
    for r in runs:
        a, h = learned.get((r["budget"], r["seed"])), r["metrics"]
        rows.append([f"{r['budget']:g}", str(r["seed"]), *present(a, 3, cells), *present(h, 3, cells),
                     "" if a is None or h is None else f"{h['accuracy'] - a['accuracy']:+.4f}"])
    return table(["budget", "seed", "learned: test accuracy", "MACs ratio", "static params / its cap",
                  f"{name}: test accuracy", "MACs ratio", "static params / its cap", f"{name} - learned"], rows)


def figures(defaults: list[dict], learned: dict, variants: dict[str, list[dict]]) -> list[str]:
    """The page's figures, computed: how far under its cap the static keep settles, and each variant against the
    default runs."""
    done = [r for r in defaults if r["metrics"] is not None]
    shares = [of_cap(r["metrics"]) for r in done]
    lines = []
    if done:
        settled = [x for x in shares if x >= 0.5]
        lines.append(f"- Static parameters over their cap in the {len(done)} default runs: {min(shares):.2f} to "
                     f"{max(shares):.2f}; above 1 in {sum(x > 1 for x in shares)}; {len(settled)} of {len(done)} at "
                     f"0.5 or more of it" + (f" ({min(settled):.2f} to {max(settled):.2f})" if settled else "") + ".")
        for model in ("small", "mcifarnet"):
            ms = [r for r in done if r["model"] == model]
            near = sum(abs(r["metrics"]["macs_ratio"] - r["budget"]) <= 0.01 for r in ms)
            if ms:
                lines.append(f"- {model}: {near} of {len(ms)} default runs end within 0.01 of their MACs budget on "
                             f"test; {sum(r['metrics']['macs_ratio'] < r['budget'] for r in ms)} under it.")
    for name, runs in variants.items():
        for budget in BUDGETS:
            pairs = [(learned[(budget, r["seed"])], r["metrics"]) for r in runs
                     if r["budget"] == budget and r["metrics"] is not None and learned.get((budget, r["seed"]))]
            if len(pairs) < 2:
                continue
            a, h = (np.array([p[i]["accuracy"] for p in pairs]) for i in (0, 1))
            gain, spread, _ = against(h, a)
            higher = int(np.sum(h > a))
            verdict = "beyond the spread" if abs(gain) > spread else "within the spread"
            macs = [[p[i]["macs_ratio"] for p in pairs] for i in (1, 0)]
            near = sum(abs(x - budget) <= 0.01 for x in macs[0])
            lines.append(f"- {name.capitalize()}, budget {budget:g}: {mean_sd(h)} against learned {mean_sd(a)}, "
                         f"{gain:+.4f} against the larger seed-to-seed standard deviation {spread:.4f}: {verdict} "
                         f"({name} higher in {higher} of {len(pairs)} seeds); mean test MACs {np.mean(macs[0]):.4f} "
                         f"{name} ({near} of {len(pairs)} within 0.01 of the budget), {np.mean(macs[1]):.4f} learned.")
    return lines


def page(defaults: list[dict], seed2: list[dict], held: list[dict], target: list[dict], command: str) -> str:
    learned = {(r["budget"], r["seed"]): r["metrics"] for r in defaults if r["model"] == "small" and r["seed"] in SEEDS}
    return "\n".join([
        "# Where `--method paper`'s static agent leaves its budget", "",
        "Why does `--method paper` spend less than its MACs budget at 0.15 and 0.08 on mnist5k / small "
        "(`results/paper-0.15.md`, `results/paper-0.08.md`), and what takes seed 2 at 0.08 so far under it? Produced "
        "by", "", "```", command, "```", "",
        "from each run's metrics.json (nothing trained): `keep_static` (the static agent's greedy keep fraction per "
        "layer), `static_width_budget` (the width its Gaussian is centred on), `static_params_ratio` over `param_cap` "
        "(the parameters of its keep against its cap), `macs_ratio` and `accuracy` (test), and the validation "
        "accuracy per outer epoch (`history`). The default runs are those of the pages named above and of "
        "`results/paper.md`, `results/paper-mcifarnet.md` and `results/paper-mcifarnet-low.md`; the runs of the last "
        "three tables were made for this page (CPU, one torch thread each, two at a time). Each run's command is in "
        "its table or below it.", "",
        "## The static agent's keep against its centre", "", *keep_table(defaults), "",
        "Each run: `python -m rtsearch.train --method paper --dataset mnist5k --model <backbone> --budget <budget> "
        "--seed <seed> --out <run>`; seed 3 is a seed none of the other pages uses.", "",
        "## Seed 2 at 0.08, the static agent held or freed", "", *seed2_table(seed2), "",
        "## The static agent learned or held at its start, seeds 0 to 2", "",
        f"Held: the same command with `--paper-lr-static {HELD_LR}` (`{held[0]['command']}`, at every budget and "
        "seed); learned: the default runs of `results/paper.md`, `results/paper-0.15.md` and `results/paper-0.08.md`. "
        "Held, the static agent's greedy keep stays at its centre width, and whole channels (ceil) put its parameters "
        "at or a little over its cap.", "", *variant_table(learned, held, "held"), "",
        "## Both caps made targets, seeds 0 to 2", "",
        f"Target: the same command with `--paper-under target` (`{target[0]['command']}`, at every budget and seed; "
        "not the paper's): under its cap, instead of the runtime agent's bonus of 0.1 (cap - c) and the static agent's "
        "nothing, each agent is charged (scale / T)(cap - cost), the slope of the exponential wall at the cap (40 at "
        "the defaults 1.2 and 0.03); learned: the same default runs.", "", *variant_table(learned, target, "target"),
        "", "## Figures", "", "Computed from the tables above; the reading below is written by hand from them.", "",
        *figures(defaults, learned, {"held": held, "target": target}), ""])


def finished(out: str) -> dict | None:
    """The run's metrics.json (None where it has none), refused where it is not a finished `--method paper` run."""
    try:
        metrics = read_metrics(out)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{out}/metrics.json cannot be read ({e}); train the run again", "experiments.paper_drift")
    lacking = [k for k in FIELDS if metrics is not None and k not in metrics]
    if lacking:
        fail(f"{out} is not a finished --method paper run (its metrics.json has no {lacking[0]}); move it aside or "
             f"train it again", "experiments.paper_drift")
    return metrics


def kept_reading(path: str) -> str:
    """The page's hand-written reading, from its heading to the end, if the page holds one."""
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        text = f.read()
    return text[text.index(READING):] if READING in text else ""


def arguments() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--small-dir", default="runs/paper-study", help="folder of the default small runs "
                   "(experiments.paper_study's)")
    p.add_argument("--mcifarnet-dir", default="runs/paper-mcifarnet", help="folder of the default mcifarnet runs")
    p.add_argument("--diag-dir", default="runs/diag", help="folder of the seed-3, seed-2, held and target runs")
    p.add_argument("--out", default="results/paper-static-drift.md", help="the page written")
    return p


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    for flag, folder in (("--small-dir", args.small_dir), ("--mcifarnet-dir", args.mcifarnet_dir),
                         ("--diag-dir", args.diag_dir)):
        if not os.path.isdir(folder):
            fail(f"{flag} {folder}: no such folder (give the folder that holds the runs)", "experiments.paper_drift")
    diag = args.diag_dir.rstrip("/")
    defaults = default_runs(args.small_dir.rstrip("/"), args.mcifarnet_dir.rstrip("/"), diag)
    seed2, held, target = seed2_runs(diag), variant_runs(diag, HELD), variant_runs(diag, TARGET)
    for run in defaults + seed2 + held + target:
        run["metrics"] = finished(run["out"])
    text = page(defaults, seed2, held, target, command_line(PROG, argv)) + kept_reading(args.out)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
