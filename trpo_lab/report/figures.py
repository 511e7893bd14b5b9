"""The report's matplotlib figures: learning curves, final returns, rliable's aggregates,
throughput and trust-region diagnostics. Each returns the figure's HTML, or None with
nothing to draw.

One colour per configuration name in every figure; one legend per figure,
outside the axes (it never covers a curve or a tick label). Guide lines
(reference scores, delta) are drawn with gid="guide" and do not count as data.
"""
from __future__ import annotations

import base64
import html
import io
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from trpo_lab import metrics as M
from trpo_lab.report import references, stats
from trpo_lab.report.discovery import Run
from trpo_lab.report.grouping import Configuration, by_env, by_name

# Curves per environment in one figure; with more configurations (a sweep's trials)
# the best ones by final IQM are drawn and the caption says so.
MAX_CURVES = 8
GUIDE = "guide"
DPI_PAGE, DPI_PNG = 110, 200


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def data_points(fig) -> int:
    """How many data points the figure draws: line vertices, scatter points, bars and
    bands, guides excluded. 0 for axes without data (what an "empty figure" means)."""
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection
    from matplotlib.patches import Rectangle

    n = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid() != GUIDE and line.get_visible():
                n += int(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).sum())
        for coll in ax.collections:
            if coll.get_gid() == GUIDE:
                continue
            if isinstance(coll, PathCollection):
                n += len(coll.get_offsets())
            elif isinstance(coll, LineCollection):  # Optuna's parallel coordinates
                n += len(coll.get_segments())
            elif isinstance(coll, PolyCollection):
                n += 1
        n += sum(1 for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() != GUIDE
                 and p.get_width() * p.get_height() != 0)
    return n


class Figures:
    """Figures kept as base64 PNGs for the page; with `png_dir`, also written there at print resolution."""

    def __init__(self, png_dir: Optional[Path] = None):
        self.png_dir = png_dir
        self.items: list[tuple[str, str, int]] = []  # (id, caption, data points)

    def add(self, fig, fig_id: str, caption: str) -> str:
        points = data_points(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI_PAGE, bbox_inches="tight")
        if self.png_dir is not None:
            self.png_dir.mkdir(parents=True, exist_ok=True)
            fig.savefig(self.png_dir / f"{fig_id}.png", dpi=DPI_PNG, bbox_inches="tight")
        plt().close(fig)
        self.items.append((fig_id, caption, points))
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        where = f" <span class='file'>({html.escape(self.png_dir.name)}/{fig_id}.png)</span>" if self.png_dir else ""
        return (f'<figure id="{fig_id}" class="report-figure" data-points="{points}"><img alt="{html.escape(caption)}" '
                f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(caption)}{where}</figcaption></figure>')


def colours(configs: list[Configuration]) -> dict[str, Any]:
    names = list(by_name(configs))
    cmap = plt().get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def final_iqm(conf: Configuration) -> float:
    scores = conf.scores
    return stats.iqm(scores) if len(scores) else float("-inf")


def best_per_env(configs: list[Configuration]) -> tuple["OrderedDict[str, list[Configuration]]", int]:
    """Per env, at most MAX_CURVES configurations, best final IQM first; and how many were left out."""
    out: "OrderedDict[str, list[Configuration]]" = OrderedDict()
    left_out = 0
    for env_id, group in by_env(configs).items():
        if len(group) > MAX_CURVES:
            left_out += len(group) - MAX_CURVES
            group = sorted(group, key=lambda c: -final_iqm(c))[:MAX_CURVES]
        out[env_id] = group
    return out, left_out


