"""trpo_optuna for any Hydra app: tiny apps written here, run as a new user would run them.

Each app selects `hydra/sweeper: trpo_optuna` and nothing else of trpo_lab: no
search path, no trpo_lab keys. The behaviours are those Hydra's Optuna plugin's
own tests check (its example apps' shapes: a sphere, a two-objective function, a
custom search space), plus pruning through trpo_lab.sweeper.job and the sweep
mistakes a new user makes.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import cli_env
from trpo_lab.sweeper.storage import TrialStore, default_storage_url, open_storage

SPHERE = '''
import hydra

@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg):
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return cfg.x ** 2 + cfg.y ** 2

if __name__ == "__main__":
    sphere()
'''

SPHERE_CONF = '''
defaults:
  - override hydra/sweeper: trpo_optuna
hydra:
  sweeper:
    direction: minimize
    study_name: sphere
    n_trials: 6
    params:
      x: range(-2, 2, step=0.5)
      y: choice(-1, 0, 1)
x: 1
y: 1
error: false
'''


def write_app(root: Path, source: str, conf: str, name: str = "app.py") -> Path:
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / name).write_text(textwrap.dedent(source))
    (root / "conf" / "config.yaml").write_text(textwrap.dedent(conf))
    return root / name


def run_app(app: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(app), "-m", *args], cwd=app.parent, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def results(sweep_dir: Path) -> dict:
    return yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def study_of(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(default_storage_url(sweep_dir)))


def test_any_app_sweeps_its_return_value_and_writes_the_plugins_results_file(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 0, r.stderr[-3000:]
    study = study_of(tmp_path / "s", "sphere")
    assert len(study.trials) == 6 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:  # the value is what the task function returned
        assert t.value == t.params["x"] ** 2 + t.params["y"] ** 2
    out = results(tmp_path / "s")
    assert out == {"name": "optuna", "best_params": study.best_trial.params, "best_value": study.best_value}
    # range(-2, 2, step=0.5) includes 2, as in the plugin
    assert study.trials[0].distributions["x"] == optuna.distributions.FloatDistribution(-2, 2, step=0.5)

    # A plain value on the command line fixes the key: out of the space, in every job.
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 'fixed'}", "y=0", "hydra.sweeper.n_trials=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "y" not in results(tmp_path / "fixed")["best_params"]
    assert all(t.value == t.params["x"] ** 2 for t in study_of(tmp_path / "fixed", "sphere").trials)


def test_a_returned_tuple_is_a_multi_objective_trial_and_nsgaii_is_a_preset(tmp_path):
    app = write_app(tmp_path, '''
        import hydra

        @hydra.main(version_base=None, config_path="conf", config_name="config")
        def two(cfg):
            return 4 * cfg.x ** 2 + 4 * cfg.y ** 2, (cfg.x - 5) ** 2 + (cfg.y - 5) ** 2

        two()
    ''', '''
        defaults:
          - override hydra/sweeper: trpo_optuna
          - override hydra/sweeper/sampler: nsgaii
        hydra:
          sweeper:
            direction: [minimize, minimize]
            study_name: two
            n_trials: 5
            params:
              x: range(0, 5, step=0.5)
              y: range(0, 3, step=0.5)
        x: 1
        y: 1
    ''')
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 0, r.stderr[-3000:]
    study = study_of(tmp_path / "s", "two")
    assert all(len(t.values) == 2 for t in study.trials)
    front = results(tmp_path / "s")["solutions"]
    assert sorted(map(str, front)) == sorted(str({"params": t.params, "values": t.values})
                                             for t in study.best_trials)


def test_custom_search_space_suggests_more_params_per_trial(tmp_path):
    write_app(tmp_path, SPHERE, SPHERE_CONF)
    (tmp_path / "space.py").write_text(textwrap.dedent('''
        def configure(cfg, trial):
            x = trial.params["x"]
            trial.suggest_float("+w", x - 0.25, x + 0.25)  # + because w is new to the config
    '''))
    r = run_app(tmp_path / "app.py", f"hydra.sweep.dir={tmp_path / 's'}",
                "hydra.sweeper.custom_search_space=space.configure",
                "hydra.sweeper.n_trials=3")
    assert r.returncode == 0, r.stderr[-3000:]
    best = results(tmp_path / "s")["best_params"]
    assert abs(best["+w"] - best["x"]) <= 0.25
    overrides = yaml.safe_load((tmp_path / "s" / "0" / ".hydra" / "overrides.yaml").read_text())
    assert any(o.startswith("+w=") for o in overrides)


def test_enqueued_points_run_first_once_per_study_and_a_bad_point_is_refused(tmp_path):
    # The first point is the app's own settings (interpolated), the second names x only: y is sampled.
    conf = SPHERE_CONF.replace("    n_trials: 6\n", "    n_trials: 6\n    enqueue:\n"
                               "      - {x: '${x}', y: '${y}'}\n      - {x: -1.5}\n")
    app = write_app(tmp_path, SPHERE, conf)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "hydra.sweeper.n_trials=3")
    assert r.returncode == 0, r.stderr[-3000:]
    trials = study_of(tmp_path / "s", "sphere").trials
    assert trials[0].params == {"x": 1.0, "y": 1} and trials[0].value == 2.0
    assert trials[1].params["x"] == -1.5 and trials[1].params["y"] in (-1, 0, 1)
    assert [t.user_attrs.get("enqueued", False) for t in trials] == [True, True, False]
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "hydra.sweeper.n_trials=5")  # resume: not queued again
    assert r.returncode == 0, r.stderr[-3000:]
    trials = study_of(tmp_path / "s", "sphere").trials
    assert len(trials) == 5 and sum(t.user_attrs.get("enqueued", False) for t in trials) == 2
    for point, message in [("[{z:1}]", "hydra.sweeper.enqueue[0]: z is not a searched parameter; the searched ones are x, y"),
                           ("[{x:1},{x:7}]", "hydra.sweeper.enqueue[1]: x=7 is outside its search space")]:
        r = run_app(app, f"hydra.sweep.dir={tmp_path / 'bad'}", f"hydra.sweeper.enqueue={point}")
        assert r.returncode == 2 and message in r.stderr, r.stderr[-3000:]
        assert not (tmp_path / "bad" / "0").exists()
    assert "widen the range with a sweep override on the command line" in r.stderr
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 'wide'}", "hydra.sweeper.enqueue=[{x:7}]", "x=interval(-8, 8)",
                "hydra.sweeper.n_trials=1")  # the hint's remedy: the widened range holds the point
    assert r.returncode == 0, r.stderr[-3000:]
    assert study_of(tmp_path / "wide", "sphere").trials[0].params["x"] == 7.0


def test_grid_takes_the_plugins_range_values_and_runs_each_point_once(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF.replace("x: range(-2, 2, step=0.5)", "x: range(-1.0, 1.0, step=1)"))
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=10")
    assert r.returncode == 0, r.stderr[-3000:]
    points = sorted((t.params["x"], t.params["y"]) for t in study_of(tmp_path / "s", "sphere").trials)
    assert points == [(x, y) for x in (-1.0, 0.0) for y in (-1, 0, 1)]  # 6 of n_trials=10: the grid's size


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_max_failure_rate_stops_with_the_failing_jobs_error_on_stderr(tmp_path, rate):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "error=true", "hydra.sweeper.n_trials=4",
                f"hydra.sweeper.max_failure_rate={rate}")
    trials = study_of(tmp_path / "s", "sphere").trials
    if rate < 1:
        assert r.returncode != 0
        assert "RuntimeError: cfg.error is True" in r.stderr and "max_failure_rate=0.5" in r.stderr
        assert len(trials) == 3  # stopped once more than 0.5 x 4 trials had failed
    else:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "RuntimeError: cfg.error is True" not in r.stderr
        assert [t.state for t in trials] == [TrialState.FAIL] * 4


def test_the_motpe_preset_says_optuna_4_removed_it(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "hydra/sweeper/sampler=motpe")
    assert r.returncode == 2
    assert "motpe sampler was removed in Optuna 4.0" in r.stderr and "Traceback" not in r.stderr


def test_the_plugins_deprecated_search_space_runs(tmp_path):
    app = write_app(tmp_path, SPHERE, '''
        defaults:
          - override hydra/sweeper: trpo_optuna
        hydra:
          sweeper:
            study_name: old
            n_trials: 3
            search_space:
              x: {type: float, low: -5.5, high: 5.5, step: 0.5}
        x: 1
        y: 1
    ''')
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert abs(results(tmp_path / "s")["best_params"]["x"]) <= 5.5


PRUNED_APP = '''
import hydra
import optuna
from trpo_lab.sweeper.job import current_trial

@hydra.main(version_base=None, config_path="conf", config_name="config")
def curve(cfg):
    trial = current_trial()
    for step in range(5):
        value = cfg.x * (step + 1)
        if trial is not None and trial.report(value, step):
            if cfg.how == "raise":
                raise optuna.TrialPruned()
            return value  # a job may also just return
    return value

curve()
'''


@pytest.mark.parametrize("how", ["raise", "return"])
def test_any_app_can_report_and_be_pruned(tmp_path, how):
    # Random x in [0, 10]; minimising, the median pruner stops trials above the median from trial 3 on.
    app = write_app(tmp_path, PRUNED_APP, '''
        defaults:
          - override hydra/sweeper: trpo_optuna
          - override hydra/sweeper/sampler: random
        hydra:
          sweeper:
            study_name: curve
            n_trials: 8
            pruner: {n_startup_trials: 2}
            params:
              x: interval(0, 10)
        x: 1
        how: raise
    ''')
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", f"how={how}")
    assert r.returncode == 0, r.stderr[-3000:]
    trials = study_of(tmp_path / "s", "curve").trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.number >= 2 for t in pruned)
    assert all(len(t.intermediate_values) < 5 for t in pruned)
    assert all(len(t.intermediate_values) == 5 for t in trials if t.state == TrialState.COMPLETE)


def test_a_misspelt_sweeper_setting_names_the_closest(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF.replace("n_trials: 6", "n_trails: 2"))
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 2
    assert "hydra.sweeper.n_trails is not a setting of trpo_optuna; did you mean hydra.sweeper.n_trials?" in r.stderr


def test_a_misspelt_searched_key_names_the_closest_not_plus(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "xx=interval(0,1)")
    assert r.returncode == 2
    assert "xx is not a setting; did you mean x?" in r.stderr
    assert "To append to your config use" not in r.stderr
    assert not (tmp_path / "s" / "0").exists()


def test_resuming_with_another_fixed_setting_is_refused(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "y=0", "hydra.sweeper.n_trials=2")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "y=1", "hydra.sweeper.n_trials=4")
    assert r.returncode == 2
    assert "other fixed settings (y: 0 then, 1 now)" in r.stderr and "study_name" in r.stderr
    assert len(study_of(tmp_path / "s", "sphere").trials) == 2
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "y=0", "hydra.sweeper.n_trials=4")  # same: resumes
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(study_of(tmp_path / "s", "sphere").trials) == 4


def test_a_second_study_in_another_studys_sweep_dir_is_refused(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "hydra.sweeper.n_trials=2")
    assert r.returncode == 0, r.stderr[-3000:]
    before = (tmp_path / "s" / "trials.csv").read_text()
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=other")
    assert r.returncode == 2
    assert "holds the results of study 'sphere'" in r.stderr and "hydra.sweep.dir" in r.stderr
    assert (tmp_path / "s" / "trials.csv").read_text() == before


SEEDED_APP = '''
import time
from pathlib import Path
import hydra

@hydra.main(version_base=None, config_path="conf", config_name="config")
def seeded(cfg):
    with open(Path(cfg.log).absolute(), "a") as f:
        f.write(f"{cfg.seed}\\n")
    if cfg.seed == 1 and Path(cfg.block).exists():
        print("waiting for Ctrl-C", flush=True)
        time.sleep(60)
    return cfg.x + cfg.seed

seeded()
'''


def test_ctrl_c_keeps_a_finished_seed_of_the_interrupted_trial(tmp_path):
    app = write_app(tmp_path, SEEDED_APP, f'''
        defaults:
          - override hydra/sweeper: trpo_optuna
        hydra:
          sweeper:
            study_name: seeded
            n_trials: 1
            seeds_per_trial: 2
            seed_key: seed
            params:
              x: interval(0, 1)
        x: 0
        seed: 0
        log: {tmp_path / "runs.log"}
        block: {tmp_path / "block"}
    ''')
    (tmp_path / "block").touch()
    with open(tmp_path / "first.out", "w") as out:
        p = subprocess.Popen([sys.executable, str(app), "-m", f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path,
                             env=cli_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while "waiting for Ctrl-C" not in (tmp_path / "first.out").read_text() and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(timeout=60) == 130, (tmp_path / "first.out").read_text()[-3000:]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    (tmp_path / "block").unlink()
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "runs.log").read_text().split() == ["0", "1", "1"]  # seed 0 trained once
    trials = study_of(tmp_path / "s", "seeded").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].value == pytest.approx(trials[1].params["x"] + 0.5)  # the mean of seeds 0 and 1
    assert trials[1].user_attrs["job_seed0"] == trials[0].user_attrs["job_seed0"]  # its output folder


def test_the_return_value_must_fit_the_directions():
    from trpo_lab.sweeper.core import _returned_values

    assert _returned_values(2, 1) == ([2.0], None)
    assert _returned_values((1, 2), 2) == ([1.0, 2.0], None)
    assert "needs a number" in _returned_values(None, 1)[1]
    assert "returned 3 values for 2 directions" in _returned_values((1, 2, 3), 2)[1]
    assert "sequence of 2 numbers" in _returned_values(1.5, 2)[1]


def test_seeds_per_trial_needs_a_seed_key_and_directions_read_the_plugins_enum():
    import enum

    from trpo_lab.sweeper.core import SweepError, TrpoOptunaSweeperImpl

    with pytest.raises(SweepError, match="seeds_per_trial=2 needs hydra.sweeper.seed_key"):
        TrpoOptunaSweeperImpl(seeds_per_trial=2)._check_settings()
    Direction = enum.Enum("Direction", "minimize maximize")  # the plugin's structured configs use one
    assert TrpoOptunaSweeperImpl(direction=[Direction.maximize, "minimize"]).directions == ["maximize", "minimize"]


SLOW_APP = '''
import os, time
from pathlib import Path

import hydra
from trpo_lab.sweeper.job import current_trial

@hydra.main(version_base=None, config_path="conf", config_name="config")
def slow(cfg):
    trial = current_trial()
    Path(cfg.pids, str(os.getpid())).write_text(str(trial.number))
    time.sleep(120)  # a long training run
    return cfg.x

slow()
'''


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_jobs_stop_within_seconds_when_their_sweeper_is_killed(tmp_path, sig):
    pids = tmp_path / "pids"
    pids.mkdir()
    app = write_app(tmp_path, SLOW_APP, f'''
        defaults:
          - override hydra/sweeper: trpo_optuna
          - override hydra/launcher: joblib
        hydra:
          launcher: {{n_jobs: 2}}
          sweeper:
            study_name: slow
            n_trials: 4
            params:
              x: interval(0, 1)
        x: 0.5
        pids: {pids}
    ''')
    sweeper = subprocess.Popen([sys.executable, str(app), "-m", f"hydra.sweep.dir={tmp_path / 's'}"],
                               cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and len(list(pids.iterdir())) < 2:
            time.sleep(0.3)
        jobs = [int(p.name) for p in pids.iterdir()]
        assert len(jobs) == 2 and sweeper.pid not in jobs, "the jobs did not start in their own processes"
        os.kill(sweeper.pid, sig)
        sweeper.wait(timeout=30)
        deadline = time.time() + 30  # a generous bound: the jobs look at their sweeper every second
        while time.time() < deadline and not all(_gone(j) for j in jobs):
            time.sleep(0.3)
        assert all(_gone(j) for j in jobs), "the jobs kept running after their sweeper died"
    finally:
        os.killpg(sweeper.pid, signal.SIGKILL)
        sweeper.wait()


RECORDING_APP = '''
import hydra
from trpo_lab.sweeper.job import current_trial

@hydra.main(version_base=None, config_path="conf", config_name="config")
def recording(cfg):
    current_trial().record({"v": cfg.x})

recording()
'''


def test_a_seed_finished_before_its_sweeper_died_is_kept_by_the_retry(tmp_path):
    # Trial 0 was left RUNNING by a sweeper of this host that is gone, after its job had
    # recorded its value (42, not the x the app would record): the rerun keeps that value.
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    url = default_storage_url(sweep_dir)
    study = optuna.create_study(study_name="rec", storage=open_storage(url))
    left = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    store = TrialStore(open_storage(url), "rec")
    tid = store.trial_id(left.number)
    store.set_attr(tid, "owner", f"{socket.gethostname()}:999999999:1")  # no such process
    store.set_attr(tid, "job_seed0", 0)
    store.set_attr(tid, "seed0", {"v": 42.0})
    app = write_app(tmp_path, RECORDING_APP, '''
        defaults:
          - override hydra/sweeper: trpo_optuna
        hydra:
          sweeper:
            study_name: rec
            n_trials: 2
            objectives: [v]
            params:
              x: interval(0, 1)
        x: 0.5
    ''')
    r = run_app(app, f"hydra.sweep.dir={sweep_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    trials = study_of(sweep_dir, "rec").trials
    assert trials[0].state == TrialState.FAIL and "no longer running" in trials[0].user_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.state == TrialState.COMPLETE and retry.value == 42.0 and retry.params == trials[0].params
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    assert not (sweep_dir / "0" / ".hydra").exists(), "the finished seed ran again"
