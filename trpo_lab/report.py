"""`python -m trpo_lab.report PATH...`: one self-contained HTML page comparing runs, offline.

PATH may be a run directory, a multirun (or any directory holding run
directories), or an Optuna study storage: a journal file, an SQLite file, or
an RDB URL. The page (figures embedded as base64 PNGs, also written beside it
in `<name>_files/`) shows

    learning curves     training return against env steps per configuration:
                        mean over seeds with a 95% bootstrap band
    final returns       per configuration, the interquartile mean of the final
                        deterministic evaluation return over seeds with its 95%
                        bootstrap interval (Agarwal et al. 2021, "rliable"), best first
    studies             optimisation history, parameter importances, parallel
                        coordinates, the trials table, the best parameters as overrides
    trust region        achieved KL against delta, line-search steps, explained variance
    runs                every run with its status; and every input that was skipped, and why

A configuration is a run's settings minus its seed: runs whose config.yaml
agree on everything except the keys in IGNORED are seeds of one configuration.
Aggregates use completed runs; failed, pruned, interrupted and unfinished runs
are listed with their status and left out of the aggregates.
Nothing here needs the network or wandb.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from trpo_lab import metrics as M

# Config keys that do not change what a run computes: not part of a configuration.
IGNORED = ("trainer.seed", "trainer.resume", "trainer.progress", "trainer.threads", "trainer.vec_env",
           "logger.")
BOOTSTRAP_SAMPLES = 2000
# Curves per environment in one figure; with more configurations (a sweep's trials)
# the best ones by final IQM are drawn and the caption says so.
MAX_CURVES = 8
CONFIDENCE = 0.95


# ----------------------------------------------------------------------------- statistics

def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of the scores (as scipy's
    trim_mean(scores, 0.25), which rliable uses: int(0.25 n) cut from each end)."""
    x = np.sort(np.asarray(scores, dtype=float))
    cut = int(0.25 * len(x))
    return float(x[cut:len(x) - cut].mean())


def bootstrap_interval(scores: np.ndarray, statistic=iqm, samples: int = BOOTSTRAP_SAMPLES,
                       confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over runs resampled with replacement."""
    x = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(x[rng.integers(0, len(x), len(x))]) for _ in range(samples)])
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))


def bootstrap_mean_band(curves: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high), each [G], of curves [S seeds, G points], seeds resampled."""
    rng = np.random.default_rng(seed)
    s = curves.shape[0]
    means = curves[rng.integers(0, s, (samples, s))].mean(axis=1)  # [samples, G]
    alpha = (1.0 - confidence) / 2.0
    return curves.mean(axis=0), np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)


# ----------------------------------------------------------------------------- inputs

@dataclass
class Run:
    path: Path
    env_id: str
    settings: dict[str, Any]       # flat config minus IGNORED keys
    seed: Optional[int]
    status: str                    # summary.json's, or "unfinished" without one
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def final_return(self) -> float:
        value = self.summary.get("eval_return")
        return float(value) if value is not None else float("nan")

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(env steps, values) of metric `key`; evaluation series end with the final
        evaluation from summary.json (the trainer does not log it as a row)."""
        pts = [(r[M.ENV_STEPS], r[key]) for r in self.rows if r.get(key) is not None]
        final = self.summary.get("eval_return")
        if key == M.EVAL_RETURN and final is not None and self.summary.get("env_steps") is not None \
                and (not pts or pts[-1][0] < self.summary["env_steps"]):
            pts.append((self.summary["env_steps"], final))
        if not pts:
            return np.zeros(0), np.zeros(0)
        x, y = zip(*pts)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


@dataclass
class Inputs:
    runs: list[Run] = field(default_factory=list)
    studies: list[Any] = field(default_factory=list)      # optuna.Study
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tuple(node) if isinstance(node, list) else node}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line half-written when the run was killed
        if isinstance(row, dict) and M.ENV_STEPS in row:
            rows.append(row)
    return rows


def _is_run_dir(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "summary.json").is_file() \
        or (path / ".hydra" / "config.yaml").is_file()


def load_run(path: Path) -> Run:
    """One run directory; raises ValueError saying why it cannot be used."""
    from omegaconf import OmegaConf

    summary: dict[str, Any] = {}
    if (path / "summary.json").is_file():
        summary = json.loads((path / "summary.json").read_text())
    config_file = path / ".hydra" / "config.yaml"
    flat: dict[str, Any] = {}
    if config_file.is_file():
        flat = _flatten(OmegaConf.to_container(OmegaConf.load(config_file), resolve=False))
    rows = _read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    if not rows:
        why = f" ({summary['status']}: {summary.get('error', 'no error recorded')})" if summary else ""
        raise ValueError(f"no metrics rows{why}")
    env_id = flat.get("env.id") or summary.get("env_id")
    if not env_id:
        raise ValueError("no .hydra/config.yaml and no summary.json: cannot tell the environment")
    settings = {k: v for k, v in flat.items() if not k.startswith(IGNORED) and k != "env.id"}
    seed = flat.get("trainer.seed")
    return Run(path, env_id, settings, seed, summary.get("status", "unfinished"), rows, summary)


def _study_url(path: Path) -> Optional[str]:
    """'journal:<path>' or an SQLite URL if `path` holds an Optuna storage, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"SQLite format 3\x00"):
        return f"sqlite:///{path.resolve()}"
    first = head.split(b"\n", 1)[0]
    try:
        if "op_code" in json.loads(first):
            return f"journal:{path.resolve()}"
    except (ValueError, TypeError):
        pass
    return None


