"""Final return against behaviour-policy staleness: the table and figure of a staleness study.

Runs are grouped into cells by environment, collection, policy lag and
off-policy correction (docs/off_policy.md); a cell's score is the
interquartile mean of its seeds' final evaluation returns, with a 95%
percentile-bootstrap interval over seeds. At lag 0 with synchronous
collection the three corrections are one estimator (beta is pi_old), so that
cell starts every correction's line. Asynchronous runs are drawn at their
measured mean lag.

    python -m trpo_lab.report.staleness multirun/staleness-Hopper-v5 [--png staleness.png]

prints the markdown table (and writes the figure); the HTML report draws the
same figure for runs that vary the lag, the correction or the collection.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from trpo_lab import metrics as M

KEYS = ("trainer.collection", "trainer.policy_lag", "trpo.off_policy_correction")
DIAGNOSTICS = ((M.POLICY_LAG_MEAN, "mean policy lag of the batch"), (M.BEHAVIOUR_KL, "KL(beta || pi_old)"),
               (M.IS_ESS, "effective sample size of pi_old / beta"), (M.IS_RATIO_MAX, "largest pi_old / beta"))
CORRECTIONS = ("importance", "truncated", "none")


@dataclass
class Cell:
    env_id: str
    collection: str
    lag: int
    correction: str
    scores: list[float]      # final evaluation return per seed
    mean_lags: list[float]   # mean of rollout/policy_lag_mean over each run's iterations
    runs: list               # the runs behind the scores

    @property
    def label(self) -> str:
        if self.collection == "async":
            return f"async ({self.correction})"
        return f"lag {self.lag}" + ("" if self.lag == 0 else f", {self.correction}")


def is_staleness_study(runs: list) -> bool:
    """Whether the runs vary what this module compares, or use a stale behaviour policy at all."""
    values = {tuple(r.settings.get(k) for k in KEYS) for r in runs}
    return len(values) > 1 or any(collection == "async" or (lag or 0) > 0 for collection, lag, _ in values)


def cells(runs: list) -> list[Cell]:
    """Completed runs (report.discovery.Run) grouped into cells; lag-0 synchronous runs form one cell per
    environment whatever their correction."""
    out: dict[tuple, Cell] = {}
    for run in runs:
        if run.status != M.Status.COMPLETED or not np.isfinite(run.final_return):
            continue
        collection = run.settings.get("trainer.collection", "sync")
        lag = int(run.settings.get("trainer.policy_lag", 0) or 0)
        correction = run.settings.get("trpo.off_policy_correction", "importance")
        if collection == "sync" and lag == 0:
            correction = "any"
        key = (run.env_id, collection, lag, correction)
        cell = out.setdefault(key, Cell(run.env_id, collection, lag, correction, [], [], []))
        cell.scores.append(run.final_return)
        cell.runs.append(run)
        lags = [row[M.POLICY_LAG_MEAN] for row in run.rows if row.get(M.POLICY_LAG_MEAN) is not None]
        cell.mean_lags.append(float(np.mean(lags)) if lags else float(lag))
    order = {c: i for i, c in enumerate(("any", *CORRECTIONS))}
    return sorted(out.values(), key=lambda c: (c.env_id, c.collection == "async", c.lag,
                                               order.get(c.correction, 9), c.correction))


def score(cell: Cell) -> tuple[float, float, float]:
    """(IQM, low, high) of the cell's final returns: 95% percentile bootstrap over seeds."""
    from trpo_lab.report.stats import bootstrap_interval, iqm

    scores = np.asarray(cell.scores)
    low, high = bootstrap_interval(scores) if len(scores) > 1 else (scores[0], scores[0])
    return iqm(scores), low, high


