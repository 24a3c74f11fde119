"""Search spaces: a small YAML format, validated on load, converted to a Ray Tune param space.

Format (search_spaces/default.yaml is the reference): one top-level key per searched RunConfig
field, each either a plain number (the field is fixed at that value) or a mapping

    lr_runtime: {distribution: loguniform, low: 1.0e-5, high: 1.0e-3}
    lam:        {distribution: uniform,    low: 0.0,    high: 1.0}
    beta_f:     {distribution: quniform,   low: 0.5,    high: 4.0, q: 0.5}
    p_max:      {distribution: choice,     values: [0.8, 0.9, 0.95]}

`loguniform` samples log-uniformly in [low, high] (low > 0), `uniform` uniformly, `quniform`
uniformly rounded to multiples of q, `choice` one of the listed values. Bounds may be written
`1e-5` too (YAML 1.1 reads that as a string; it is accepted as a number here). A count (epochs, a batch size:
the RunConfig int fields) takes whole numbers only, fixed, as a choice or as quniform with a whole q.

Every problem (missing file, malformed YAML, unknown key or distribution, empty or inverted range,
a non-positive bound on a log scale, a value outside what the field allows) is a UsageError whose
one-line message names the key and the fix.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import yaml

from rtsearch import methods as registry
from rtsearch.config import FIELDS as RUN_FIELDS
from rtsearch.config import searchable
from rtsearch.errors import UsageError
from rtsearch.methods.base import Method

DISTRIBUTIONS = ("loguniform", "uniform", "quniform", "choice")

# Searchable RunConfig fields and the values each may take: (lowest, highest, low inclusive, high inclusive), from
# the fields' own documentation (rtsearch.config). Which of them a sweep may search is its method's to say.
KEYS = searchable()

FIELDS = {"loguniform": {"low", "high"}, "uniform": {"low", "high"}, "quniform": {"low", "high", "q"},
          "choice": {"values"}}
# Counts (RunConfig int fields: epochs, a batch size) are sampled as whole numbers: fixed, a choice, or quniform with
# a whole step, never from a continuous distribution, so a trial, its MLflow parameters and the summary all read 4,
# not 4.0 or 3.7.
COUNT_KEYS = frozenset(k for k in KEYS if RUN_FIELDS[k].type in ("int", int))


def shipped_dir() -> str:
    """search_spaces/ of the rtsearch checkout this package runs from (independent of the working folder)."""
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(checkout, "search_spaces")


def default_path(method: Method) -> str:
    """The method's search space in search_spaces/ of this checkout."""
    return os.path.join(shipped_dir(), method.space_file)


def resolve(path: str) -> str:
    """The file a --space path names: as given (relative to the working folder), else in the shipped search_spaces/
    (`ladder.yaml` or `search_spaces/ladder.yaml` work from any folder). A path found in neither is a one-line
    UsageError naming both folders, so the user sees where it was looked for."""
    if os.path.isfile(path):
        return os.path.abspath(path)
    shipped = shipped_dir()
    parts = os.path.normpath(path).split(os.sep)
    inside = os.path.join(*parts[1:]) if parts[0] == "search_spaces" and len(parts) > 1 else path
    if not os.path.isabs(path) and os.path.isfile(os.path.join(shipped, inside)):
        return os.path.join(shipped, inside)
    names = ", ".join(sorted(n for n in os.listdir(shipped) if n.endswith(".yaml"))) if os.path.isdir(shipped) else ""
    where = "" if os.path.isabs(path) else f" in the working folder {os.getcwd()} nor in {shipped}"
    raise UsageError(f"--space {path} does not exist{where}: pass the path of a YAML file"
                     + (f", or the name of one in {shipped} ({names})" if names else ""))


def method_keys(method: Method) -> tuple[str, ...]:
    """The keys a sweep of `method` may search: the searchable settings it uses."""
    return tuple(k for k in KEYS if k in method.fields)


@dataclass(frozen=True)
class Dimension:
    key: str
    distribution: str          # one of DISTRIBUTIONS, or "fixed"
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple | None = None

    def describe(self) -> str:
        if self.distribution == "fixed":
            return f"{self.values[0]:g}"
        if self.distribution == "choice":
            return "choice of " + ", ".join(f"{v:g}" for v in self.values)
        q = f" step {self.q:g}" if self.q else ""
        return f"{self.distribution} [{self.low:g}, {self.high:g}]{q}"

    def to_tune(self):
        from ray import tune
        if self.distribution == "fixed":
            return self.values[0]
        if self.distribution == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.distribution == "uniform":
            return tune.uniform(self.low, self.high)
        if self.distribution == "quniform":
            if self.key in COUNT_KEYS:
                return tune.qrandint(self.low, self.high, self.q)
            return tune.quniform(self.low, self.high, self.q)
        return tune.choice(list(self.values))