def aligned(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(grid [G], values [S, G]): the runs' `key` on the env steps all of them reached,
    linearly interpolated onto the union of their steps."""
    series = [r.series(key) for r in runs]
    series = [(x, y) for x, y in series if len(x) >= 1]
    if not series:
        return np.zeros(0), np.zeros((0, 0))
    end = min(x[-1] for x, _ in series)
    start = max(x[0] for x, _ in series)
    grid = np.unique(np.concatenate([x for x, _ in series]))
    grid = grid[(grid >= start) & (grid <= end)]
    return grid, np.stack([np.interp(grid, x, y) for x, y in series])


def _legend(fig, axes) -> None:
    """One legend for the figure, right of the axes, each label once."""
    seen: "OrderedDict[str, Any]" = OrderedDict()
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=8, frameon=False)


def _reference_lines(ax, env_id: str) -> None:
    styles = ["--", ":", "-.", (0, (5, 2, 1, 2))]
    for style, (source, value, std) in zip(styles, references.published(env_id)):
        ax.axhline(value, color="0.45", linestyle=style, linewidth=1, gid=GUIDE,
                   label=f"TRPO {source.name} ({value:g} after {source.budget})")


def learning_curves(configs: list[Configuration], figures: Figures, key: str, fig_id: str, ylabel: str,
                    caption: str, final_points: bool = False) -> Optional[str]:
    """Per env, `key` against env steps: mean over completed seeds with a 95% bootstrap band;
    with `final_points`, each configuration's final evaluation as a point with its 95% IQM
    interval; published TRPO scores as grey lines where the task has them."""
    envs, left_out = best_per_env(configs)
    if left_out:
        caption += f" Only the {MAX_CURVES} best configurations per environment (final IQM) are drawn."
    fig, axes = plt().subplots(1, len(envs), figsize=(5.6 * len(envs) + 2.5, 4.2), squeeze=False,
                               layout="constrained")
    drawn, palette = False, colours(configs)
    for ax, (env_id, group) in zip(axes[0], envs.items()):
        for conf in group:
            colour = palette[conf.name]
            grid, values = aligned(conf.completed, key)
            if len(grid):
                mean, low, high = stats.bootstrap_mean_band(values)
                ax.plot(grid, mean, color=colour, marker="o" if len(grid) < 12 else None, markersize=3,
                        label=f"{conf.legend} (n={values.shape[0]})")
                if values.shape[0] > 1:
                    ax.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
                drawn = True
            scores = conf.scores
            if final_points and len(scores):
                x = float(np.mean([r.final_steps for r in conf.completed]))
                value = stats.iqm(scores)
                low, high = stats.bootstrap_interval(scores)
                ax.errorbar([x], [value], yerr=[[value - low], [high - value]], fmt="D", color=colour,
                            markersize=6, markeredgecolor="black", capsize=3, label="_final")
                drawn = True
        _reference_lines(ax, env_id)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if not drawn:
        plt().close(fig)
        return None
    _legend(fig, axes)
    return figures.add(fig, fig_id, caption)


def final_returns(rows: list[dict[str, Any]], configs: list[Configuration], figures: Figures) -> Optional[str]:
    """Each configuration's final IQM with its interval, one panel per env, best first."""
    envs = OrderedDict()
    for row in rows:
        if row["n"]:
            envs.setdefault(row["env"], []).append(row)
    if not envs:
        return None
    palette = colours(configs)
    height = 0.42 * max(len(v) for v in envs.values()) + 1.4
    fig, axes = plt().subplots(1, len(envs), figsize=(5.5 * len(envs), height), squeeze=False, layout="constrained")
    for ax, (env_id, group) in zip(axes[0], envs.items()):
        ys = np.arange(len(group))[::-1]
        for y, row in zip(ys, group):
            ax.errorbar(row["iqm"], y, xerr=[[row["iqm"] - row["low"]], [row["high"] - row["iqm"]]], fmt="o",
                        capsize=4, color=palette[row["name"]])
        ax.set_yticks(ys, [f"{r['name']} (n={r['n']})" for r in group], fontsize=8)
        for source, value, _ in references.published(env_id):
            ax.axvline(value, color="0.6", linestyle=":", linewidth=1, gid=GUIDE)
        ax.set_title(env_id, fontsize=10)
        ax.set_xlabel("IQM of the final evaluation return (95% CI)")
        ax.grid(alpha=0.3, axis="x")
    return figures.add(fig, "fig-final-returns", "Final deterministic evaluation return per configuration: "
                       "interquartile mean over seeds with rliable's 95% bootstrap interval; dotted: published "
                       "TRPO scores where the task has them.")


def aggregate_figure(results: dict[str, dict[str, tuple[float, float, float]]], palette: dict[str, Any],
                     figures: Figures, caption: str) -> str:
    """rliable's interval plot: IQM and optimality gap of normalised scores, one row per configuration."""
    names = list(results)
    fig, axes = plt().subplots(1, 2, figsize=(9, 0.42 * len(names) + 1.5), layout="constrained")
    ys = np.arange(len(names))[::-1]
    for ax, metric in zip(axes, ("IQM", "optimality gap")):
        for y, name in zip(ys, names):
            value, low, high = results[name][metric]
            ax.barh(y, high - low, left=low, height=0.6, color=palette[name], alpha=0.75)
            ax.plot([value, value], [y - 0.3, y + 0.3], color="black", linewidth=1.5)
        ax.set_yticks(ys, names if ax is axes[0] else [""] * len(names))
        ax.set_title(metric + (" (higher is better)" if metric == "IQM" else " (lower is better)"), fontsize=10)
        ax.set_xlabel("normalised score")
        ax.grid(alpha=0.3, axis="x")
    return figures.add(fig, "fig-aggregates", caption)


def profile_figure(taus: np.ndarray, profiles: dict[str, np.ndarray], cis: dict[str, np.ndarray],
                   palette: dict[str, Any], figures: Figures, caption: str) -> str:
    fig, ax = plt().subplots(figsize=(7.5, 4), layout="constrained")
    for name, profile in profiles.items():
        ax.plot(taus, profile, color=palette[name], label=name)
        ax.fill_between(taus, cis[name][0], cis[name][1], color=palette[name], alpha=0.2, linewidth=0)
    ax.set_xlabel(r"normalised score $\tau$")
    ax.set_ylabel(r"fraction of runs with score > $\tau$")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend(fig, [ax])
    return figures.add(fig, "fig-performance-profile", caption)


def versus_figure(a: str, b: str, value: float, low: float, high: float, figures: Figures) -> str:
    fig, ax = plt().subplots(figsize=(6.5, 1.6), layout="constrained")
    ax.barh(0, high - low, left=low, height=0.5, color="tab:blue", alpha=0.7)
    ax.plot([value, value], [-0.25, 0.25], color="black", linewidth=2)
    ax.axvline(0.5, color="0.5", linestyle="--", linewidth=1, gid=GUIDE)
    ax.set_xlim(0, 1)
    ax.set_yticks([0], [f"P({a} > {b})"])
    ax.set_xlabel("probability of improvement (95% CI)")
    return figures.add(fig, "fig-versus", f"Probability that a run of {a} ends above a run of {b} on the same "
                       "task (Mann-Whitney U / (n_a n_b), averaged over tasks), with rliable's stratified "
                       "bootstrap 95% interval; 0.5: neither is better.")


def throughput_figure(configs: list[Configuration], figures: Figures) -> Optional[str]:
    """Per env: training return against wall-clock time (each seed), and steps/s per configuration."""
    envs, _ = best_per_env(configs)
    palette = colours(configs)
    fig, axes = plt().subplots(2, len(envs), figsize=(5.6 * len(envs) + 2.5, 7.2), squeeze=False,
                               layout="constrained")
    drawn = False
    for col, (env_id, group) in enumerate(envs.items()):
        top, bottom = axes[0][col], axes[1][col]
        for i, conf in enumerate(group):
            for j, run in enumerate(conf.completed):
                pts = [(r[M.WALL_TIME], r[M.EP_RETURN]) for r in run.rows
                       if r.get(M.WALL_TIME) is not None and r.get(M.EP_RETURN) is not None]
                if pts:
                    x, y = zip(*pts)
                    top.plot(x, y, color=palette[conf.name], linewidth=1, alpha=0.8,
                             label=conf.legend if j == 0 else "_seed")
                    drawn = True
            speeds = [r.summary.get(M.Summary.STEPS_PER_S) for r in conf.completed]
            speeds = [s for s in speeds if s]
            if speeds:
                bottom.bar(i, float(np.mean(speeds)), color=palette[conf.name], alpha=0.75)
                bottom.scatter([i] * len(speeds), speeds, color="black", s=10, zorder=3)
                drawn = True
        top.set_title(f"{env_id}: training return against wall-clock time", fontsize=10)
        top.set_xlabel("wall-clock seconds")
        top.set_ylabel("training episode return")
        top.grid(alpha=0.3)
        bottom.set_xticks(range(len(group)), [c.name for c in group], fontsize=8)
        bottom.set_title(f"{env_id}: env steps per second of training (bar: mean, dots: seeds)", fontsize=10)
        bottom.set_ylabel("steps/s")
        bottom.grid(alpha=0.3, axis="y")
    if not drawn:
        plt().close(fig)
        return None
    _legend(fig, axes)
    return figures.add(fig, "fig-throughput", "Speed: training return against wall-clock time (one line per "
                       "seed), and training throughput (summary.json's steps_per_s; evaluation excluded).")


def trust_region_figure(configs: list[Configuration], figures: Figures) -> Optional[str]:
    envs, left_out = best_per_env(configs)
    panels = [(M.KL, "mean KL(pi_old || pi_new)"), (M.LINE_SEARCH_STEPS, "line-search step sizes tried"),
              (M.EXPLAINED_VARIANCE, "explained variance of V")]
    fig, axes = plt().subplots(len(envs), 3, figsize=(14, 3.6 * len(envs)), squeeze=False, layout="constrained")
    drawn, palette = False, colours(configs)
    for row_axes, (env_id, group) in zip(axes, envs.items()):
        for conf in group:
            colour = palette[conf.name]
            for ax, (key, _) in zip(row_axes, panels):
                grid, values = aligned(conf.completed, key)
                if len(grid) == 0:
                    continue
                ax.plot(grid, values.mean(axis=0), color=colour, label=conf.legend, linewidth=1.2)
                drawn = True
            if conf.delta is not None:
                row_axes[0].axhline(conf.delta, color=colour, linestyle="--", linewidth=1, gid=GUIDE)
        for ax, (_, title) in zip(row_axes, panels):
            ax.set_title(f"{env_id}: {title}", fontsize=9)
            ax.set_xlabel("environment steps")
            ax.grid(alpha=0.3)
        row_axes[2].set_ylim(-1.05, 1.05)
    if not drawn:
        plt().close(fig)
        return None
    _legend(fig, axes)
    return figures.add(fig, "fig-trust-region", "Trust-region diagnostics, mean over seeds: achieved KL "
                       "with each configuration's delta dashed; step sizes the line search tried (1: the full "
                       "step was accepted; a search that accepts none tries backtrack_iters and keeps the "
                       "policy); explained variance of the value fit."
                       + (f" Only the {MAX_CURVES} best configurations per environment are drawn." if left_out else ""))