def load_studies(url: str) -> list[Any]:
    """Every study in a storage ('journal:<file>' or an RDB URL), read with plain optuna."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        storage: Any = optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    else:
        storage = url
    names = optuna.get_all_study_names(storage=storage)
    return [optuna.load_study(study_name=name, storage=storage) for name in names]


def collect_inputs(paths: list[str]) -> Inputs:
    inputs = Inputs()
    seen: set[Path] = set()

    def add_study(url: str, label: str) -> None:
        try:
            studies = load_studies(url)
        except Exception as err:
            inputs.skipped.append((label, f"could not read the study storage: {type(err).__name__}: {err}"))
            return
        if not studies:
            inputs.skipped.append((label, "the storage holds no study"))
        inputs.studies.extend(studies)

    def add_run(path: Path) -> None:
        if path.resolve() in seen:
            return
        seen.add(path.resolve())
        try:
            inputs.runs.append(load_run(path))
        except Exception as err:
            inputs.skipped.append((str(path), f"run directory not usable: {err}"))

    for arg in paths:
        path = Path(arg)
        if "://" in arg:
            add_study(arg, arg)
        elif not path.exists():
            inputs.skipped.append((arg, "does not exist"))
        elif path.is_file():
            url = _study_url(path)
            if url is None:
                inputs.skipped.append((arg, "a file that is not an Optuna journal or SQLite storage"))
            else:
                add_study(url, arg)
        elif _is_run_dir(path):
            add_run(path)
        else:
            found = False
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in ("wandb", "checkpoints", ".hydra", "__pycache__")
                                 and not d.endswith("_files"))
                here = Path(root)
                if here != path and _is_run_dir(here):
                    add_run(here)
                    found = True
                    dirs[:] = []
                    continue
                for name in sorted(files):
                    if name in ("metrics.jsonl", "summary.json") or name.endswith((".yaml", ".html", ".png")):
                        continue
                    url = _study_url(here / name)
                    if url is not None:
                        add_study(url, str(here / name))
                        found = True
            if not found:
                inputs.skipped.append((arg, "no run directories (metrics.jsonl / .hydra) or study storage inside"))
    return inputs


# ----------------------------------------------------------------------------- grouping

@dataclass
class Configuration:
    env_id: str
    label: str
    runs: list[Run]

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "completed"]

    @property
    def delta(self) -> Optional[float]:
        value = self.runs[0].settings.get("trpo.delta")
        return float(value) if value is not None else None


def group_runs(runs: list[Run]) -> tuple[list[Configuration], dict[str, Any]]:
    """Configurations (runs equal but for IGNORED keys), labelled by the settings that
    differ between configurations; also the settings every run shares."""
    keys = sorted({k for r in runs for k in r.settings})
    varying = [k for k in keys if len({repr(r.settings.get(k)) for r in runs}) > 1]
    common = {k: runs[0].settings.get(k) for k in keys if k not in varying} if runs else {}
    groups: "OrderedDict[tuple, list[Run]]" = OrderedDict()
    for run in sorted(runs, key=lambda r: (r.env_id, str(r.path))):
        key = (run.env_id, tuple(repr(run.settings.get(k)) for k in varying))
        groups.setdefault(key, []).append(run)
    configs = []
    for (env_id, _), members in groups.items():
        label = " ".join(f"{k}={_fmt(members[0].settings.get(k))}" for k in varying) or "(one configuration)"
        configs.append(Configuration(env_id, label, sorted(members, key=lambda r: (r.seed is None, r.seed or 0))))
    return configs, common


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


# ----------------------------------------------------------------------------- figures

class Figures:
    """Matplotlib figures saved as PNG files and kept as base64 for embedding."""

    def __init__(self, files_dir: Path):
        self.files_dir = files_dir
        self.items: list[tuple[str, str, str]] = []  # (id, caption, base64)

    def add(self, fig, fig_id: str, caption: str) -> str:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        data = buf.getvalue()
        self.files_dir.mkdir(parents=True, exist_ok=True)
        (self.files_dir / f"{fig_id}.png").write_bytes(data)
        b64 = base64.b64encode(data).decode("ascii")
        self.items.append((fig_id, caption, b64))
        return _figure_html(fig_id, caption, b64, self.files_dir.name)


def _figure_html(fig_id: str, caption: str, b64: str, files_dir: str) -> str:
    return (f'<figure id="{fig_id}" class="report-figure"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(caption)} '
            f'<span class="file">({html.escape(files_dir)}/{fig_id}.png)</span></figcaption></figure>')


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(n: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _palette(configs: list[Configuration]) -> dict[int, Any]:
    """One colour per configuration, the same in every figure (counted within its env)."""
    out = {}
    for group in _by_env(configs).values():
        for colour, conf in zip(_colours(len(group)), group):
            out[id(conf)] = colour
    return out


def _final_iqm(conf: Configuration) -> float:
    scores = np.array([r.final_return for r in conf.completed])
    scores = scores[np.isfinite(scores)]
    return iqm(scores) if len(scores) else float("-inf")


def _best_per_env(configs: list[Configuration]) -> tuple["OrderedDict[str, list[Configuration]]", int]:
    """Per env, at most MAX_CURVES configurations, best final IQM first; and how many were left out."""
    out: "OrderedDict[str, list[Configuration]]" = OrderedDict()
    left_out = 0
    for env_id, group in _by_env(configs).items():
        if len(group) > MAX_CURVES:
            left_out += len(group) - MAX_CURVES
            group = sorted(group, key=lambda c: -_final_iqm(c))[:MAX_CURVES]
        out[env_id] = group
    return out, left_out


def _aligned(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(grid [G], values [S, G]): the runs' `key` on the env steps all of them reached,
    linearly interpolated onto the first run's steps."""
    series = [r.series(key) for r in runs]
    series = [(x, y) for x, y in series if len(x) >= 1]
    if not series:
        return np.zeros(0), np.zeros((0, 0))
    end = min(x[-1] for x, _ in series)
    start = max(x[0] for x, _ in series)
    grid = np.unique(np.concatenate([x for x, _ in series]))
    grid = grid[(grid >= start) & (grid <= end)]
    return grid, np.stack([np.interp(grid, x, y) for x, y in series])


