"""Beyond one machine, and nothing lost under faults (issue 6).

- Two sweepers started at once on one PostgreSQL study finish with exactly
  n_trials between them, none run twice, and resume after both are SIGKILLed
  (needs TRPO_LAB_TEST_POSTGRES_URL; skipped without it, failing if it is set
  and the server cannot be reached).
- The same race on the journal file (no server needed).
- A trial whose sweeper went silent (killed node) fails by heartbeat, is re-run,
  and never counts as finished; the live sweeper does not wait forever.
- A job killed with SIGKILL (its joblib worker) fails its trial as interrupted
  and the trial runs again.
- A sweep through Hydra's submitit launcher in local mode (SLURM's code path).
- A NaN-reward or inf-observation environment fails only its own trial.
- Load: 50 short trials, 4 parallel joblib jobs, journal file: every trial accounted for.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import REPO, cli_env, run_cli
from trpo_lab.sweeper.results import counts_toward_budget
from trpo_lab.sweeper.storage import default_storage_url, open_storage

PG_ENV = "TRPO_LAB_TEST_POSTGRES_URL"
# Two iterations of 512 steps, one evaluation in between (a pruner's report), one at the end.
TINY = ["env=cartpole", "trainer.total_steps=1024", "trainer.steps_per_iter=512", "trainer.eval_every=1",
        "trainer.eval_episodes=1", "trainer.checkpoint_every=100", "trainer.progress=false", "logger=none",
        "trainer.n_envs=1", "trainer.vec_env=sync"]
TERMINAL = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def job_env() -> dict[str, str]:
    """cli_env plus tests/ on the path, so jobs import tests/nan_env.py as `nan_env`."""
    env = cli_env()
    env["PYTHONPATH"] = str(REPO / "tests") + os.pathsep + env["PYTHONPATH"]
    return env


def jobs_of(t: optuna.trial.FrozenTrial) -> list[int]:
    return [v for k, v in sorted(t.user_attrs.items()) if k.startswith("job_seed")]


def own_jobs(t: optuna.trial.FrozenTrial) -> list[int]:
    """The jobs a trial ran itself: a retry's carried seeds ran in the interrupted trial's folder."""
    carried = t.user_attrs.get("carried_seeds") or {}
    return [v for k, v in sorted(t.user_attrs.items())
            if k.startswith("job_seed") and k.removeprefix("job_seed") not in carried]


def summary(sweep_dir: Path, job: int) -> dict:
    return json.loads((sweep_dir / str(job) / "summary.json").read_text())


def assert_all_accounted(study: optuna.Study, n_trials: int, sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    """Exactly n_trials counted, nothing left open, every counted run's folder has its summary."""
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if counts_toward_budget(t)]
    assert len(counted) == n_trials, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert all(t.state in TERMINAL for t in trials), [(t.number, t.state.name) for t in trials]
    jobs = [j for t in trials for j in own_jobs(t)]
    assert len(jobs) == len(set(jobs)), ("two trials share an output folder",
                                         [(t.number, t.state.name, jobs_of(t)) for t in trials])
    # A retry keeps the seeds its interrupted trial finished, and with them that trial's folders.
    for t in trials:
        for seed, outcome in (t.user_attrs.get("carried_seeds") or {}).items():
            interrupted = trials[t.user_attrs["retry_of"]]
            assert outcome["job"] == interrupted.user_attrs[f"job_seed{seed}"] == t.user_attrs[f"job_seed{seed}"]
            assert summary(sweep_dir, outcome["job"])["status"] == "completed"
    for t in counted:
        if t.state != TrialState.FAIL:
            (job,) = jobs_of(t)
            assert summary(sweep_dir, job)["status"] == ("pruned" if t.state == TrialState.PRUNED else "completed")
    # Nothing run twice: one job per counted trial, and a re-run only for a trial that was not counted.
    retried = [t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs]
    assert len(retried) == len(set(retried))
    assert all(not counts_toward_budget(trials[r]) for r in retried)
    return trials


# ---- PostgreSQL ---------------------------------------------------------------------------------
@pytest.fixture
def pg_url():
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (postgresql+psycopg2://user:pw@127.0.0.1:5432/db): "
                    "PostgreSQL tests need a server")
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:  # set but unreachable: this raises, and the test fails
        conn.execute(sa.text("SELECT 1"))
    return url


