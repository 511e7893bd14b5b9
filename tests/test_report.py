"""The offline report: statistics by hand and against rliable, synthetic sweeps grouped by the
settings that vary, a real multirun with a failed and a pruned run and a study, and the page
rendered in headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli
from trpo_lab import metrics as M
from trpo_lab.report import bootstrap_interval, bootstrap_mean_band, build_report, iqm
from trpo_lab.report import figures as F
from trpo_lab.report.page import main
from trpo_lab.report.stats import rliable_interval


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


def test_vectorised_interval_agrees_with_rliable():
    """The page's per-configuration interval is rliable's estimator, vectorised: same data, same
    interval up to the resampling noise of 2000 draws."""
    scores = np.random.default_rng(1).normal(100.0, 30.0, 10)
    ours, theirs = bootstrap_interval(scores), rliable_interval(scores)
    width = theirs[1] - theirs[0]
    assert abs(ours[0] - theirs[0]) < 0.1 * width and abs(ours[1] - theirs[1]) < 0.1 * width
    assert bootstrap_interval([1.0, 5.0, 9.0]) == rliable_interval([1.0, 5.0, 9.0]) == (1.0, 9.0)


# ----------------------------------------------------------------------------- synthetic runs

def make_run(path: Path, env_id: str = "CartPole-v1", seed: int = 0, settings: dict | None = None,
             trial: dict | None = None, final: float | None = 100.0, periodic_eval: bool = True,
             final_row: bool = True, status: str = "completed", steps: int = 4, level: float = 50.0) -> Path:
    """A run directory as the trainer leaves it: .hydra/config.yaml, metrics.jsonl, summary.json."""
    path.mkdir(parents=True)
    config = {"env": {"id": env_id}, "trpo": {"delta": 0.01, "gae_lambda": 0.95},
              "trainer": {"seed": seed, "total_steps": 512 * steps},
              "trial": trial or {"number": None, "id": None, "seed_index": 0}}
    for key, value in (settings or {}).items():
        group, name = key.split(".")
        config[group][name] = value
    (path / ".hydra").mkdir()
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    rows = []
    for i in range(1, steps + 1):
        row = {M.ITERATION: i, M.ENV_STEPS: 512 * i, M.WALL_TIME: 0.5 * i, M.EP_RETURN: level * i / steps + seed,
               M.KL: 0.008, M.KL_LIMIT: config["trpo"]["delta"], M.LINE_SEARCH_STEPS: 1.0,
               M.EXPLAINED_VARIANCE: 0.5, M.STEPS_PER_S: 1000.0 + seed}
        if (periodic_eval and i == 2) or (final_row and i == steps and final is not None):
            row[M.EVAL_RETURN] = final if i == steps else final / 2
            row[M.EVAL_RETURN_STD] = 1.0
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"env_id": env_id, "env_steps": 512 * steps, "iterations": steps, "wall_time_s": 0.5 * steps,
               "steps_per_s": 1000.0 + seed, "eval_return": final, "eval_return_std": 1.0,
               "best_eval_return": final, "status": status, "objective": final}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def make_sweep(root: Path, trials: int = 2, seeds: int = 2, **kwargs) -> Path:
    """A trpo_optuna sweep's folder: each trial's seeds differ in trainer.seed and trial.* only."""
    job = 0
    for number in range(trials):
        for index in range(seeds):
            make_run(root / str(job), seed=100 * number + index, settings={"trpo.delta": 0.005 * (number + 1)},
                     trial={"study": "s", "number": number, "id": number + 7, "seed_index": index, "seeds": seeds},
                     final=100.0 + 50 * number + 10 * index, **kwargs)
            job += 1
    return root


class Captured(F.Figures):
    """Keeps the matplotlib figures for geometry checks."""

    def __init__(self):
        super().__init__(None)
        self.figs, self.renderers = {}, {}

    def add(self, fig, fig_id, caption):
        fig.canvas.draw()
        self.figs[fig_id], self.renderers[fig_id] = fig, fig.canvas.get_renderer()
        return super().add(fig, fig_id, caption)


def test_a_sweeps_seeds_group_into_one_configuration_per_trial(tmp_path, few_resamples):
    """5 trials x 2 seeds read as 10 configurations while trial.number/id/seed_index were settings."""
    sweep = make_sweep(tmp_path / "sweep", trials=3, seeds=2)
    result = build_report([str(sweep)], tmp_path / "r.html")
    assert result["runs"] == 6 and result["configurations"] == 3
    assert sorted((name, n) for _, name, _, n in result["groups"]) == [("C1", 2), ("C2", 2), ("C3", 2)]
    page = (tmp_path / "r.html").read_text()
    assert "6 run(s) in 3 configuration(s)" in page
    # The varying setting is named once, in the configuration table, not as trial bookkeeping.
    config_table = page.split("id='configurations'")[1].split("</table>")[0]
    assert "<th>trpo.delta</th>" in config_table and "trial." not in config_table
    final = page.split("id='final-returns'")[1].split("</table>")[0]
    assert len(re.findall(r"<td>CartPole-v1</td><td>\d</td><td>C\d</td><td>delta=[\d.]+</td><td>2</td>", final)) == 3


def test_final_evaluation_alone_draws_points(tmp_path, few_resamples):
    """Runs whose only evaluation is the final one: the evaluation figure has data, not empty axes."""
    for seed in range(2):
        make_run(tmp_path / "runs" / str(seed), seed=seed, periodic_eval=False, final_row=False, final=80.0 + seed)
    result = build_report([str(tmp_path / "runs")], tmp_path / "r.html")
    assert result["figure_points"]["fig-eval-curves"] > 0
    assert result["figure_points"]["fig-learning-curves"] > 0


def test_legends_are_outside_the_axes_and_titles_clear_the_labels_above(tmp_path):
    for i, delta in enumerate((0.001, 0.01, 0.1)):
        for seed in range(2):
            make_run(tmp_path / "runs" / f"{i}{seed}", seed=seed,
                     settings={"trpo.delta": delta, "trpo.gae_lambda": 0.9 + 0.01 * i}, final=10.0 * i + seed)
            make_run(tmp_path / "runs" / f"h{i}{seed}", env_id="Hopper-v5", seed=seed,
                     settings={"trpo.delta": delta, "trpo.gae_lambda": 0.9 + 0.01 * i}, final=1000.0 * i + seed)
    from trpo_lab.report.discovery import collect_inputs
    from trpo_lab.report.grouping import group_runs

    configs, _, _ = group_runs(collect_inputs([str(tmp_path / "runs")]).runs)
    figures = Captured()
    F.learning_curves(configs, figures, M.EP_RETURN, "curves", "return", "")
    F.trust_region_figure(configs, figures)
    for fig_id, fig in figures.figs.items():
        renderer = figures.renderers[fig_id]
        assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)
        labels = [t.get_window_extent(renderer) for t in fig.legends[0].get_texts()]
        for ax in fig.axes:  # no label over a curve or a tick label
            assert not any(label.overlaps(ax.get_tightbbox(renderer)) for label in labels)
    # Two rows of trust-region panels: no title runs into the x-axis label above it.
    axes = figures.figs["fig-trust-region"].axes
    renderer = figures.renderers["fig-trust-region"]
    for upper, lower in zip(axes[:3], axes[3:]):
        assert not lower.title.get_window_extent(renderer).overlaps(upper.xaxis.label.get_window_extent(renderer))
    # Published TRPO scores drawn as reference lines for Hopper, none for CartPole.
    curves = figures.figs["curves"]
    hopper = next(ax for ax in curves.axes if ax.get_title() == "Hopper-v5")
    cartpole = next(ax for ax in curves.axes if ax.get_title() == "CartPole-v1")
    guides = [line.get_label() for line in hopper.get_lines() if line.get_gid() == F.GUIDE]
    assert any("rl-zoo3" in g and "3618" in g for g in guides)
    assert not [line for line in cartpole.get_lines() if line.get_gid() == F.GUIDE]


def test_nonexistent_input_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["nonexistent_dir"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "wrote nothing" in err
    assert not (tmp_path / "report.html").exists() and not list(tmp_path.iterdir())


@pytest.fixture
def few_resamples(monkeypatch):
    """200 bootstrap resamples instead of 2000: the same code, a tenth of the time."""
    from trpo_lab.report import stats

    monkeypatch.setattr(stats, "BOOTSTRAP_SAMPLES", 200)


def test_png_table_and_versus(tmp_path, capsys, few_resamples):
    sweep = make_sweep(tmp_path / "sweep", trials=2, seeds=3)
    out = tmp_path / "paper" / "report.html"
    assert main([str(sweep), "-o", str(out), "--png", "--table", "latex", "--versus", "C2", "C1"]) == 0
    printed = capsys.readouterr().out
    assert "\\toprule" in printed and "CartPole-v1 & C2 & delta=0.01 & 3" in printed
    assert (out.parent / "report_final_returns.tex").read_text().startswith("\\begin{tabular}")
    pngs = {p.stem for p in (out.parent / "report_files").glob("*.png")}
    assert {"fig-learning-curves", "fig-eval-curves", "fig-aggregates", "fig-performance-profile",
            "fig-versus"} <= pngs
    page = out.read_text()
    # C2 beats C1 on every pair of seeds (150..170 against 100..120): P = 1.
    assert re.search(r"P\(C2 &gt; C1\) = 1, 95% CI \[1, 1\]", page)
    assert main([str(sweep), "-o", str(out), "--table", "md"]) == 0
    # The confirmation table of docs/results.md: IQM, interval, median, mean, std and every seed's value.
    assert "| CartPole-v1 | C2 | delta=0.01 | 3 | 160 | [150, 170] | 160 | 160 | 8.165 | 100: 150, 101: 160, 102: 170 |" \
        in capsys.readouterr().out
    assert main([str(sweep), "-o", str(out), "--versus", "C9", "C1"]) == 2
    assert "'C9' is not a configuration here; the configurations are C1 (delta=0.005)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a real multirun

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
    proc = run_cli(str(sweep_dir), str(sweep_dir.parent / "missing"), "-o", str(out), "--png", cwd=sweep_dir.parent,
                   module="trpo_lab.report", timeout=180)
    assert proc.returncode == 0, proc.stderr
    return out, proc


EXPECTED_FIGURES = ("fig-learning-curves", "fig-eval-curves", "fig-final-returns", "fig-aggregates",
                    "fig-performance-profile", "fig-study0-history", "fig-study0-importances",
                    "fig-study0-parallel", "fig-throughput", "fig-trust-region")


def test_report_contents(report, sweep_dir):
    out, proc = report
    page = out.read_text()
    for fig_id in EXPECTED_FIGURES:
        assert f'id="{fig_id}"' in page
        assert (out.parent / "report_files" / f"{fig_id}.png").stat().st_size > 1000
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing fetched
    # The final evaluation is the last row of every completed run's metrics.jsonl.
    last = json.loads((sweep_dir / "0" / "metrics.jsonl").read_text().splitlines()[-1])
    summary = json.loads((sweep_dir / "0" / "summary.json").read_text())
    assert last[M.EVAL_RETURN] == summary["eval_return"] and last[M.EVAL_RETURN_STD] == summary["eval_return_std"]
    # Final-return table: two configurations of two completed seeds each, best IQM first;
    # the failed and pruned runs are counted as left out, not averaged in.
    table = page.split("id='final-returns'")[1].split("</table>")[0]
    row = r"<td>CartPole-v1</td><td>\d</td><td>C\d</td><td>delta=[^<]+</td><td>2</td><td>([-\d.e+]+)</td>"
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


def _chromium_dom(page: Path, tmp_path: Path, shot: Path | None = None) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    if shot is not None:
        subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                       capture_output=True, timeout=120)
    return dom


def _figure_marks(dom: str) -> tuple[int, int, list[str]]:
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    total = re.search(r'data-figures-total="(\d+)"', body.group(0))
    loaded = re.search(r'data-figures-loaded="(\d+)"', body.group(0))
    empty = re.search(r'data-figures-empty="([^"]*)"', body.group(0))
    assert total and loaded and empty, body.group(0)
    return int(total.group(1)), int(loaded.group(1)), empty.group(1).split()


def test_report_renders_in_headless_chromium(report, tmp_path):
    """Every figure decodes and draws data (its data points, and ink on the decoded image)."""
    out, _ = report
    shot = tmp_path / "page.png"
    total, loaded, empty = _figure_marks(_chromium_dom(out, tmp_path, shot))
    assert total == loaded == len(EXPECTED_FIGURES)
    assert empty == []
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_a_two_seed_sweep_renders_n2_rows_in_chromium(tmp_path, few_resamples):
    """The page of a 2-seed sweep (trial.* keys differing per job) as the browser shows it."""
    sweep = make_sweep(tmp_path / "sweep", trials=3, seeds=2)
    out = tmp_path / "report.html"
    assert main([str(sweep), "-o", str(out)]) == 0
    dom = _chromium_dom(out, tmp_path)
    total, loaded, empty = _figure_marks(dom)
    assert total == loaded > 0 and empty == []
    final = dom.split('id="final-returns"')[1].split("</table>")[0]
    seeds = re.findall(r"<td>CartPole-v1</td><td>\d</td><td>C\d</td><td>[^<]*</td><td>(\d+)</td>", final)
    assert seeds == ["2", "2", "2"]


def test_report_reads_an_sqlite_study_by_url_and_by_file(tmp_path):
    """RDB storages: an SQLite file found by content, and the same storage given as a URL."""
    import optuna

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


def test_every_env_option_with_published_scores_is_found_by_its_id():
    """The reference table is keyed by task; an env option whose id misses it draws no line.
    The paper's seven Atari games and the MuJoCo anchors each find theirs."""
    from trpo_lab.report import references

    env_dir = Path(references.__file__).parents[1] / "conf" / "env"
    ids = {f.stem: yaml.safe_load(f.read_text())["id"] for f in env_dir.glob("*.yaml")}
    games = ["pong", "breakout", "beam_rider", "enduro", "qbert", "seaquest", "space_invaders"]
    for name in games + ["hopper", "walker", "halfcheetah", "ant", "swimmer"]:
        assert references.published(ids[name]), (name, ids[name])
    for name in games:
        assert {s.name for s, _, _ in references.published(ids[name])} == {"paper, single path", "paper, vine"}
    scale, what = references.normaliser(ids["pong"])
    assert scale == 20.9 and "100k steps" in what