def _by_env(configs: list[Configuration]) -> "OrderedDict[str, list[Configuration]]":
    out: "OrderedDict[str, list[Configuration]]" = OrderedDict()
    for c in configs:
        out.setdefault(c.env_id, []).append(c)
    return out


def learning_curves(configs: list[Configuration], figures: Figures, key: str, fig_id: str, ylabel: str,
                    caption: str) -> Optional[str]:
    plt = _plt()
    envs, left_out = _best_per_env(configs)
    if left_out:
        caption += f" Only the {MAX_CURVES} best configurations per environment (final IQM) are drawn."
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.2), squeeze=False)
    drawn, palette = False, _palette(configs)
    for ax, (env_id, group) in zip(axes[0], envs.items()):
        for conf in group:
            colour = palette[id(conf)]
            runs = conf.completed
            grid, values = _aligned(runs, key)
            if len(grid) == 0:
                continue
            mean, low, high = bootstrap_mean_band(values)
            ax.plot(grid, mean, color=colour, label=f"{conf.label} (n={values.shape[0]})")
            if values.shape[0] > 1:
                ax.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
            drawn = True
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
    if not drawn:
        plt.close(fig)
        return None
    return figures.add(fig, fig_id, caption)


def final_return_table(configs: list[Configuration], figures: Figures) -> str:
    plt = _plt()
    rows, plotted = [], []
    for env_id, group in _by_env(configs).items():
        scored = []
        for conf in group:
            scores = np.array([r.final_return for r in conf.completed])
            scores = scores[np.isfinite(scores)]
            left_out = len(conf.runs) - len(scores)
            if len(scores):
                low, high = bootstrap_interval(scores)
                scored.append((iqm(scores), conf, scores, low, high, left_out))
            else:
                scored.append((float("-inf"), conf, scores, float("nan"), float("nan"), left_out))
        scored.sort(key=lambda s: -s[0])
        for rank, (value, conf, scores, low, high, left_out) in enumerate(scored, 1):
            statuses = ", ".join(f"{r.status}" for r in conf.runs if r.status != "completed")
            rows.append([env_id, str(rank), conf.label, str(len(scores)),
                         _num(value if len(scores) else float("nan")), f"[{_num(low)}, {_num(high)}]",
                         _num(float(np.mean(scores)) if len(scores) else float("nan")),
                         _num(float(np.min(scores)) if len(scores) else float("nan")),
                         _num(float(np.max(scores)) if len(scores) else float("nan")),
                         f"{left_out} ({statuses})" if left_out else "0"])
            if len(scores):
                plotted.append((env_id, conf.label, value, low, high, _palette(configs)[id(conf)]))
    table = _table(["env", "rank", "configuration", "seeds", "IQM", "95% CI", "mean", "min", "max",
                    "left out (status)"], rows)
    fig_html = ""
    if plotted:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(plotted) + 1.2))
        ys = np.arange(len(plotted))[::-1]
        for y, (env_id, label, value, low, high, colour) in zip(ys, plotted):
            ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", capsize=4, color=colour)
        ax.set_yticks(ys, [f"{e}: {lab}"[:70] for e, lab, *_ in plotted], fontsize=8)
        ax.set_xlabel("IQM of final evaluation return (95% bootstrap CI)")
        ax.grid(alpha=0.3, axis="x")
        fig_html = figures.add(fig, "fig-final-returns", "Final deterministic evaluation return: "
                               "interquartile mean over seeds with its 95% bootstrap interval.")
    return table + fig_html


