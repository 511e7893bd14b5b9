"""An Optuna study on the page: its states, best parameters as overrides, Optuna's own
matplotlib figures (history, importances, parallel coordinates) and the trials table."""
from __future__ import annotations

import html
import warnings
from typing import Any

from trpo_lab.report.figures import Figures
from trpo_lab.report.grouping import fmt
from trpo_lab.report.tables import num, table


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
        overrides = " ".join(f"{k}={fmt(v)}" for k, v in best.params.items())
        parts.append(f"<p>Best trial #{best.number}, value {num(best.value)}. As overrides:</p>"
                     f"<pre class='overrides'>{html.escape(overrides)}</pre>")
        parts.append(_history_figure(study, trials, index, figures))
        parts.append(_importance_figure(study, complete, index, figures))
        parts.append(_parallel_figure(study, complete, index, figures))
    else:
        parts.append("<p class='note'>No completed trial yet: nothing to plot.</p>")
    param_names = sorted({k for t in trials for k in t.params})
    rows = []
    for t in trials:
        value = num(t.value) if (t.values is not None and not multi) else \
            (", ".join(num(v) for v in t.values) if t.values else "")
        if t.state == TS.PRUNED and t.intermediate_values:
            step = max(t.intermediate_values)
            value = f"pruned at {step}: {num(t.intermediate_values[step])}"
        reason = t.system_attrs.get("fail_reason") or t.user_attrs.get("fail_reason") or \
            t.user_attrs.get("error", "")
        duration = f"{t.duration.total_seconds():.0f}s" if t.duration else ""
        rows.append([str(t.number), t.state.name.lower(), value] +
                    [fmt(t.params[k]) if k in t.params else "" for k in param_names] +
                    [duration, str(reason)[:200]])
    parts.append(table(["trial", "state", "value"] + param_names + ["duration", "reason"], rows))
    return "\n".join(p for p in parts if p)


def _optuna_figure(plot, study, figures: Figures, fig_id: str, caption: str, **kwargs) -> str:
    """One of optuna.visualization.matplotlib's figures; a note when Optuna cannot draw it."""
    import matplotlib

    from trpo_lab.report.figures import plt

    plt()
    try:
        with matplotlib.rc_context(), warnings.catch_warnings():  # Optuna sets the ggplot style globally
            warnings.simplefilter("ignore")
            ax = plot(study, **kwargs)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 4.2)
            return figures.add(fig, fig_id, caption)
    except Exception as err:
        return f"<p class='note'>{html.escape(caption)} Not drawn: {html.escape(str(err))}</p>"


def _history_figure(study, trials, index: int, figures: Figures) -> str:
    from optuna.visualization.matplotlib import plot_optimization_history

    return _optuna_figure(plot_optimization_history, study, figures, f"fig-study{index}-history",
                          f"{study.study_name}: optimisation history (Optuna's plot_optimization_history).")


def _importance_figure(study, complete, index: int, figures: Figures) -> str:
    from optuna.visualization.matplotlib import plot_param_importances

    if len(complete) < 3:
        return f"<p class='note'>Parameter importances need at least 3 completed trials ({len(complete)} so far).</p>"
    return _optuna_figure(plot_param_importances, study, figures, f"fig-study{index}-importances",
                          f"{study.study_name}: parameter importances over {len(complete)} completed trials "
                          "(Optuna's default evaluator).")


def _parallel_figure(study, complete, index: int, figures: Figures) -> str:
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    if not any(t.params for t in complete):
        return ""
    return _optuna_figure(plot_parallel_coordinate, study, figures, f"fig-study{index}-parallel",
                          f"{study.study_name}: parallel coordinates of the completed trials' parameters.")
