"""hydra.sweeper.params -> Optuna distributions, with the meanings of Hydra's Optuna plugin.

Each entry is `key: expression`, written as on the command line:

    interval(a, b)              float in [a, b]          FloatDistribution(a, b)
    int(interval(a, b))         integer in [a, b]        IntDistribution(a, b)
    tag(log, interval(a, b))    log-uniform in [a, b]    FloatDistribution(a, b, log=True)
    range(a, b, step)           a, a+step, ... up to b   Int/FloatDistribution(a, b, step)
    choice(x, y, ...)           one of the listed        CategoricalDistribution
    shuffle(range(...)), shuffle(choice(...))            CategoricalDistribution of the values
    anything else               a fixed value passed to every job unchanged

`range` has the plugin's meaning, not Hydra's: b is included when the steps
reach it (`range(1, 3)` searches 1, 2, 3), except for the grid sampler, which
takes Hydra's values below b (`grid`, as the plugin does). Sweep expressions on
the command line (`x=interval(0.001,0.05)`) join the space and win over the
config; a plain value on the command line (`x=0.01`) takes that key out of it.

The plugin's older `hydra.sweeper.search_space` form (`{type: float, low: 0,
high: 1, step: ..., log: ..., choices: [...]}`) is read by
`distribution_from_config`, with the plugin's deprecation warning.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class SearchSpaceError(ValueError):
    """A search-space entry that cannot be turned into a distribution; names the key."""


@dataclass(frozen=True)
class SearchSpace:
    """Distributions to sample per trial and fixed overrides shared by every job."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]  # key -> value as an override string
    grid: dict[str, list[Any]] = field(default_factory=dict)  # key -> the grid sampler's values (choice, range)


def parse_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str] = (),
                       search_space: Mapping[str, Any] | None = None, allow_empty: bool = False) -> SearchSpace:
    """Parse `hydra.sweeper.params` and the command line's sweep overrides.

    `arguments` are the multirun's task overrides; only those that are sweeps
    (choice, range, interval, comma lists) are taken here, the others reach the
    jobs unchanged. `search_space` is the plugin's deprecated dict form; `params`
    wins where both name a key. Raises SearchSpaceError when an entry is
    malformed, or when nothing is searched unless `allow_empty`.
    """
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    grid: dict[str, list[Any]] = {}
    if search_space is not None:
        if params is not None:
            warnings.warn("Both hydra.sweeper.params and hydra.sweeper.search_space are configured: "
                          "where both name a key, hydra.sweeper.params defines it")
        else:
            warnings.warn("`hydra.sweeper.search_space` is deprecated and will be removed in the next major release "
                          "of Hydra's Optuna plugin (trpo_optuna still reads it): write the same space as "
                          "expressions in `hydra.sweeper.params`", UserWarning)
        for key, spec in search_space.items():
            distributions[str(key)] = distribution_from_config(str(key), spec)

    entries: list[tuple[str, str, str]] = []  # (key, line, where)
    for key, value in (params or {}).items():
        entries.append((str(key), f"{key}={_as_override_value(value)}", "hydra.sweeper.params"))
    pinned = set()  # keys the command line sets to one value: they leave the space
    for line in arguments:
        key = line.split("=", 1)[0]
        override = _parse(parser, line, key, "the command line")
        if override.is_sweep_override():
            entries.append((key, line, "the command line"))
            pinned.discard(key)
        else:
            pinned.add(key)

    for key, line, where in entries:
        override = _parse(parser, line, key, where)
        if override.is_sweep_override():
            distributions[key] = _distribution(key, override)
            fixed.pop(key, None)
            grid.pop(key, None)
            value = override.value()
            if isinstance(value, ChoiceSweep):
                grid[key] = list(value.list)
            elif isinstance(value, RangeSweep):
                grid[key] = _range_values(value)
        else:
            fixed[key] = override.get_value_element_as_str()
            distributions.pop(key, None)

    for key in pinned:  # the command line's value reaches the jobs with the other plain overrides
        distributions.pop(key, None)
        fixed.pop(key, None)
    grid = {k: v for k, v in grid.items() if k in distributions}

    if not distributions and not allow_empty:
        raise SearchSpaceError(
            "the search space is empty, so every trial would run the same job: set hydra.sweeper.params "
            "(for example `lr: tag(log, interval(0.0001, 0.1))`) or put a sweep on the command line "
            "(lr=interval(0.0001,0.1)); trpo_lab's ready sweeps: sweep=<name>"
        )
    return SearchSpace(distributions, fixed, grid)