def table_markdown(all_cells: list[Cell]) -> str:
    lines = []
    for env_id in dict.fromkeys(c.env_id for c in all_cells):
        lines += [f"### {env_id}", "",
                  "| behaviour policy | correction | seeds | IQM [95% CI] | median | mean lag | per seed |",
                  "|---|---|---|---|---|---|---|"]
        for c in (c for c in all_cells if c.env_id == env_id):
            value, low, high = score(c)
            who = "async workers" if c.collection == "async" else ("pi_old (sync)" if c.lag == 0 else f"lag {c.lag}")
            lines.append(f"| {who} | {c.correction} | {len(c.scores)} | {value:,.0f} [{low:,.0f}, {high:,.0f}] | "
                         f"{np.median(c.scores):,.0f} | {np.mean(c.mean_lags):.2f} | "
                         f"{', '.join(f'{s:,.0f}' for s in c.scores)} |")
        lines.append("")
    return "\n".join(lines)


def figure(all_cells: list[Cell]):
    """Final return (IQM, 95% bootstrap band) against policy lag, one line per correction, one panel
    per environment; asynchronous runs as points at their measured mean lag."""
    from trpo_lab.report.figures import plt as pyplot

    plt = pyplot()
    envs = list(dict.fromkeys(c.env_id for c in all_cells))
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4.0), squeeze=False)
    colours = dict(zip(CORRECTIONS, ("tab:blue", "tab:orange", "tab:green")))
    for ax, env_id in zip(axes[0], envs):
        mine = [c for c in all_cells if c.env_id == env_id]
        base = [c for c in mine if c.collection == "sync" and c.lag == 0]
        for correction in CORRECTIONS:
            line = base + [c for c in mine if c.collection == "sync" and c.lag > 0 and c.correction == correction]
            if len(line) < 2 and not any(c.correction == correction for c in line):
                continue
            xs = [c.lag for c in line]
            stats = np.array([score(c) for c in line])
            ax.plot(xs, stats[:, 0], marker="o", color=colours[correction], label=correction)
            ax.fill_between(xs, stats[:, 1], stats[:, 2], color=colours[correction], alpha=0.2)
        for c in (c for c in mine if c.collection == "async"):
            value, low, high = score(c)
            x = float(np.mean(c.mean_lags))
            ax.errorbar([x], [value], yerr=[[value - low], [high - value]], fmt="s", color="black", capsize=4,
                        label=f"async workers ({c.correction})")
        ax.set_title(env_id)
        ax.set_xlabel("policy lag (updates between beta and pi_old)")
        ax.set_ylabel("final evaluation return (IQM over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def diagnostics_figure(all_cells: list[Cell]):
    """The staleness metrics against environment steps, one line per cell (mean over its seeds)."""
    from trpo_lab.report.figures import plt as pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(4.2 * len(DIAGNOSTICS), 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(all_cells):
        for ax, (key, title) in zip(axes[0], DIAGNOSTICS):
            series = [[(row[M.ENV_STEPS], row[key]) for row in run.rows if row.get(key) is not None]
                      for run in c.runs]
            series = [s for s in series if s]
            if not series:
                continue
            n = min(len(s) for s in series)
            steps = np.array([p[0] for p in series[0][:n]])
            values = np.mean([[p[1] for p in s[:n]] for s in series], axis=0)
            ax.plot(steps, values, color=cmap(i % 10), label=f"{c.env_id} {c.label}" if len(
                {x.env_id for x in all_cells}) > 1 else c.label)
    for ax, (key, title) in zip(axes[0], DIAGNOSTICS):
        ax.set_title(f"{key}\n{title}", fontsize="small")
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize="small",
                   bbox_to_anchor=(0.5, -0.02 - 0.05 * (len(labels) // 6)))
    fig.tight_layout(rect=(0, 0.1 + 0.05 * (len(labels) // 6), 1, 1))
    return fig


def main(argv: Optional[list[str]] = None) -> int:
    from trpo_lab.report.discovery import collect_inputs

    parser = argparse.ArgumentParser(prog="python -m trpo_lab.report.staleness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run or multirun directories")
    parser.add_argument("--png", type=Path, help="also write the figure here")
    args = parser.parse_args(argv)
    inputs = collect_inputs(args.paths)
    found = cells(inputs.runs)
    if not found:
        print("trpo_lab.report.staleness: no completed runs in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    print(table_markdown(found))
    if args.png:
        fig = figure(found)
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=120, bbox_inches="tight")
        print(f"figure: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