def trust_region_figure(configs: list[Configuration], figures: Figures) -> Optional[str]:
    plt = _plt()
    envs, left_out = _best_per_env(configs)
    panels = [(M.KL, "mean KL(pi_old || pi_new)"), (M.LINE_SEARCH_STEPS, "line-search step sizes tried"),
              (M.EXPLAINED_VARIANCE, "explained variance of V")]
    fig, axes = plt.subplots(len(envs), 3, figsize=(16, 3.8 * len(envs)), squeeze=False)
    drawn, palette = False, _palette(configs)
    for row_axes, (env_id, group) in zip(axes, envs.items()):
        for conf in group:
            colour = palette[id(conf)]
            for ax, (key, _) in zip(row_axes, panels):
                grid, values = _aligned(conf.completed, key)
                if len(grid) == 0:
                    continue
                ax.plot(grid, values.mean(axis=0), color=colour, label=conf.label, linewidth=1.2)
                drawn = True
            if conf.delta is not None:
                row_axes[0].axhline(conf.delta, color=colour, linestyle="--", linewidth=1)
        for ax, (_, title) in zip(row_axes, panels):
            ax.set_title(f"{env_id}: {title}", fontsize=9)
            ax.set_xlabel("environment steps")
            ax.grid(alpha=0.3)
        row_axes[2].set_ylim(-1.05, 1.05)
        if row_axes[0].lines:
            row_axes[0].legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return None
    return figures.add(fig, "fig-trust-region", "Trust-region diagnostics, mean over seeds: achieved KL "
                       "with each configuration's delta dashed; step sizes the line search tried (1: the full "
                       "step was accepted; a search that accepts none tries backtrack_iters and keeps the "
                       "policy); explained variance of the value fit."
                       + (f" Only the {MAX_CURVES} best configurations per environment are drawn." if left_out else ""))


