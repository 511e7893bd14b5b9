"""The staleness study's cells, table and figure (trpo_lab/report/staleness.py)."""
from pathlib import Path

import numpy as np

from trpo_lab import metrics as M
from trpo_lab.report.discovery import Run
from trpo_lab.report.staleness import cells, diagnostics_figure, figure, is_staleness_study, table_markdown


def _run(seed, score, lag=0, correction="importance", collection="sync", env_id="Hopper-v5", status="completed"):
    settings = {"trainer.policy_lag": lag, "trpo.off_policy_correction": correction,
                "trainer.collection": collection, "trpo.delta": 0.03}
    rows = [{M.ENV_STEPS: 2048 * i, M.POLICY_LAG_MEAN: 0.6 if collection == "async" else float(min(i - 1, lag)),
             M.BEHAVIOUR_KL: 0.01 * lag, M.IS_ESS: 1.0 - 0.1 * lag, M.IS_RATIO_MAX: 1.0 + lag} for i in range(1, 4)]
    return Run(Path(f"/runs/{lag}-{correction}-{collection}-{seed}"), env_id, settings, seed, status, rows,
               {"eval_return": score, "env_steps": 6144})


def _study():
    runs = [_run(s, 1000 + 10 * s, correction=c) for s in range(3) for c in ("importance", "none")]
    for lag, drop in ((1, 100), (2, 300)):
        for c, extra in (("importance", 0), ("truncated", 50), ("none", -200)):
            runs += [_run(s, 1000 - drop + extra + s, lag=lag, correction=c) for s in range(3)]
    runs += [_run(s, 950 + s, collection="async") for s in range(3)]
    runs.append(_run(9, 5000, lag=2, correction="none", status="failed"))  # not a score
    return runs


def test_cells_group_seeds_and_merge_the_lag_0_estimators():
    found = cells(_study())
    labels = [(c.collection, c.lag, c.correction, len(c.scores)) for c in found]
    assert labels[0] == ("sync", 0, "any", 6)  # importance and none at lag 0: one estimator
    assert ("sync", 2, "none", 3) in labels and ("async", 0, "importance", 3) in labels
    assert len(found) == 1 + 6 + 1
    lag2_none = next(c for c in found if c.lag == 2 and c.correction == "none")
    assert sorted(lag2_none.scores) == [500, 501, 502]  # the failed run's 5000 is left out
    async_cell = next(c for c in found if c.collection == "async")
    assert np.mean(async_cell.mean_lags) == 0.6


def test_table_and_figure_show_every_cell():
    found = cells(_study())
    text = table_markdown(found)
    assert "| lag 2 | truncated | 3 | 751 [750, 752] |" in text
    assert "| async workers | importance | 3 |" in text and "| pi_old (sync) | any | 6 |" in text
    fig = figure(found)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"importance", "truncated", "none"}
    np.testing.assert_array_equal(lines["none"].get_xdata(), [0, 1, 2])
    assert lines["none"].get_ydata()[2] < lines["truncated"].get_ydata()[2]
    assert any("async" in t.get_text() for t in ax.get_legend().get_texts())


def test_a_plain_grid_is_not_a_staleness_study():
    plain = [_run(s, 100.0) for s in range(2)]
    for r in plain[1:]:
        r.settings["trpo.delta"] = 0.01
    assert not is_staleness_study(plain)
    assert is_staleness_study(_study())
    assert is_staleness_study([_run(0, 1.0, lag=1)])


def test_diagnostics_figure_draws_each_cells_staleness_over_training():
    found = cells(_study())
    fig = diagnostics_figure(found)
    assert len(fig.axes) == 4
    ess = fig.axes[2]
    assert len(ess.get_lines()) == len(found)
    lag2_none = [line for line in ess.get_lines() if line.get_label() == "lag 2, none"][0]
    np.testing.assert_allclose(lag2_none.get_ydata(), [0.8, 0.8, 0.8])
