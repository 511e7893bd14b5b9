"""The offline report: statistics by hand, a real multirun with a failed and a pruned run
and a study, and the page rendered in headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from trpo_lab.report import bootstrap_interval, bootstrap_mean_band, iqm


def test_iqm_by_hand():
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)   # middle four of 1..8
    assert iqm([1.0, 2.0, 3.0]) == pytest.approx(2.0)       # below 4 scores nothing is cut
    assert iqm([0.0, 10.0, 10.0, 1000.0]) == pytest.approx(10.0)  # the outliers go


def test_bootstrap_intervals():
    assert bootstrap_interval(np.full(5, 7.0)) == (7.0, 7.0)
    low, high = bootstrap_interval(np.arange(20.0))
    assert low < iqm(np.arange(20.0)) < high
    mean, lo, hi = bootstrap_mean_band(np.array([[0.0, 1.0], [2.0, 1.0]]))
    np.testing.assert_allclose(mean, [1.0, 1.0])
    assert lo[0] == 0.0 and hi[0] == 2.0 and lo[1] == hi[1] == 1.0


@pytest.fixture(scope="module")
def sweep_dir():
    """2 deltas x 2 seeds on CartPole, plus a failed run, a pruned run, junk and a study journal."""
    root = Path(tempfile.mkdtemp(prefix="trpo_report_"))
    sweep = root / "multirun" / "sweep1"
    proc = run_cli("-m", "env=cartpole", "trainer.total_steps=1536", "trainer.steps_per_iter=512",
                   "trainer.eval_every=1", "trainer.eval_episodes=1", "trpo.value_epochs=2", "logger=none",
                   "trpo.delta=0.005,0.05", "trainer.seed=0,1", f"hydra.sweep.dir={sweep}", cwd=root)
    assert proc.returncode == 0, proc.stderr
    # A run that failed after two iterations, and one pruned after one: copies with their endings.
    for src, name, status, keep in (("0", "4", "failed", 2), ("1", "5", "pruned", 1)):
        dst = sweep / name
        shutil.copytree(sweep / src, dst)
        rows = (dst / "metrics.jsonl").read_text().splitlines()[:keep]
        (dst / "metrics.jsonl").write_text("\n".join(rows) + "\n")
        summary = json.loads((dst / "summary.json").read_text())
        summary.update(status=status, error="DivergedError: value loss became nan" if status == "failed" else None)
        (dst / "summary.json").write_text(json.dumps(summary))
    (sweep / "6" / ".hydra").mkdir(parents=True)  # a job that died before its first row
    (sweep / "6" / ".hydra" / "config.yaml").write_text("env:\n  id: CartPole-v1\n")

    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep / "optuna_journal.log")))
    study = optuna.create_study(study_name="trust_region", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(8):
        trial = study.ask()
        delta = trial.suggest_float("trpo.delta", 1e-3, 0.1, log=True)
        lam = trial.suggest_float("trpo.gae_lambda", 0.8, 1.0)
        if i == 2:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif i == 4:
            trial.report(5.0, 512)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 100 * lam - 1000 * (delta - 0.02) ** 2)
    yield sweep
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def report(sweep_dir):
    out = sweep_dir.parent / "out" / "report.html"
    proc = run_cli(str(sweep_dir), str(sweep_dir.parent / "missing"), "-o", str(out), cwd=sweep_dir.parent,
                   module="trpo_lab.report", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out, proc


EXPECTED_FIGURES = ("fig-learning-curves", "fig-eval-curves", "fig-final-returns", "fig-study0-history",
                    "fig-study0-importances", "fig-study0-parallel", "fig-trust-region")


def test_report_contents(report):
    out, proc = report
    page = out.read_text()
    for fig_id in EXPECTED_FIGURES:
        assert f'id="{fig_id}"' in page
        assert (out.parent / "report_files" / f"{fig_id}.png").stat().st_size > 1000
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing fetched
    # Final-return table: two configurations of two completed seeds each, best IQM first;
    # the failed and pruned runs are counted as left out, not averaged in.
    table = page.split("id='final-returns'")[1].split("</table>")[0]
    row = r"<td>CartPole-v1</td><td>\d</td><td>trpo.delta=[^<]+</td><td>2</td><td>([-\d.e+]+)</td>"
    iqms = [float(x) for x in re.findall(row, table)]
    assert len(iqms) == 2 and iqms[0] >= iqms[1]
    assert "failed" in table and "pruned" in table
    # Study: states, best parameters as overrides.
    assert "<td>fail</td>" in page and "<td>pruned</td>" in page and "<td>complete</td>" in page
    assert re.search(r"<pre class='overrides'>trpo.delta=[\d.e-]+ trpo.gae_lambda=[\d.]+</pre>", page)
    # Skipped inputs, with reasons, on the page and on stderr.
    skipped = page.split("id='skipped'")[1]
    assert "missing" in skipped and "does not exist" in skipped
    assert "sweep1/6" in skipped and "no metrics rows" in skipped
    assert "does not exist" in proc.stderr
    # Runs table lists the failed run with its error.
    assert "DivergedError: value loss became nan" in page


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    out, _ = report
    profile = tmp_path / "profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    total = re.search(r'data-figures-total="(\d+)"', body.group(0))
    loaded = re.search(r'data-figures-loaded="(\d+)"', body.group(0))
    assert total and loaded, body.group(0)
    assert int(total.group(1)) == len(EXPECTED_FIGURES)
    assert int(loaded.group(1)) == len(EXPECTED_FIGURES)  # every embedded PNG decoded
    shot = tmp_path / "page.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_report_reads_an_sqlite_study_by_url_and_by_file(tmp_path):
    """RDB storages: an SQLite file found by content, and the same storage given as a URL."""
    import optuna

    from trpo_lab.report import build_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = tmp_path / "studies.db"
    study = optuna.create_study(study_name="rdb", storage=f"sqlite:///{db}", direction="maximize")
    study.optimize(lambda t: -(t.suggest_float("trpo.delta", 0.001, 0.1) - 0.02) ** 2, n_trials=4)
    for source in (str(db), f"sqlite:///{db}"):
        result = build_report([source], tmp_path / "r.html")
        assert result["studies"] == 1 and result["runs"] == 0 and not result["skipped"]
        assert "fig-study0-history" in result["figures"]
        assert "<pre class='overrides'>trpo.delta=" in (tmp_path / "r.html").read_text()


def test_a_staleness_grid_gets_the_return_against_lag_figure(tmp_path):
    from trpo_lab.report import build_report

    sweep = tmp_path / "multirun" / "staleness"
    proc = run_cli("-m", "env=cartpole", "trainer.total_steps=1024", "trainer.steps_per_iter=512",
                   "trainer.eval_episodes=1", "trpo.value_epochs=1", "logger=none", "trainer.policy_lag=0,1",
                   "trpo.off_policy_correction=importance,none", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    made = build_report([str(sweep)], tmp_path / "report.html")
    assert "fig-staleness" in made["figures"]
    page = (tmp_path / "report.html").read_text()
    assert "| lag 1 | none | 1 |" in page and "| pi_old (sync) | any | 2 |" in page
    plain = build_report([str(sweep / "0")], tmp_path / "plain.html")  # one on-policy run: no such figure
    assert "fig-staleness" not in plain["figures"]
