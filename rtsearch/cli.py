"""Command-line plumbing shared by the entry points: bad input ends with exit status 2 and one
line on stderr naming the problem and the fix, before any compute is spent."""
from __future__ import annotations

import argparse
import sys

from rtsearch.data import DATASETS, check_data_dir
from rtsearch.errors import DataError, UsageError
from rtsearch.net.models import MODELS


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit status 2."""

    def error(self, message):
        fail(f"{message} (see --help)")


def fail(message: str) -> None:
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


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


def check_holdout_share(share: float) -> None:
    """--holdout-share of rtsearch.train and rtsearch.tune: the share of the training split kept out."""
    if not 0.0 <= share <= 0.5:
        raise UsageError(f"--holdout-share must be in [0, 0.5], got {share:g}: pass e.g. --holdout-share 0.15")


def refuse_for_ladder(flags, why: str, chosen: bool = True) -> None:
    """--method ladder takes none of `flags` ((flag, given) pairs): the first given is a UsageError naming it.
    Where the ladder was not `chosen` but is the default method, the fix is to name an agents' method."""
    for flag, given in flags:
        if given and chosen:
            raise UsageError(f"--method ladder does not take {flag} ({why}): drop {flag}")
        if given:
            raise UsageError(f"{flag} belongs to the agents' methods, and the default method, ladder, does not take "
                             f"it ({why}): pass --method both (or runtime-only, static-only), or drop {flag}")


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
    """Run an entry point, turning UsageError / DataError into exit 2 with one line."""
    def wrapper(argv=None):
        try:
            return main(argv)
        except (UsageError, DataError) as e:
            fail(str(e))
    return wrapper