def start_sweep(args: list[str], cwd: Path, log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "trpo_lab", *args], cwd=cwd, env=job_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    try:
        for p, log in zip(procs, logs):
            rc = p.wait(timeout=timeout)
            assert rc == 0, log.read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_two_sweepers_share_a_postgres_study_and_resume_after_both_are_killed(pg_url, tmp_path):
    study_name = f"two-sweepers-{uuid.uuid4().hex[:8]}"
    sweep_dir = tmp_path / "sweep"  # shared, as a shared file system would be: job folders must not collide
    args = lambda n: ["-m", "hydra/sweeper=trpo_optuna", *TINY, "trpo.delta=interval(0.001,0.05)",  # noqa: E731
                      "hydra/sweeper/sampler=random", f"hydra.sweeper.storage='{pg_url}'",
                      f"hydra.sweeper.study_name={study_name}", f"hydra.sweeper.n_trials={n}",
                      "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=20",
                      f"hydra.sweep.dir={sweep_dir}"]
    storage = open_storage(pg_url)
    try:
        # 1. Two sweepers at once (two machines): exactly 6 trials between them.
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        procs = [start_sweep(args(6), tmp_path, log) for log in logs]
        wait_all(procs, logs, timeout=240)
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = assert_all_accounted(study, 6, sweep_dir)
        assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
        assert len({t.user_attrs["owner"] for t in trials}) == 2, "both sweepers ran trials"
        assert len({t.params["trpo.delta"] for t in trials}) == 6

        # 2. Both killed with SIGKILL mid-sweep (their in-process jobs die with them) ...
        procs = [start_sweep(args(12), tmp_path, tmp_path / f"kill{i}.log") for i in (0, 1)]
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if len({t.user_attrs.get("owner") for t in running} - {None}) == 2:
                    break
                time.sleep(0.5)
            else:
                pytest.fail("the two sweepers never ran trials at the same time")
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            for p in procs:
                p.wait()
        # Tiny trials end every second or so: one may have been told between the look and the kills.
        left = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        assert len(left) >= 1
        # ... and the same command resumes: the dead sweepers' trials fail as stale and run again.
        r = subprocess.run([sys.executable, "-m", "trpo_lab", *args(12)], cwd=tmp_path, env=job_env(),
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = assert_all_accounted(study, 12, sweep_dir)
        for n in left:
            assert trials[n].state == TrialState.FAIL and trials[n].user_attrs["interrupted"]
            assert "no longer running" in trials[n].user_attrs["fail_reason"]
        assert sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs) == sorted(left)
    finally:
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        except KeyError:
            pass


def test_two_sweepers_at_once_on_the_journal_file_share_the_budget(tmp_path):
    """The same race without a database server: the journal file's budget lock keeps n_trials exact."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=trpo_optuna", *TINY, "trpo.delta=interval(0.001,0.05)",
            "hydra/sweeper/sampler=random", "hydra.sweeper.study_name=pair", "hydra.sweeper.n_trials=4",
            f"hydra.sweep.dir={sweep_dir}"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    wait_all([start_sweep(args, tmp_path, log) for log in logs], logs, timeout=180)
    study = optuna.load_study(study_name="pair", storage=open_storage(default_storage_url(sweep_dir)))
    trials = assert_all_accounted(study, 4, sweep_dir)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["owner"] for t in trials}) == 2, "both sweepers ran trials"
    assert len({t.params["trpo.delta"] for t in trials}) == 4


# ---- stale trials by heartbeat ------------------------------------------------------------------
def test_a_trial_whose_sweeper_went_silent_fails_by_heartbeat_and_runs_again(tmp_path):
    """Another machine's sweeper died (no process here to look at): its heartbeat stops, and a live
    sweeper fails the trial after the grace period, re-runs it, and finishes with exactly n_trials."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    study = optuna.create_study(study_name="silent", storage=open_storage(default_storage_url(sweep_dir)),
                                direction="maximize")
    lost = study.ask({"trpo.delta": optuna.distributions.FloatDistribution(0.001, 0.05)})
    study._storage.set_trial_user_attr(lost._trial_id, "owner", "node-that-died:4242:1")
    study._storage.set_trial_user_attr(lost._trial_id, "heartbeat", time.time())  # alive a moment ago
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "trpo.delta=interval(0.001,0.05)",
                "hydra.sweeper.study_name=silent", "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1",
                "hydra.sweeper.grace_period=6", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="silent", storage=open_storage(default_storage_url(sweep_dir)))
    trials = assert_all_accounted(study, 2, sweep_dir)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["interrupted"]
    assert "no heartbeat" in trials[0].user_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert "waiting for 1 trial(s) of other sweepers" in r.stdout


