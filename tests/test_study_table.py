"""trpo_lab.report.study_table: the late-mean ranking and the budget-ranking evidence docs/results.md prints."""
from __future__ import annotations

import math

import optuna
import pytest

from trpo_lab.report import study_table
from trpo_lab.sweeper.storage import open_storage


def test_spearman_matches_hand_computed_values_with_ties():
    assert study_table.ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert study_table.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study_table.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 0, -1, 1): 1 - 6 * 2 / (4 * 15) = 0.8
    assert study_table.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        study_table.spearman([1, 2], [1, 2])


def test_late_mean_includes_the_final_value_and_skips_early_and_nan_evaluations():
    values = {100: 1000.0, 700: 10.0, 800: math.nan, 900: 20.0}
    assert study_table.late_mean(values, 700, final=30.0) == pytest.approx(20.0)
    assert study_table.late_mean(values, 700) == pytest.approx(15.0)
    assert study_table.late_mean({100: 1.0}, 700) is None


def _journal_with_trials(path):
    storage = open_storage(f"journal:{path}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    # trial i: early evaluations rank the trials in reverse of their late ones
    for i, late in enumerate([100.0, 300.0, 200.0, 400.0]):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        t.report(1000.0 - late, 100)
        t.report(late, 700)
        study.tell(t, late)
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    t.report(5.0, 100)
    study.tell(t, state=optuna.trial.TrialState.PRUNED)
    return study


def test_the_table_ranks_complete_trials_by_late_mean_and_says_how_early_steps_rank(tmp_path, capsys):
    _journal_with_trials(tmp_path / "j.journal")
    assert study_table.main([str(tmp_path / "j.journal"), "--late-from", "700"]) == 0
    out = capsys.readouterr().out
    assert "## s: 5 trials (4 complete, 1 pruned)" in out
    rows = [line.split(" | ")[0].strip("| ") for line in out.splitlines() if "| complete |" in line or "| pruned |" in line]
    assert rows == ["3", "1", "2", "0", "4"]  # late means 400, 300, 200, 100, then the pruned trial
    assert "| 100 | -1.00 |" in out  # the evaluation at step 100 ranks them in reverse
    assert study_table.main([str(tmp_path / "j.journal"), "--study", "other"]) == 2