class SearchSpace(dict):
    """key -> Dimension, in file order; `path` is where it was read from."""

    def __init__(self, dimensions: dict, path: str):
        super().__init__(dimensions)
        self.path = path

    @property
    def searched(self) -> list[str]:
        return [k for k, d in self.items() if d.distribution != "fixed"]

    def without(self, key: str) -> "SearchSpace":
        return SearchSpace({k: d for k, d in self.items() if k != key}, self.path)

    def to_tune(self) -> dict:
        """The Ray Tune param space (tune.loguniform etc.; fixed keys as constants)."""
        return {k: d.to_tune() for k, d in self.items()}

    def describe(self) -> dict:
        return {k: d.describe() for k, d in self.items()}

    def defaults(self) -> dict:
        """The run's own defaults (RunConfig) of the searched keys, each moved to the nearest value its
        dimension allows: the first configuration a sweep tries, so the search starts from what a plain
        `rtsearch.train` run uses (ASHA may still stop it early, as any trial)."""
        from rtsearch.config import RunConfig
        point = {}
        for key in self.searched:
            d, value = self[key], float(getattr(RunConfig, key))
            if d.distribution == "choice":
                value = min(d.values, key=lambda v: abs(v - value))
            else:
                value = min(max(value, d.low), d.high)
                if d.q:
                    value = min(max(round(value / d.q) * d.q, d.low), d.high)
            point[key] = int(value) if key in COUNT_KEYS else value
        return point

    def to_dict(self) -> dict:
        """JSON form (stored with a sweep, so a resumed sweep searches exactly what it started with)."""
        fields = ("distribution", "low", "high", "q", "values")
        return {k: {f: getattr(d, f) for f in fields if getattr(d, f) is not None} for k, d in self.items()}


def from_dict(dims: dict, path: str) -> SearchSpace:
    return SearchSpace({k: Dimension(k, d["distribution"], d.get("low"), d.get("high"), d.get("q"),
                                     tuple(d["values"]) if d.get("values") is not None else None)
                        for k, d in dims.items()}, path)


def _number(where: str, name: str, value, fix: str) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{where}: {name} must be a number, got {value!r}: {fix}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UsageError(f"{where}: {name} must be a number, got {value!r}: {fix}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: {name} must be a finite number, got {value!r}: {fix}")
    return float(value)


def _whole(where: str, key: str, value: float) -> float | int:
    """A count's value as the whole number it must be (UsageError otherwise); any other key's as it is."""
    if key not in COUNT_KEYS:
        return value
    if value != int(value):
        raise UsageError(f"{where}: {key} is a count, got {value:g}: give whole numbers")
    return int(value)


def _allowed(key: str) -> str:
    lo, hi, lo_in, hi_in = KEYS[key]
    return f"{'[' if lo_in else '('}{lo:g}, {'inf' if math.isinf(hi) else f'{hi:g}'}{']' if hi_in else ')'}"


def _check_in_domain(where: str, key: str, value: float) -> None:
    lo, hi, lo_in, hi_in = KEYS[key]
    ok = (value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)
    if not ok:
        raise UsageError(f"{where}: {value:g} is outside what {key} allows, {_allowed(key)}: "
                         f"keep the range within {_allowed(key)}")


def _distribution(where: str, spec: dict, example: str) -> str:
    """The spec's distribution, once it is a known one and the spec has exactly that distribution's fields."""
    dist = spec.get("distribution")
    if dist is None:
        raise UsageError(f"{where}: 'distribution' is missing: {example} (one of {', '.join(DISTRIBUTIONS)})")
    if dist not in DISTRIBUTIONS:
        raise UsageError(f"{where}: unknown distribution {dist!r}: use one of {', '.join(DISTRIBUTIONS)}")
    extra = set(spec) - FIELDS[dist] - {"distribution"}
    if extra:
        raise UsageError(f"{where}: unknown field(s) {', '.join(sorted(map(str, extra)))} for {dist}: "
                         f"{dist} takes {', '.join(sorted(FIELDS[dist]))}")
    missing = FIELDS[dist] - set(spec)
    if missing:
        raise UsageError(f"{where}: {dist} needs {', '.join(sorted(missing))}: "
                         f"give {', '.join(sorted(FIELDS[dist]))}")
    return dist


def _choice(where: str, key: str, values) -> Dimension:
    if not isinstance(values, list) or not values:
        raise UsageError(f"{where}: choice needs a non-empty list, got {values!r}: write values: [a, b, c]")
    numbers = tuple(_whole(where, key, _number(where, "every choice value", v, "list numbers only")) for v in values)
    if len(set(numbers)) != len(numbers):
        raise UsageError(f"{where}: choice lists a value twice: list each value once")
    for v in numbers:
        _check_in_domain(where, key, v)
    return Dimension(key, "choice", values=numbers)