# ----------------------------------------------------------------------------- studies

def study_section(study: Any, index: int, figures: Figures) -> str:
    import optuna

    TS = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    parts = [f"<h3>Study <code>{html.escape(study.study_name)}</code></h3>"]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TS}
    parts.append("<p>" + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" trial(s); "
                 f"direction(s): {', '.join(d.name.lower() for d in study.directions)}.</p>")
    multi = len(study.directions) > 1
    complete = [t for t in trials if t.state == TS.COMPLETE and t.values is not None]
    if multi:
        parts.append("<p class='note'>Multi-objective study: history, importances and the best "
                     "parameters are not drawn; see the trials table.</p>")
    elif complete:
        best = study.best_trial
        overrides = " ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
        parts.append(f"<p>Best trial #{best.number}, value {_num(best.value)}. As overrides:</p>"
                     f"<pre class='overrides'>{html.escape(overrides)}</pre>")
        parts.append(_history_figure(study, trials, index, figures))
        parts.append(_importance_figure(study, complete, index, figures))
        parts.append(_parallel_figure(study, complete, index, figures))
    else:
        parts.append("<p class='note'>No completed trial yet: nothing to plot.</p>")
    param_names = sorted({k for t in trials for k in t.params})
    rows = []
    for t in trials:
        value = _num(t.value) if (t.values is not None and not multi) else \
            (", ".join(_num(v) for v in t.values) if t.values else "")
        if t.state == TS.PRUNED and t.intermediate_values:
            step = max(t.intermediate_values)
            value = f"pruned at {step}: {_num(t.intermediate_values[step])}"
        reason = t.system_attrs.get("fail_reason") or t.user_attrs.get("fail_reason") or \
            t.user_attrs.get("error", "")
        duration = f"{t.duration.total_seconds():.0f}s" if t.duration else ""
        rows.append([str(t.number), t.state.name.lower(), value] +
                    [_fmt(t.params[k]) if k in t.params else "" for k in param_names] +
                    [duration, str(reason)[:200]])
    parts.append(_table(["trial", "state", "value"] + param_names + ["duration", "reason"], rows))
    return "\n".join(p for p in parts if p)


def _history_figure(study, trials, index: int, figures: Figures) -> str:
    import optuna

    plt = _plt()
    TS = optuna.trial.TrialState
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    fig, ax = plt.subplots(figsize=(7.5, 4))
    done = [t for t in trials if t.state == TS.COMPLETE and t.value is not None]
    xs, ys = [t.number for t in done], [t.value for t in done]
    ax.scatter(xs, ys, s=18, label="complete", zorder=3)
    best, best_x, best_y = -math.inf, [], []
    for x, y in zip(xs, ys):
        if sign * y > best:
            best = sign * y
        best_x.append(x)
        best_y.append(sign * best)
    ax.step(best_x, best_y, where="post", color="tab:red", label="best so far")
    pruned = [t for t in trials if t.state == TS.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   marker="x", color="grey", label="pruned (last report)", zorder=2)
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figures.add(fig, f"fig-study{index}-history", f"{study.study_name}: optimisation history.")


