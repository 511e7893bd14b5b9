"""`python -m trpo_lab.report PATH...`: one self-contained HTML page comparing runs, offline.

PATH may be a run directory, a multirun (or any directory holding run
directories), or an Optuna study storage: a journal file, an SQLite file, or
an RDB URL. The page (figures embedded as PNGs; `--png` also writes them beside
it, `--table md|latex` the final-return table) answers "which settings work,
and how sure are we":

    configurations   seeds grouped by the settings that differ (bookkeeping keys
                     ignored), named C1, C2, ... in a table of those settings
    learning curves  training and evaluation return against env steps: mean over
                     seeds with a 95% bootstrap band, the final evaluation as a
                     point, published TRPO scores as reference lines
    final returns    per configuration, the IQM of the final evaluation return
                     over seeds with its 95% bootstrap interval, best first
    aggregates       rliable (Agarwal et al. 2021): IQM and optimality gap with
                     stratified bootstrap intervals, performance profiles, and
                     with `--versus A B` the probability that A improves on B
    studies          Optuna's optimisation history, importances and parallel
                     coordinates, the trials table, the best parameters as overrides
    speed            return against wall-clock time, steps/s per configuration
    trust region     achieved KL against delta, line-search steps, explained variance
    runs             every run with its status; and every input that was skipped, and why

Aggregates use completed runs; failed, pruned, interrupted and unfinished runs
are listed with their status and left out of them. Nothing here needs the
network or wandb.

Modules: discovery (inputs), grouping (configurations, score matrices), stats
(rliable's estimators), references (published scores), figures, studies,
tables, page (the HTML and the command line).
"""
from trpo_lab.report.page import build_report, main
from trpo_lab.report.stats import bootstrap_interval, bootstrap_mean_band, iqm

__all__ = ["build_report", "main", "bootstrap_interval", "bootstrap_mean_band", "iqm"]