def _range(where: str, key: str, dist: str, spec: dict) -> Dimension:
    """A loguniform, uniform or quniform dimension: bounds in order and within the field's domain; a count's only
    quniform, with whole bounds and step."""
    if key in COUNT_KEYS and dist != "quniform":
        raise UsageError(f"{where}: {key} is a count, {dist} samples fractions: use choice, or quniform with a "
                         f"whole step q")
    low = _whole(where, key, _number(where, "low", spec["low"], "give numeric bounds"))
    high = _whole(where, key, _number(where, "high", spec["high"], "give numeric bounds"))
    if low >= high:
        raise UsageError(f"{where}: empty or inverted range, low {low:g} >= high {high:g}: make low < high "
                         f"(or give a plain number to fix {key})")
    if dist == "loguniform" and low <= 0:
        raise UsageError(f"{where}: loguniform needs a positive low bound, got {low:g}: "
                         f"use low > 0 or distribution uniform")
    _check_in_domain(where, key, low)
    _check_in_domain(where, key, high)
    q = None
    if dist == "quniform":
        q = _whole(where, key, _number(where, "q", spec["q"], "give a positive step q"))
        if not 0 < q <= high - low:
            raise UsageError(f"{where}: quniform step q {q:g} must be in (0, high - low = {high - low:g}]: "
                             f"choose a smaller positive q")
    return Dimension(key, dist, low=low, high=high, q=q)


def parse_dimension(key: str, spec, path: str) -> Dimension:
    where = f"search space {path}, key {key!r}"
    example = f"write e.g. {key}: {{distribution: uniform, low: 0.1, high: 0.9}}"
    if isinstance(spec, (int, float, str)) and not isinstance(spec, bool):
        value = _whole(where, key, _number(where, "the fixed value", spec, example))
        _check_in_domain(where, key, value)
        return Dimension(key, "fixed", values=(value,))
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: expected a mapping with 'distribution' or a number, got {spec!r}: {example}")
    dist = _distribution(where, spec, example)
    if dist == "choice":
        return _choice(where, key, spec["values"])
    return _range(where, key, dist, spec)


def load(path: str) -> SearchSpace:
    """Read and validate a search space file; every problem is a one-line UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"search space {path} does not exist: pass --space with a YAML file "
                         f"like search_spaces/default.yaml")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise UsageError(f"search space {path} is not valid YAML{at} ({problem}): fix the syntax, "
                         f"see search_spaces/default.yaml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"search space {path} cannot be read ({type(e).__name__}): "
                         f"pass a readable YAML file") from None
    if raw is None:
        raise UsageError(f"search space {path} is empty: give at least one key, e.g. "
                         f"lam: {{distribution: uniform, low: 0.0, high: 1.0}}")
    if not isinstance(raw, dict):
        raise UsageError(f"search space {path} must be a mapping of keys to distributions, got a "
                         f"{type(raw).__name__}: see search_spaces/default.yaml")
    dims = {}
    for key, spec in raw.items():
        if key not in KEYS:
            raise UsageError(f"search space {path}: unknown key {key!r}: use one of {', '.join(KEYS)}")
        dims[key] = parse_dimension(key, spec, path)
    return SearchSpace(dims, path)


def check_method(space: SearchSpace, method: Method) -> SearchSpace:
    """Every key of the space must set something the sweep's method uses; a key it would ignore is refused."""
    for key in space:
        if key not in method.fields:
            takers = [m for m in registry.REGISTRY.values() if m.swept and key in m.fields]
            other = f", or pass --method {takers[0].name} to search it" if takers else ""
            raise UsageError(f"search space {space.path}: {key} does nothing for --method {method.name} (it searches "
                             f"{', '.join(method_keys(method))}): drop {key}, pass --space "
                             f"search_spaces/{method.space_file}{other}")
    return space


def with_budget(space: SearchSpace, budgets: list[float]) -> SearchSpace:
    """The space of a --front sweep: the MACs budget searched first, a choice of `budgets` (rtsearch.search.front
    says why a choice of readable values), then the space's own keys."""
    return SearchSpace({"budget": Dimension("budget", "choice", values=tuple(budgets)), **space.without("budget")},
                       space.path)


def for_sweep(space: SearchSpace, param_budget: float | None) -> SearchSpace:
    """The space one sweep searches: param_budget is dropped when --param-budget fixes it."""
    if param_budget is not None:
        space = space.without("param_budget")
    if not space.searched:
        raise UsageError(f"search space {space.path} leaves nothing to search"
                         f"{' once --param-budget fixes param_budget' if param_budget is not None else ''}: "
                         f"give at least one key a distribution")
    return space
