"""Command-line plumbing shared by the entry points: bad input ends with exit status 2 and one
line on stderr naming the problem and the fix, before any compute is spent."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from rtsearch.config import GROUPS, RunConfig, bounds_text, flag_of
from rtsearch.data import DATASETS, check_data_dir
from rtsearch.errors import DataError, UsageError
from rtsearch.net.models import MODELS


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit status 2, named as the user ran it: `prog`
    "python -m rtsearch.tune" shows that command in --help and "rtsearch.tune: error: ..." on bad input."""

    def error(self, message):
        named = self.prog.startswith("python -m ")
        fail(f"{message} (see --help)", self.prog.removeprefix("python -m ") if named else entry_name("__main__"))


def fail(message: str, name: str | None = None) -> None:
    """One line on stderr, "<name>: error: <message>", and exit status 2 (`name`: the script's file name if None)."""
    print(f"{name or os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def entry_name(module: str) -> str:
    """How the entry point defined in `module` is run: its module name (rtsearch.tune), also when it runs as
    `python -m rtsearch.tune` (then its module is __main__ and the name is in its spec), else the script's name."""
    if module != "__main__":
        return module
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None and spec.name else os.path.basename(sys.argv[0])


def fraction(name: str):
    """argparse type for a budget in (0, 1]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number in (0, 1], got {text!r}") from None
        if not 0.0 < value <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} must be in (0, 1], got {text}: pass e.g. {name} 0.5")
        return value
    return parse


def add_config_flags(parser: argparse.ArgumentParser, config_class, texts: dict | None = None,
                     choices: dict | None = None, types: dict | None = None) -> None:
    """One flag per documented field of `config_class` (rtsearch.config: RunConfig, SweepConfig), in the field's
    --help group, with its help (or `texts[name]`), its default and the values it may take (`choices[name]` as
    argparse choices, `types[name]` as its argparse type; by default the field's own). No flag has a default in the
    parsed namespace: what is there was given (`given_fields`), so a flag the chosen method does not use can be
    refused whatever its value."""
    texts, choices = texts or {}, {"finetune": ("greedy", "sandwich"), "paper_budget": ("input", "mean"),
                                     "paper_reward": ("wall", "lagrangian"),
                                     "paper_pruner": ("dpratio", "nested"), "paper_under": ("bonus", "target"),
                                     **(choices or {})}
    listed = {"dataset": DATASETS, "model": tuple(MODELS)}     # checked by check_dataset_and_model, named there
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items() if title}
    for f in fields(config_class):
        flag = flag_of(f)
        if flag is None:
            continue
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        if f.metadata["group"] in groups:
            kwargs["help"] = help_of(f, texts.get(f.name, f.metadata["help"]), listed.get(f.name))
        if isinstance(f.default, bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs["type"] = (types or {}).get(f.name) or field_type(f)
            kwargs["metavar"] = f.metadata.get("metavar") or f.name.upper().replace("_", "-")
            if f.name in choices:
                kwargs["choices"], kwargs["metavar"] = choices[f.name], None
        groups.get(f.metadata["group"], parser).add_argument(flag, **kwargs)


def help_of(f, text: str, listed: tuple | None) -> str:
    """A field's --help line: its text, the values listed, its default and its bounds. A field on by default has a
    --no-... flag: its text says what the setting does, so the line adds that the flag turns it off."""
    if listed:
        text += f" (one of {', '.join(listed)})"
    if f.default is True:
        text += "; on by default, this flag turns it off"
    shown = f.default is None or isinstance(f.default, bool) or "(default" in text
    bounds = None if isinstance(f.default, bool) else bounds_text(f)
    return (f"{text}{'' if shown else f'; default {f.default}'}" + (f"; {bounds}" if bounds else "")).replace("%", "%%")


def field_type(f):
    """The argparse type of a field from its annotation (`int | None` -> int)."""
    annotation = str(f.type)
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str



def given_fields(args: argparse.Namespace, config_class=RunConfig) -> dict:
    """The fields of `config_class` given on the command line, with their values."""
    names = {f.name for f in fields(config_class)}
    return {name: value for name, value in vars(args).items() if name in names}


def check_dataset_and_model(dataset: str, model: str, data_dir: str | None) -> None:
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    try:
        check_data_dir(dataset, data_dir)
    except DataError as e:
        raise UsageError(str(e)) from None


def guarded(main):
    """Run an entry point, turning UsageError / DataError into exit 2 with one line named after the entry point, and a
    run that diverged (FloatingPointError) into exit 1 with one line."""
    def wrapper(argv=None):
        try:
            return main(argv)
        except (UsageError, DataError) as e:
            fail(str(e), entry_name(main.__module__))
        except FloatingPointError as e:
            print(f"{entry_name(main.__module__)}: error: the run diverged: {e}; the iterations it finished keep their "
                  f"checkpoints; try a lower --lr-finetune or another --seed", file=sys.stderr)
            raise SystemExit(1) from None
    return wrapper
