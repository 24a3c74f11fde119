"""Error types shared by every layer: bad input that the entry points turn into exit status 2 and
one line on stderr naming the problem and the fix."""
from __future__ import annotations


class UsageError(ValueError):
    """Bad input; the message is one line naming the problem and the fix."""


class DataError(ValueError):
    """Bad or missing data; the message names the problem and the fix in one line."""