def distribution_from_config(key: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """The plugin's deprecated `search_space` entry: {type: int|float|categorical, low, high, step, log, choices}."""
    spec = dict(spec)
    kind = str(spec.get("type", ""))
    kind = kind.rsplit(".", 1)[-1]  # DistributionType.float, as the plugin's enum prints
    unknown = set(spec) - {"type", "low", "high", "step", "log", "choices"}
    if unknown:
        raise SearchSpaceError(f"hydra.sweeper.search_space.{key}: unknown field(s) {sorted(unknown)}; "
                               "the fields are type, low, high, step, log, choices")
    if kind == "categorical":
        if not spec.get("choices"):
            raise SearchSpaceError(f"hydra.sweeper.search_space.{key}: a categorical entry needs choices")
        return CategoricalDistribution(list(spec["choices"]))
    if kind not in ("int", "float"):
        raise SearchSpaceError(f"hydra.sweeper.search_space.{key}: type must be int, float or categorical, "
                               f"not {spec.get('type')!r}")
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), bool(spec.get("log", False))
    _check_bounds(key, low, high, log, allow_equal=True)
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log, step=1 if log or step is None else int(step))
    return FloatDistribution(float(low), float(high), log=log, step=None if log or step is None else float(step))


def _as_override_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_as_override_value(v) for v in value) + "]"
    raise SearchSpaceError(f"hydra.sweeper.params: cannot use a {type(value).__name__} as a value: {value!r}")


def _parse(parser: OverridesParser, line: str, key: str, where: str) -> Override:
    try:
        return parser.parse_overrides([line])[0]
    except Exception as err:  # Hydra raises OverrideParseException with a long grammar report
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SearchSpaceError(f"{key}: cannot parse {line!r} from {where}: {first}") from None


def _distribution(key: str, override: Override) -> BaseDistribution:
    sweep = override.value()
    tags = set(getattr(sweep, "tags", ()) or ())
    log = "log" in tags
    if isinstance(sweep, RangeSweep) and sweep.shuffle:  # the plugin: shuffle(range) is categorical
        sweep = ChoiceSweep(list=_range_values(sweep))  # in order, so a resumed study sees the same choices
    if isinstance(sweep, ChoiceSweep):
        choices = list(sweep.list)
        if any(isinstance(c, (list, dict)) for c in choices):
            raise SearchSpaceError(f"{key}: choice() values must be numbers, strings, booleans or null")
        if log:
            raise SearchSpaceError(f"{key}: tag(log, ...) applies to interval and range, not choice")
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        return _range_distribution(key, sweep, log)
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        _check_bounds(key, low, high, log)
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(f"{key}: unsupported sweep {override.input_line!r}")


def _range_distribution(key: str, sweep: RangeSweep, log: bool) -> BaseDistribution:
    """range(a, b, step) as the plugin reads it: a, a+step, ... up to and including b when the steps reach it."""
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if step is None or step <= 0:
        raise SearchSpaceError(f"{key}: range() needs a positive step, got {step!r}")
    if not start < stop:
        raise SearchSpaceError(f"{key}: range({start}, {stop}) is empty")
    # Largest grid point at or below stop (Optuna would round it down with a warning); the slack absorbs float rounding.
    n = math.floor((stop - start) / step + 1e-9)
    last = start + n * step
    if log and step != 1:
        raise SearchSpaceError(f"{key}: Optuna cannot combine tag(log, ...) with a range step other than 1")
    _check_bounds(key, start, last, log, allow_equal=True)
    if all(isinstance(v, int) for v in (start, stop, step)):
        return IntDistribution(int(start), int(last), step=int(step), log=log)
    return FloatDistribution(float(start), float(last), step=None if log else float(step), log=log)


def _range_values(sweep: RangeSweep) -> list[Any]:
    """Hydra's values of range(a, b, step): a, a+step, ... below b."""
    start, stop, step = sweep.start, sweep.stop, sweep.step or 1
    if all(isinstance(v, int) for v in (start, stop, step)):
        return list(range(start, stop, step))
    n = max(0, math.ceil((stop - start) / step - 1e-9))
    return [start + i * step for i in range(n)]


def _check_bounds(key: str, low: Any, high: Any, log: bool, allow_equal: bool = False) -> None:
    if low is None or high is None or not (low < high or (allow_equal and low == high)):
        raise SearchSpaceError(f"{key}: the lower bound {low} must be below the upper bound {high}")
    if log and low <= 0:
        raise SearchSpaceError(f"{key}: tag(log, ...) needs a lower bound > 0, got {low}")


def override_value(value: Any) -> str:
    """A sampled value written so that Hydra's override parser reads it back unchanged."""
    if isinstance(value, str):
        if re.fullmatch(r"[A-Za-z_][\w.\-/]*", value) and value.lower() not in ("true", "false", "null", "nan", "inf"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return _as_override_value(value)
