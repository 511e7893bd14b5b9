"""hydra.sweeper.params -> Optuna distributions, in the grammar of Hydra's Optuna plugin.

Each entry is `key: expression`, written as on the command line:

    interval(a, b)              float in [a, b]          FloatDistribution(a, b)
    int(interval(a, b))         integer in [a, b]        IntDistribution(a, b)
    tag(log, interval(a, b))    log-uniform in [a, b]    FloatDistribution(a, b, log=True)
    range(a, b, step)           a, a+step, ... below b   Int/FloatDistribution(a, last, step)
    choice(x, y, ...)           one of the listed        CategoricalDistribution
    anything else               a fixed value passed to every job unchanged

`range` keeps Hydra's meaning (b excluded, like Python's range), so
`range(16, 64, 16)` searches 16, 32, 48. Sweep expressions given on the command
line (`trpo.delta=interval(0.001,0.05)`) join the space and win over the config;
a plain value on the command line (`trpo.delta=0.01`) takes that key out of it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
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


def parse_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str] = ()) -> SearchSpace:
    """Parse `hydra.sweeper.params` and the command line's sweep overrides.

    `arguments` are the multirun's task overrides; only those that are sweeps
    (choice, range, interval, comma lists) are taken here, the others reach the
    jobs unchanged. Raises SearchSpaceError when nothing is searched or an entry
    is malformed.
    """
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}

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
        else:
            fixed[key] = override.get_value_element_as_str()
            distributions.pop(key, None)

    for key in pinned:  # the command line's value reaches the jobs with the other plain overrides
        distributions.pop(key, None)
        fixed.pop(key, None)

    if not distributions:
        raise SearchSpaceError(
            "the search space is empty: set hydra.sweeper.params (for example "
            "`trpo.delta: tag(log, interval(0.001, 0.05))`) or pick a sweep with sweep=<name>"
        )
    return SearchSpace(distributions, fixed)


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
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if step is None or step <= 0:
        raise SearchSpaceError(f"{key}: range() needs a positive step, got {step!r}")
    if not start < stop:
        raise SearchSpaceError(f"{key}: range({start}, {stop}) is empty (the stop value is excluded)")
    # Largest grid point strictly below stop; the small slack absorbs float rounding.
    n = math.ceil((stop - start) / step - 1e-9) - 1
    last = start + n * step
    if log and step != 1:
        raise SearchSpaceError(f"{key}: Optuna cannot combine tag(log, ...) with a range step other than 1")
    if all(isinstance(v, int) for v in (start, stop, step)):
        _check_bounds(key, start, last, log, allow_equal=True)
        return IntDistribution(int(start), int(last), step=int(step), log=log)
    _check_bounds(key, start, last, log, allow_equal=True)
    return FloatDistribution(float(start), float(last), step=None if log else float(step), log=log)


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