def _importance_figure(study, complete, index: int, figures: Figures) -> str:
    import optuna

    import warnings

    plt = _plt()
    if len(complete) < 3:
        return f"<p class='note'>Parameter importances need at least 3 completed trials ({len(complete)} so far).</p>"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except Exception as err:
        return f"<p class='note'>Parameter importances not computed: {html.escape(str(err))}</p>"
    if not importances:
        return "<p class='note'>Parameter importances not computed: no varying parameters.</p>"
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(importances) + 1.2))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (Optuna's default evaluator, normalised to sum 1)")
    return figures.add(fig, f"fig-study{index}-importances",
                       f"{study.study_name}: parameter importances over {len(complete)} completed trials.")


def _parallel_figure(study, complete, index: int, figures: Figures) -> str:
    import optuna

    plt = _plt()
    names = sorted({k for t in complete for k in t.params})
    if not names:
        return ""
    axes_values = []
    labels = []
    for name in names:
        dist = next(t.distributions[name] for t in complete if name in t.distributions)
        raw = [t.params.get(name) for t in complete]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            choices = list(dist.choices)
            vals = [choices.index(v) if v in choices else np.nan for v in raw]
            lo, hi = 0, max(len(choices) - 1, 1)
            labels.append(f"{name}\n{{{', '.join(_fmt(c) for c in choices)}}}")
        else:
            log = getattr(dist, "log", False)
            vals = [np.log10(v) if (v is not None and log) else (np.nan if v is None else v) for v in raw]
            lo, hi = (np.log10(dist.low), np.log10(dist.high)) if log else (dist.low, dist.high)
            labels.append(f"{name}\n[{_fmt(dist.low)}, {_fmt(dist.high)}]{' log' if log else ''}")
        axes_values.append((np.asarray(vals, dtype=float) - lo) / ((hi - lo) or 1.0))
    objective = np.array([t.value for t in complete], dtype=float)
    span = (objective.max() - objective.min()) or 1.0
    axes_values.append((objective - objective.min()) / span)
    labels.append(f"objective\n[{_num(objective.min())}, {_num(objective.max())}]")
    data = np.stack(axes_values, axis=1)  # [trials, axes]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(labels)), 4.2))
    cmap = plt.get_cmap("viridis")
    for row, score in sorted(zip(data, axes_values[-1]), key=lambda p: p[1]):
        ax.plot(range(len(labels)), row, color=cmap(score), alpha=0.8, linewidth=1.2)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yticks([0, 1], ["low", "high"])
    for x in range(len(labels)):
        ax.axvline(x, color="black", linewidth=0.6)
    ax.set_title("lines coloured by objective (yellow = highest)", fontsize=9)
    return figures.add(fig, f"fig-study{index}-parallel",
                       f"{study.study_name}: parallel coordinates of the completed trials' parameters.")


# ----------------------------------------------------------------------------- page

def _num(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "" if x is None else str(x)
    return "-" if not math.isfinite(v) else f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0} figure{margin:1em 0} img{max-width:100%}
figcaption{font-size:13px;color:#444} .file{color:#888} .note{color:#a40} code,pre{background:#f6f6f6}
pre.overrides{padding:.5em;white-space:pre-wrap}
"""

# Marks the page once every figure has decoded, so a headless browser can check it.
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('figure.report-figure img');
  var ok = 0;
  imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) ok++; });
  document.body.setAttribute('data-figures-total', imgs.length);
  document.body.setAttribute('data-figures-loaded', ok);
});
"""


def staleness_section(runs: list[Run], figures: Figures) -> list[str]:
    """Final return against policy lag per correction (trpo_lab/staleness.py), for runs that vary them."""
    from trpo_lab import staleness

    if not staleness.is_staleness_study(runs):
        return []
    found = staleness.cells(runs)
    if not found:
        return []
    caption = ("Final evaluation return against the behaviour policy's lag, one line per off-policy "
               "correction: IQM over seeds with a 95% bootstrap band; asynchronous runs at their measured "
               "mean lag (docs/off_policy.md).")
    diagnostics = ("The staleness of each batch over training (mean over seeds): the lag of its samples, "
                   "the KL from the behaviour policy to pi_old, and the effective sample size and largest "
                   "value of the importance weights pi_old / beta.")
    return ["<h2 id='staleness'>Staleness</h2>", figures.add(staleness.figure(found), "fig-staleness", caption),
            "<pre>" + html.escape(staleness.table_markdown(found)) + "</pre>",
            figures.add(staleness.diagnostics_figure(found), "fig-staleness-diagnostics", diagnostics)]


def build_report(paths: list[str], out: Path, title: Optional[str] = None) -> dict[str, Any]:
    """Write the page to `out` (PNGs in `<out stem>_files/`); returns what it contains."""
    inputs = collect_inputs(paths)
    files_dir = out.with_name(out.stem + "_files")
    figures = Figures(files_dir)
    configs, common = group_runs(inputs.runs)
    body: list[str] = []
    title = title or "trpo_lab report: " + ", ".join(paths)
    body.append(f"<h1>{html.escape(title)}</h1>")
    body.append(f"<p>{len(inputs.runs)} run(s) in {len(configs)} configuration(s); "
                f"{len(inputs.studies)} study(ies); {len(inputs.skipped)} input(s) skipped.</p>")
    if common:
        shown = {k: v for k, v in common.items() if k.startswith(("trpo.", "network.", "trainer.", "env."))}
        body.append("<details><summary>Settings shared by every run</summary><pre>"
                    + html.escape("\n".join(f"{k}={_fmt(v)}" for k, v in sorted(shown.items())))
                    + "</pre></details>")
    if configs:
        body.append("<h2 id='learning-curves'>Learning curves</h2>")
        fig = learning_curves(configs, figures, M.EP_RETURN, "fig-learning-curves", "training episode return",
                              "Training return (stochastic policy, mean of the last 100 episodes) against "
                              "environment steps: mean over seeds of completed runs, 95% bootstrap band.")
        body.append(fig or "<p class='note'>No completed run has training returns to plot.</p>")
        fig = learning_curves(configs, figures, M.EVAL_RETURN, "fig-eval-curves", "evaluation return",
                              "Deterministic evaluation return (periodic, and the final one) against "
                              "environment steps: mean over seeds, 95% bootstrap band.")
        if fig:
            body.append(fig)
        body.append("<h2 id='final-returns'>Final returns</h2>")
        body.append("<p>Score of a run: <code>eval_return</code> from its summary.json (deterministic "
                    "policy at the end of training). IQM: mean of the middle 50% of the seeds' scores "
                    "(all of them below 4 seeds); interval: percentile bootstrap over seeds, "
                    f"{BOOTSTRAP_SAMPLES} resamples. Best configuration first, per environment.</p>")
        body.append(final_return_table(configs, figures))
    for i, study in enumerate(inputs.studies):
        if i == 0:
            body.append("<h2 id='studies'>Studies</h2>")
        try:
            body.append(study_section(study, i, figures))
        except Exception as err:
            inputs.skipped.append((f"study {study.study_name}", f"could not be drawn: {type(err).__name__}: {err}"))
    body.extend(staleness_section(inputs.runs, figures))
    if configs:
        body.append("<h2 id='trust-region'>Trust-region diagnostics</h2>")
        body.append(trust_region_figure(configs, figures) or "<p class='note'>No diagnostics to plot.</p>")
        body.append("<h2 id='runs'>Runs</h2>")
        rows = []
        for conf in configs:
            for r in conf.runs:
                s = r.summary
                rows.append([str(r.path), r.env_id, conf.label, _fmt(r.seed), r.status, _num(s.get("env_steps")
                             if s else r.rows[-1][M.ENV_STEPS]), _num(s.get("eval_return")),
                             _num(s.get("best_eval_return")), _num(s.get("steps_per_s")), s.get("error", "")])
        body.append(_table(["run", "env", "configuration", "seed", "status", "env steps", "eval return",
                            "best eval", "steps/s", "error"], rows))
    body.append("<h2 id='skipped'>Skipped inputs</h2>")
    body.append(_table(["input", "why"], [[p, why] for p, why in inputs.skipped]) if inputs.skipped
                else "<p>None.</p>")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return {"runs": len(inputs.runs), "configurations": len(configs), "studies": len(inputs.studies),
            "figures": [fig_id for fig_id, _, _ in figures.items], "skipped": inputs.skipped}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trpo_lab.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="run directory, multirun directory, Optuna journal/SQLite file or RDB URL")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="HTML file to write (default: report.html in the only directory given, "
                             "else in the current directory)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    out = args.output
    if out is None:
        dirs = [Path(p) for p in args.paths if Path(p).is_dir()]
        out = (dirs[0] if len(args.paths) == 1 and dirs else Path(".")) / "report.html"
    result = build_report(args.paths, out, args.title)
    for path, why in result["skipped"]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(f"wrote {out} ({result['runs']} runs, {result['configurations']} configurations, "
          f"{result['studies']} studies, {len(result['figures'])} figures)")
    return 0 if (result["runs"] or result["studies"]) else 1


if __name__ == "__main__":
    sys.exit(main())
