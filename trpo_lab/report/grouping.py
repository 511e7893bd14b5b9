"""Seeds into configurations, and configurations into the score matrices rliable takes.

A configuration is one environment and one setting of everything that is not
bookkeeping (config.BOOKKEEPING): its runs are seeds. Configurations that agree
on everything but the environment share a name (C1, C2, ...), a colour, and a
column of score matrices across tasks. Names stand for the settings that vary
between configurations (the page's configuration table lists them), so
legends stay short.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from trpo_lab import metrics as M
from trpo_lab.report.discovery import Run

log = logging.getLogger(__name__)
_WARNED_DELTA: set[str] = set()  # configurations already warned about a non-numeric trpo.delta

# A label of the varying settings longer than this shows as its name alone in legends.
SHORT_LABEL = 32


@dataclass
class Configuration:
    env_id: str
    name: str                      # "C1": the same settings on every env share it
    settings: dict[str, Any]       # the varying settings, full keys
    label: str                     # the varying settings, short keys ("delta=0.01 lambda=0.9")
    runs: list[Run]

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == M.Status.COMPLETED]

    @property
    def scores(self) -> np.ndarray:
        """Final evaluation returns of the completed seeds that have one, [runs]."""
        x = np.array([r.final_return for r in self.completed], dtype=float)
        return x[np.isfinite(x)]

    @property
    def legend(self) -> str:
        if not self.label or self.label == self.name:
            return self.name
        return f"{self.name}: {self.label}" if len(self.label) <= SHORT_LABEL else self.name

    @property
    def delta(self) -> Optional[float]:
        """trpo.delta of the configuration; None without one, or when the run's .hydra holds
        something that is not a number (hand-edited, or another program's run): no guide line then."""
        value = self.runs[0].settings.get("trpo.delta")
        if value is None:
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            if self.name not in _WARNED_DELTA:
                _WARNED_DELTA.add(self.name)
                log.warning("%s: trpo.delta=%r in %s is not a number; drawn without its delta", self.name, value,
                            self.runs[0].path)
            return None


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key by its last part ('trpo.delta' -> 'delta'), unless two keys share one."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def group_runs(runs: list[Run]) -> tuple[list[Configuration], dict[str, Any], list[str]]:
    """(configurations, the settings every run shares, the varying keys)."""
    keys = sorted({k for r in runs for k in r.settings})
    varying = [k for k in keys if len({repr(r.settings.get(k)) for r in runs}) > 1]
    common = {k: runs[0].settings.get(k) for k in keys if k not in varying} if runs else {}
    short = _short_keys(varying)
    names: "OrderedDict[tuple, str]" = OrderedDict()
    groups: "OrderedDict[tuple, list[Run]]" = OrderedDict()
    for run in sorted(runs, key=lambda r: (tuple(repr(r.settings.get(k)) for k in varying), r.env_id,
                                           str(r.path))):
        setting = tuple(repr(run.settings.get(k)) for k in varying)
        names.setdefault(setting, f"C{len(names) + 1}")
        groups.setdefault((run.env_id, setting), []).append(run)
    configs = []
    for (env_id, setting), members in sorted(groups.items(), key=lambda g: (g[0][0], names[g[0][1]])):
        settings = {k: members[0].settings.get(k) for k in varying}
        label = " ".join(f"{short[k]}={fmt(v)}" for k, v in settings.items())
        configs.append(Configuration(env_id, names[setting], settings, label,
                                     sorted(members, key=lambda r: (r.seed is None, r.seed or 0))))
    return configs, common, varying


def by_env(configs: list[Configuration]) -> "OrderedDict[str, list[Configuration]]":
    out: "OrderedDict[str, list[Configuration]]" = OrderedDict()
    for c in configs:
        out.setdefault(c.env_id, []).append(c)
    return out


def by_name(configs: list[Configuration]) -> "OrderedDict[str, list[Configuration]]":
    out: "OrderedDict[str, list[Configuration]]" = OrderedDict()
    for c in sorted(configs, key=lambda c: int(c.name[1:])):
        out.setdefault(c.name, []).append(c)
    return out


def score_matrices(configs: list[Configuration], scale: dict[str, float]
                   ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """({name: normalised final scores [runs, tasks]}, the tasks, notes on what was left out).

    Tasks: the environments with a scale. rliable needs every task's column to
    have the same number of runs, so each configuration keeps its first n seeds
    on every task (n its smallest seed count there); one missing a task is left out.
    """
    tasks = [e for e in by_env(configs) if scale.get(e)]
    matrices, notes = {}, []
    for name, group in by_name(configs).items():
        per_task = {c.env_id: c.scores / scale[c.env_id] for c in group if c.env_id in tasks}
        if len(per_task) < len(tasks) or not tasks:
            notes.append(f"{name} has no completed run on {', '.join(t for t in tasks if t not in per_task)}")
            continue
        n = min(len(v) for v in per_task.values())
        if n == 0:
            notes.append(f"{name} has a task without a completed run")
            continue
        if any(len(v) > n for v in per_task.values()):
            notes.append(f"{name}: the first {n} seeds of each task")
        matrices[name] = np.stack([per_task[t][:n] for t in tasks], axis=1)
    return matrices, tasks, notes


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "[" + ",".join(fmt(v) for v in value) + "]"
    return str(value)
