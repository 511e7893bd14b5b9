"""The benchmark's tables and verdicts (benchmarks/bench_vs_sb3.py): what it concludes from runs."""
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vs_sb3.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vs_sb3", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(kind, rate, seed=0, steps=61_440, eval_return=100.0):
    run = {"kind": kind, "env": "Hopper-v5", "seed": seed, "steps": steps, "steps_per_s": rate, "peak_rss_mib": 300.0}
    if not kind.startswith("raw"):  # raw stepping learns nothing: no evaluation
        run["eval_return"] = eval_return
    return run


def _verdicts(bench, runs):
    by = {k: [r for r in runs if r["kind"] == k] for k in bench.KINDS}
    return bench.verdicts(by, bench._rates(runs))


def test_speed_verdicts_use_each_runs_best_rate(bench):
    # One disturbed subproc run (4,000) must not sink the ratio; the means would say 1.33x.
    runs = [_run("raw", 7000), _run("raw", 6000), _run("sb3", 1400), _run("sb3", 1300),
            _run("trpo_lab", 5000), _run("trpo_lab", 4000),
            _run("trpo_lab-subproc", 8000), _run("trpo_lab-subproc", 4000)]
    says = _verdicts(bench, runs)
    assert ">= 3x sb3-contrib steps/s: met (3.57x, 2 runs; ratio of means 3.33)" in says
    assert ">= 70% of raw env.step: met (71%, 2 runs; ratio of means 0.69)" in says
    assert "subproc >= 1.5x single process: met (1.60x, 2 runs; ratio of means 1.33)" in says


def test_speed_verdicts_say_not_met(bench):
    runs = [_run("raw", 7000), _run("sb3", 1400), _run("trpo_lab", 4000), _run("trpo_lab-subproc", 5000)]
    says = _verdicts(bench, runs)
    assert ">= 3x sb3-contrib steps/s: NOT met (2.86x)" in says
    assert ">= 70% of raw env.step: NOT met (57%)" in says
    assert "subproc >= 1.5x single process: NOT met (1.25x)" in says


def test_learning_verdict_is_over_seeds_and_scoped(bench):
    runs = [_run("sb3", 1000, seed=s, steps=307_200, eval_return=r) for s, r in enumerate([3000, 3300, 3600])]
    runs += [_run("trpo_lab", 4000, seed=s, steps=307_200, eval_return=r) for s, r in enumerate([2900, 3300, 3600])]
    assert "mean eval return >= sb3-contrib's: NOT met (3266.7 vs 3300.0)" in _verdicts(bench, runs)
    short = [dict(r, steps=61_440) for r in runs[:1] + runs[3:4]]
    (verdict,) = [v for v in _verdicts(bench, short) if v.startswith("mean eval")]
    assert verdict.endswith("(indicative only: the target is 3 seeds at 300k steps)")


def test_table_lists_runs_in_order_with_best_and_mean(bench):
    runs = [_run("trpo_lab", 5000), _run("raw", 7000), _run("trpo_lab", 4000), _run("raw-parallel", 13000)]
    text = bench.table("Hopper-v5", runs, bench.KINDS)
    rows = [line for line in text.splitlines() if line.startswith("| raw") or line.startswith("| trpo_lab")]
    assert [row.split(" | ")[0] for row in rows] == ["| raw", "| raw-parallel", "| trpo_lab"]
    assert rows[2].startswith("| trpo_lab | 5,000 | 4,500 (5,000 / 4,000) | - | 71% | 1.00 |")
