"""The trpo_optuna sweeper end to end: real sweeps of tiny CartPole runs in a subprocess.

Each test is one "done when" item of the sweeper's issue: an 8-trial joblib sweep
with 2 parallel jobs completes; a sweep killed midway resumes to exactly n_trials;
a pruner prunes a deliberately bad region; a trial that raises (or returns NaN) is
recorded as failed and the sweep finishes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import REPO, cli_env, run_cli
from trpo_lab.sweeper.results import counts_toward_budget
from trpo_lab.sweeper.storage import default_storage_url, open_storage

# Four iterations of 512 steps, evaluating after each of the first three (the pruner's reports).
TINY = ["env=cartpole", "trainer.total_steps=2048", "trainer.steps_per_iter=512", "trainer.eval_every=1",
        "trainer.eval_episodes=2", "trainer.checkpoint_every=100", "trainer.progress=false", "logger=none"]


def load_study(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(default_storage_url(sweep_dir)))


def summary_of(sweep_dir: Path, job_num: int) -> dict:
    return json.loads((sweep_dir / str(job_num) / "summary.json").read_text())


def job_numbers(study: optuna.Study) -> list[int]:
    return [v for t in study.trials for k, v in t.user_attrs.items() if k.startswith("job_seed")]


def trust_region_args(sweep_dir: Path, n_trials: int) -> list[str]:
    return ["-m", "sweep=trust_region", *TINY, f"hydra.sweeper.n_trials={n_trials}",
            "hydra.sweeper.seeds_per_trial=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep_dir}"]


def test_trust_region_sweep_with_joblib_and_two_parallel_jobs(tmp_path):
    sweep_dir = tmp_path / "sweep"
    r = run_cli(*trust_region_args(sweep_dir, 8), cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sweep_dir, "trust_region-CartPole-v1")
    trials = study.trials
    assert len(trials) == 8 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert set(trials[0].params) == {"trpo.delta", "trpo.cg_iters", "trpo.cg_damping", "trpo.gae_lambda"}
    assert sorted(job_numbers(study)) == list(range(8))
    for t in trials:
        (job,) = [v for k, v in t.user_attrs.items() if k.startswith("job_seed")]
        summary = summary_of(sweep_dir, job)
        assert summary["status"] == ("pruned" if t.state == TrialState.PRUNED else "completed")
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(summary["objective"])
        task = yaml.safe_load((sweep_dir / str(job) / ".hydra" / "overrides.yaml").read_text())
        assert "logger.wandb.group=trust_region-CartPole-v1" in task
        assert f"logger.wandb.tags=[trial-{t.number},seed-0]" in task
    # No idle slot: some trial started while a trial started before it was still running,
    # which a batch-at-a-time sweeper (start the next pair when both have ended) never does.
    by_start = sorted(trials, key=lambda t: t.datetime_start)
    assert any(t.datetime_start < max(u.datetime_complete for u in by_start[:i])
               for i, t in enumerate(by_start) if i >= 2)
    # Never more than the two slots running at once.
    for t in trials:
        running = [u for u in trials if u.datetime_start <= t.datetime_start < u.datetime_complete]
        assert len(running) <= 2
    best = yaml.safe_load((sweep_dir / "best_params.yaml").read_text())
    assert best["trial"] == study.best_trial.number
    assert (sweep_dir / "best_overrides.txt").read_text().split() == best["overrides"]
    assert len((sweep_dir / "trials.csv").read_text().splitlines()) == 9
    # The overrides file passes straight back to a single run.
    rr = run_cli(*TINY, *best["overrides"], f"hydra.run.dir={tmp_path / 'best'}",
                 cwd=tmp_path, timeout=120)
    assert rr.returncode == 0, rr.stderr[-2000:]


def test_killed_sweep_resumes_to_exactly_n_trials(tmp_path):
    sweep_dir = tmp_path / "sweep"
    rc = interrupt_after(trust_region_args(sweep_dir, 5), tmp_path, tmp_path / "first.log", ": objective=", 1)
    assert rc == 130, (tmp_path / "first.log").read_text()[-3000:]
    first = load_study(sweep_dir, "trust_region-CartPole-v1")
    done_first = {t.number: t.params for t in first.trials if t.state == TrialState.COMPLETE}
    assert 1 <= len(done_first) < 5

    r = run_cli(*trust_region_args(sweep_dir, 5), cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sweep_dir, "trust_region-CartPole-v1")
    print((sweep_dir / "trials.csv").read_text())  # shown when an assertion below fails
    counted = [t for t in study.trials if counts_toward_budget(t)]
    assert len(counted) == 5
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number, params in done_first.items():  # finished trials are kept, untouched
        assert study.trials[number].state == TrialState.COMPLETE and study.trials[number].params == params
    # Nothing run twice: every counted trial has its own parameters ...
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 5
    # ... every trial the interruption stopped is re-run once with the same parameters ...
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    retries = {t.user_attrs["retry_of"]: t for t in study.trials if "retry_of" in t.user_attrs}
    assert sorted(retries) == sorted(t.number for t in interrupted)
    assert all(retries[t.number].params == t.params for t in interrupted)
    # ... and job numbers (hence output folders) continue instead of starting over.
    nums = job_numbers(study)
    assert len(nums) == len(set(nums))
    for t in counted:
        (job,) = [v for k, v in t.user_attrs.items() if k.startswith("job_seed")]
        assert summary_of(sweep_dir, job)["status"] in ("completed", "pruned")


def interrupt_after(args: list[str], cwd: Path, log_path: Path, marker: str, count: int) -> int:
    """Start `python -m trpo_lab ARGS`, send Ctrl-C's SIGINT once `marker` was logged `count` times."""
    with open(log_path, "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "trpo_lab", *args], cwd=cwd, env=cli_env(), stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            time.sleep(0.3)
            if log_path.read_text().count(marker) >= count:
                break
        assert p.poll() is None, "the sweep ended before it could be interrupted"
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        return p.wait(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_ctrl_c_with_the_basic_launcher_requeues_the_running_trial(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=trpo_optuna", *TINY, "trainer.total_steps=20480", "trainer.eval_every=5",
            "trpo.delta=interval(0.001,0.05)", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep_dir}"]
    rc = interrupt_after(args, tmp_path, tmp_path / "log", "training TRPO", 1)
    assert rc == 130, (tmp_path / "log").read_text()[-3000:]
    trials = load_study(sweep_dir, "trpo_lab-CartPole-v1").trials
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["interrupted"]
    assert trials[1].state == TrialState.WAITING and trials[1].user_attrs["retry_of"] == 0
    assert summary_of(sweep_dir, 0)["status"] == "interrupted"


def test_trials_left_running_by_a_dead_sweeper_are_requeued(tmp_path):
    """A sweeper killed with SIGKILL leaves RUNNING trials behind; the next run re-queues them."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    study = optuna.create_study(study_name="dead", storage=open_storage(default_storage_url(sweep_dir)),
                                direction="maximize")
    orphan = study.ask({"trpo.delta": optuna.distributions.FloatDistribution(0.001, 0.05)})
    study._storage.set_trial_user_attr(orphan._trial_id, "job_seed0", 0)
    dead = subprocess.run([sys.executable, "-c", "from trpo_lab.sweeper.liveness import owner_id; print(owner_id())"],
                          env=cli_env(), capture_output=True, text=True, check=True).stdout.strip()
    study._storage.set_trial_user_attr(orphan._trial_id, "owner", dead)  # a sweeper of this host, now gone
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "trpo.delta=interval(0.001,0.05)",
                "hydra.sweeper.study_name=dead", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}",
                cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sweep_dir, "dead")
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["interrupted"]
    assert study.trials[1].user_attrs["retry_of"] == 0
    assert study.trials[1].params == study.trials[0].params
    assert sum(counts_toward_budget(t) for t in study.trials) == 2
    assert sorted(job_numbers(study)) == [0, 1, 2]  # job 0 stays the orphan's; the new ones continue


def test_median_pruner_prunes_a_bad_region(tmp_path):
    # env.max_episode_steps=5 caps every evaluation at 5, below anything CartPole's
    # 500-step episodes give; the seeded random sampler draws 5, 500, 5, 5, 500.
    sweep_dir = tmp_path / "sweep"
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "env.max_episode_steps=choice(500,5)",
                "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=5",
                "hydra.sweeper.pruner.n_startup_trials=1", f"hydra.sweep.dir={sweep_dir}",
                cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sweep_dir, "trpo_lab-CartPole-v1")
    trials = study.trials
    assert [t.params["env.max_episode_steps"] for t in trials] == [5, 500, 5, 5, 500]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert [t.number for t in pruned] == [2, 3]  # after one bad and one good trial have completed
    for t in pruned:
        assert t.value == t.intermediate_values[t.last_step] <= 5  # recorded with its last value
        summary = summary_of(sweep_dir, t.user_attrs["job_seed0"])
        assert summary["status"] == "pruned" and summary["iterations"] < 4
    assert all(t.state == TrialState.COMPLETE for t in trials if t.params["env.max_episode_steps"] == 500)


def test_failing_trials_are_recorded_and_the_sweep_finishes(tmp_path):
    # CarRacing-v3 is registered, so the config is valid, but it needs Box2D to build.
    pytest.importorskip("gymnasium")
    try:
        import Box2D  # noqa: F401
        pytest.skip("Box2D is installed here, so CarRacing-v3 does not fail")
    except ImportError:
        pass
    sweep_dir = tmp_path / "sweep"
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "env.id=choice(CartPole-v1,CarRacing-v3)",
                "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=1",
                f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = load_study(sweep_dir, "trpo_lab-CartPole-v1").trials
    assert len(trials) == 3
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all(t.params["env.id"] == "CarRacing-v3" for t in failed)
    assert all("Box2D" in t.user_attrs["fail_reason"] for t in failed)
    assert any(t.state == TrialState.COMPLETE for t in trials)
    assert "Box2D" in (sweep_dir / "trials.csv").read_text()

    # Past the allowed failure rate the sweep stops, saying why.
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "env.id=choice(CartPole-v1,CarRacing-v3)",
                "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=0",
                f"hydra.sweep.dir={tmp_path / 'strict'}", cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and "max_failure_rate=0" in r.stderr
    assert len(load_study(tmp_path / "strict", "trpo_lab-CartPole-v1").trials) == 1


def test_nan_objective_fails_the_trial(tmp_path):
    # 128 steps per environment end no Pendulum episode (200 steps), so train_return_last10 is NaN.
    sweep_dir = tmp_path / "sweep"
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", "env=pendulum", "trainer.total_steps=256",
                "trainer.steps_per_iter=256", "trainer.eval_episodes=1", "trainer.objective=train_return_last10",
                "logger=none", "trpo.delta=interval(0.001,0.05)", "hydra.sweeper.n_trials=1",
                "hydra.sweeper.max_failure_rate=1", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = load_study(sweep_dir, "trpo_lab-Pendulum-v1").trials
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert all("not finite" in t.user_attrs["fail_reason"] for t in trials)


def test_seeds_per_trial_trains_k_seeds_and_averages(tmp_path):
    sweep_dir = tmp_path / "sweep"
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "trpo.delta=interval(0.001,0.05)",
                "hydra.sweeper.n_trials=1", "hydra.sweeper.seeds_per_trial=2", "hydra/sweeper/pruner=none",
                f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    (trial,) = load_study(sweep_dir, "trpo_lab-CartPole-v1").trials
    per_seed = [summary_of(sweep_dir, trial.user_attrs[f"job_seed{i}"])["objective"] for i in (0, 1)]
    assert trial.user_attrs["seed_values"]["objective"] == per_seed
    assert trial.value == pytest.approx(sum(per_seed) / 2)
    for i in (0, 1):
        job_dir = sweep_dir / str(trial.user_attrs[f"job_seed{i}"]) / ".hydra"
        task = yaml.safe_load((job_dir / "overrides.yaml").read_text())
        assert f"trainer.seed={i}" in task
        # The job found its trial through hydra.job.env_set (trpo_lab.sweeper.job), not a config key.
        link = json.loads(yaml.safe_load((job_dir / "hydra.yaml").read_text())["hydra"]["job"]["env_set"]
                          ["TRPO_OPTUNA_TRIAL"])
        assert link["seed_index"] == i and link["number"] == trial.number
    # Seed means were reported at each evaluation step, for the pruner to compare.
    assert sorted(trial.intermediate_values) == [512, 1024, 1536]


def test_multi_objective_sweep_writes_the_pareto_front(tmp_path):
    sweep_dir = tmp_path / "sweep"
    r = run_cli("-m", "sweep=multi_objective", *TINY, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}",
                cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sweep_dir, "multi_objective-CartPole-v1")
    assert len(study.trials) == 2 and all(len(t.values) == 2 for t in study.trials)
    front = yaml.safe_load((sweep_dir / "pareto_front.yaml").read_text())["pareto_front"]
    assert sorted(e["trial"] for e in front) == sorted(t.number for t in study.best_trials)
    assert set(front[0]["values"]) == {"eval_return", "wall_time_s"}


def test_rdb_storage_url(tmp_path):
    """Any SQLAlchemy URL works as storage (SQLite here, with one job at a time; PostgreSQL across machines)."""
    pytest.importorskip("sqlalchemy")
    db = tmp_path / "study.db"
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "trpo.delta=interval(0.001,0.05)",
                "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage='sqlite:///{db}'",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="trpo_lab-CartPole-v1", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert all(t.intermediate_values for t in study.trials)  # the jobs reported through the database
    assert not (tmp_path / "sweep" / "optuna.journal").exists()


def test_grid_sampler_runs_each_point_once(tmp_path):
    sweep_dir = tmp_path / "sweep"
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", "hydra/sweeper/sampler=grid", *TINY,
                "network.activation=choice(tanh,relu)", "hydra.sweeper.n_trials=5", f"hydra.sweep.dir={sweep_dir}",
                cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = load_study(sweep_dir, "trpo_lab-CartPole-v1").trials
    assert sorted(t.params["network.activation"] for t in trials) == ["relu", "tanh"]
    assert all(t.state == TrialState.COMPLETE for t in trials)


class RayLauncher:
    """Stands in for Hydra's Ray launcher, installed below as the plugin's module (the sweeper checks
    isinstance against the class it imports from there)."""

    def __init__(self, init: dict):
        from omegaconf import OmegaConf

        self.ray_cfg = OmegaConf.create({"init": init, "remote": {}})


@pytest.mark.parametrize("init,expected", [
    ({"address": "auto", "object_store_memory": None}, {"address": "auto", "object_store_memory": None}),
    ({"address": None}, {"address": None, "object_store_memory": 78_643_200}),  # a local Ray: the launcher's store
])
def test_ray_is_initialised_once_before_jobs_launch_from_threads(monkeypatch, init, expected):
    # The Ray launcher calls ray.init on its first launch; two threads launching at once
    # both call it and the second fails, so the sweeper initialises Ray before them.
    import types

    from trpo_lab.sweeper.core import TrpoOptunaSweeperImpl

    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: bool(calls),
                                                                  init=lambda **kw: calls.append(kw)))
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_ray_launcher", types.ModuleType("hydra_ray_launcher"))
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_ray_launcher.ray_launcher",
                        types.SimpleNamespace(RayLauncher=RayLauncher))
    sweeper = TrpoOptunaSweeperImpl.__new__(TrpoOptunaSweeperImpl)
    sweeper.launcher = RayLauncher(init)
    sweeper._start_ray_once()
    sweeper._start_ray_once()
    assert calls == [expected]
    sweeper.launcher = object()  # any other launcher: Ray untouched
    calls.clear()
    sweeper._start_ray_once()
    assert calls == []


def test_ray_cluster_preset_leaves_the_object_store_to_the_cluster():
    # Connecting to a running cluster, ray.init refuses an object store size, which the
    # plugin would otherwise set.
    preset = yaml.safe_load((REPO / "trpo_lab" / "conf" / "hydra" / "launcher" / "ray_cluster.yaml").read_text())
    assert "object_store_memory" in preset["ray"]["init"] and preset["ray"]["init"]["object_store_memory"] is None