# ---- launchers ------------------------------------------------------------------------------------
def test_sweep_through_the_submitit_launcher_in_local_mode(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *TINY, "trpo.delta=interval(0.001,0.05)",
                "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.sweeper.n_jobs=2",
                "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="trpo_lab-CartPole-v1", storage=open_storage(default_storage_url(sweep_dir)))
    trials = assert_all_accounted(study, 2, sweep_dir)
    assert all(t.state == TrialState.COMPLETE and t.intermediate_values for t in trials)
    assert list((sweep_dir / ".submitit").iterdir()), "the jobs went through submitit"


def test_ray_launcher_config_is_shipped():
    cfg = yaml.safe_load((REPO / "trpo_lab" / "conf" / "hydra" / "launcher" / "ray_cluster.yaml").read_text())
    assert cfg["defaults"][0] == "ray" and "address" in cfg["ray"]["init"]
    assert "hydra/launcher=ray_cluster" in (REPO / "docs" / "scaling.md").read_text()


# ---- faults inside a sweep ------------------------------------------------------------------------
def test_nan_reward_or_inf_observation_environment_fails_only_its_own_trial(tmp_path):
    sweep_dir = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "trpo_lab", "-m", "hydra/sweeper=trpo_optuna", *TINY,
                        "env.id=choice(CartPole-v1,nan_env:NaNReward-v0,nan_env:InfObs-v0)",
                        "hydra/sweeper/sampler=grid", "hydra.sweeper.study_name=nan", "hydra.sweeper.n_trials=3",
                        "hydra.sweeper.max_failure_rate=1", f"hydra.sweep.dir={sweep_dir}"],
                       cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    study = optuna.load_study(study_name="nan", storage=open_storage(default_storage_url(sweep_dir)))
    trials = assert_all_accounted(study, 3, sweep_dir)
    by_env = {t.params["env.id"]: t for t in trials}
    assert by_env["CartPole-v1"].state == TrialState.COMPLETE
    for env_id in ("nan_env:NaNReward-v0", "nan_env:InfObs-v0"):
        bad = by_env[env_id]
        assert bad.state == TrialState.FAIL and "non-finite" in bad.user_attrs["fail_reason"]
        s = summary(sweep_dir, jobs_of(bad)[0])
        assert s["status"] == "failed" and "non-finite" in s["error"]


# ---- load -----------------------------------------------------------------------------------------
def test_fifty_trials_four_parallel_jobs_on_the_journal_file(tmp_path):
    sweep_dir = tmp_path / "sweep"
    n = 50
    r = subprocess.run([sys.executable, "-m", "trpo_lab", "-m", "hydra/sweeper=trpo_optuna", "env=cartpole",
                        "trainer.total_steps=1024", "trainer.steps_per_iter=512", "trainer.eval_every=1",
                        "trainer.eval_episodes=1", "trainer.progress=false", "logger=none", "trainer.n_envs=1",
                        "trainer.vec_env=sync", "trainer.checkpoint_every=100",
                        # one value in ten is a NaN-reward env, so failures are part of the load
                        "env.id=choice(CartPole-v1,CartPole-v1,CartPole-v1,CartPole-v1,CartPole-v1,CartPole-v1,"
                        "CartPole-v1,CartPole-v1,CartPole-v1,nan_env:NaNReward-v0)",
                        "trpo.delta=tag(log,interval(0.0005,0.05))", "hydra/sweeper/sampler=random",
                        "hydra.sweeper.pruner.n_startup_trials=5", "hydra.sweeper.study_name=load",
                        f"hydra.sweeper.n_trials={n}", "hydra.sweeper.max_failure_rate=1",
                        "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", f"hydra.sweep.dir={sweep_dir}"],
                       cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    # The storage reads back in a fresh process-side object, and the results command writes the table.
    study = optuna.load_study(study_name="load", storage=open_storage(default_storage_url(sweep_dir)))
    trials = assert_all_accounted(study, n, sweep_dir)
    assert len(trials) == n  # nothing was interrupted or retried
    states = {s: sum(t.state == s for t in trials) for s in TERMINAL}
    assert states[TrialState.COMPLETE] > 0 and states[TrialState.FAIL] > 0, states
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.params["env.id"] == "nan_env:NaNReward-v0" and t.user_attrs["fail_reason"]
    out = tmp_path / "results"
    rr = run_cli(default_storage_url(sweep_dir), "load", str(out), cwd=tmp_path, module="trpo_lab.sweeper.results")
    assert rr.returncode == 0, rr.stderr[-2000:]
    assert len((out / "trials.csv").read_text().splitlines()) == n + 1


def test_a_job_killed_with_sigkill_fails_its_trial_and_runs_it_again(tmp_path):
    """kill -9 of a joblib worker mid-job: the launcher reports it lost (loky then loses every job of
    its pool), those trials fail as interrupted, run again once, and the sweep ends with n_trials."""
    sweep_dir = tmp_path / "sweep"
    with open(tmp_path / "log", "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "trpo_lab", "-m", "hydra/sweeper=trpo_optuna", *TINY,
                              "trainer.total_steps=8192", "trpo.delta=interval(0.001,0.05)",
                              "hydra.sweeper.n_trials=3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                              f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, env=job_env(), stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (sweep_dir / "0" / "metrics.jsonl").exists():
            time.sleep(0.3)
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(k) for k in kids if "LokyProcess" in Path(f"/proc/{k}/cmdline").read_text()]
        assert workers, "no joblib worker to kill"
        os.kill(workers[0], signal.SIGKILL)
        assert p.wait(timeout=180) == 0, (tmp_path / "log").read_text()[-3000:]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    study = optuna.load_study(study_name="trpo_lab-CartPole-v1", storage=open_storage(default_storage_url(sweep_dir)))
    trials = assert_all_accounted(study, 3, sweep_dir)
    lost = [t for t in trials if t.user_attrs.get("interrupted")]
    assert lost and all("TerminatedWorkerError" in t.user_attrs["fail_reason"] for t in lost)
    for t in lost:
        (retry,) = [u for u in trials if u.user_attrs.get("retry_of") == t.number]
        assert retry.params == t.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
