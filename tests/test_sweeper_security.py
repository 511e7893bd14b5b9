"""What the sweeper trusts (issue 18): nothing read from a study storage runs as code, and a storage
password stays in the process given it.

- The study's `pruner` attribute is data: a name and numeric settings checked
  against job.PRUNERS; `shutil.copyfile` or any other `_target_` is refused by the
  job (nothing copied) and by the sweeper before any job.
- A storage password appears in no log line, no error (a wrong password is one
  line, no traceback) and no file of the sweep, its jobs (.hydra/, checkpoints,
  wandb) or the report, while the jobs still reach the database (PostgreSQL:
  needs TRPO_LAB_TEST_POSTGRES_URL, as tests/test_scale.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import REPO, cli_env
from trpo_lab.sweeper.job import PRUNERS, PrunerError, JobTrial, build_pruner, pruner_spec
from trpo_lab.sweeper.secrets import STORAGE_ENV, mask_text, mask_url
from trpo_lab.sweeper.storage import StorageError, TrialStore, default_storage_url, job_storage_url, open_storage
from test_sweeper_any_app import SPHERE, SPHERE_CONF, run_app, write_app

PG_ENV = "TRPO_LAB_TEST_POSTGRES_URL"


# ---- the pruner is data ---------------------------------------------------------------------------
def _study_with_pruner(tmp_path: Path, pruner: object) -> tuple[str, int]:
    url = default_storage_url(tmp_path)
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.set_user_attr("pruner", pruner)
    trial = study.ask()
    return url, TrialStore(open_storage(url), "s").trial_id(trial.number)


@pytest.mark.parametrize("how", ["target", "name", "nested"])
def test_a_pruner_the_storage_names_is_never_called(tmp_path, how):
    src, dst = tmp_path / "src.pth", tmp_path / "site-packages-evil.pth"
    src.write_text("import os\n")
    copy = {"_target_": "shutil.copyfile", "src": str(src), "dst": str(dst)}
    pruner = {"target": copy,
              "name": {"name": "shutil.copyfile", "settings": {"src": str(src), "dst": str(dst)}},
              "nested": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": copy}}[how]
    url, trial_id = _study_with_pruner(tmp_path, pruner)
    with pytest.raises(PrunerError) as err:
        JobTrial(url, "s", 0, trial_id, 0, 1)
    assert not dst.exists(), "the storage made the job copy a file"
    assert "\n" not in str(err.value) and ("shutil.copyfile" in str(err.value) or "must be a number" in str(err.value))


def test_every_preset_pruner_and_the_spec_form_build_optunas_pruner(tmp_path):
    presets = sorted((REPO / "hydra_plugins/trpo_optuna_sweeper/conf/hydra/sweeper/pruner").glob("*.yaml"))
    assert presets
    for path in presets:
        cfg = yaml.safe_load(path.read_text())
        spec = pruner_spec(cfg)
        assert spec["name"] in PRUNERS
        assert type(build_pruner(spec)).__name__ == spec["name"] == cfg["_target_"].rsplit(".", 1)[1]
    url, trial_id = _study_with_pruner(tmp_path, {"name": "MedianPruner", "settings": {"n_startup_trials": 3}})
    job = JobTrial(url, "s", 0, trial_id, 0, 1)
    assert isinstance(job.trial.study.pruner, optuna.pruners.MedianPruner)


def test_the_sweeper_refuses_a_pruner_outside_the_allowlist_before_any_job(tmp_path):
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}", "hydra.sweeper.pruner._target_=os.system",
                timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("trpo_optuna: error: hydra.sweeper.pruner: pruner 'os.system'")
    assert "Traceback" not in r.stderr and not (tmp_path / "s" / "0").exists()


# ---- the storage password -----------------------------------------------------------------------
def test_mask_url_hides_the_password_in_urls_and_error_text():
    url = "postgresql+psycopg2://alice:Pa%40ss-word9@db.example:5432/optuna?sslmode=require"
    assert mask_url(url) == "postgresql+psycopg2://alice:***@db.example:5432/optuna?sslmode=require"
    assert mask_url("journal:/tmp/optuna.journal") == "journal:/tmp/optuna.journal"
    assert mask_url("mysql://bob@host/db?password=hunter22") == "mysql://bob@host/db?password=***"
    text = mask_text(f"could not connect to {url}: password Pa@ss-word9 rejected", url)
    assert "Pa%40ss-word9" not in text and "Pa@ss-word9" not in text and "alice:***@db.example" in text


def test_a_job_gets_the_real_url_back_from_the_sweepers_environment(monkeypatch):
    url = "postgresql://alice:hunter22pw@host/db"
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert job_storage_url("journal:/x/optuna.journal") == "journal:/x/optuna.journal"
    with pytest.raises(StorageError, match="PGPASSFILE"):
        job_storage_url(mask_url(url))
    monkeypatch.setenv(STORAGE_ENV, url)
    assert job_storage_url(mask_url(url)) == url


def test_a_wrong_password_is_one_line_with_the_url_masked(tmp_path):
    secret = "Wr0ngPassw0rd-" + uuid.uuid4().hex[:6]
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    # Port 1 on loopback: nothing listens, the connection fails as a wrong password would.
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}",
                f"hydra.sweeper.storage='postgresql+psycopg2://someone:{secret}@127.0.0.1:1/nodb'", timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    assert secret not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    assert line.startswith("trpo_optuna: error: cannot open the study storage "
                           "postgresql+psycopg2://someone:***@127.0.0.1:1/nodb: OperationalError")
    for path in (tmp_path / "s").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.fixture
def pg_secret_url():
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set: the password test needs a PostgreSQL server")
    from sqlalchemy.engine import make_url

    u = make_url(url)
    rest = url.replace(f":{u.password}@", ":@")
    if not u.password or len(u.password) < 6 or u.password in rest:
        pytest.skip(f"{PG_ENV}'s password also appears elsewhere in the URL (or is short): nothing to search for")
    return url, u.password


def test_the_password_reaches_jobs_but_no_file_log_or_report(pg_secret_url, tmp_path):
    url, secret = pg_secret_url
    study_name = f"secret-{uuid.uuid4().hex[:8]}"
    sweep_dir = tmp_path / "sweep"
    env = cli_env()
    r = subprocess.run([sys.executable, "-m", "trpo_lab", "-m", "hydra/sweeper=trpo_optuna", "env=cartpole",
                        "trainer.total_steps=1024", "trainer.steps_per_iter=512", "trainer.eval_every=1",
                        "trainer.eval_episodes=1", "trainer.progress=false", "trainer.n_envs=1",
                        "trainer.vec_env=sync", "logger=wandb_offline", "trpo.delta=interval(0.001,0.05)",
                        f"hydra.sweeper.storage='{url}'", f"hydra.sweeper.study_name={study_name}",
                        "hydra.sweeper.n_trials=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1",
                        f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    storage = open_storage(url)
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        study = optuna.load_study(study_name=study_name, storage=storage)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], "the jobs reached the database"
        assert secret not in r.stdout + r.stderr
        assert mask_url(url) in r.stdout + r.stderr  # the INFO line, masked
        report = subprocess.run([sys.executable, "-m", "trpo_lab.report", url, "-o", str(tmp_path / "r.html")],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert secret not in report.stdout + report.stderr
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.name == "last.pt" for p in files) and any(p.name == "hydra.yaml" for p in files)
        assert any(p.name == "debug.log" for p in files) and (tmp_path / "r.html").is_file()
        leaked = [str(p.relative_to(tmp_path)) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, leaked
    finally:
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        except KeyError:
            pass


def test_a_wrong_password_to_a_live_server_is_one_line_too(pg_secret_url, tmp_path):
    url, secret = pg_secret_url
    wrong = "Wr0ng-" + secret[::-1]
    app = write_app(tmp_path, SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path / 's'}",
                "hydra.sweeper.storage='{}'".format(url.replace(f":{secret}@", f":{wrong}@")), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert wrong not in r.stdout + r.stderr and secret not in r.stdout + r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    assert line.startswith("trpo_optuna: error: cannot open the study storage ") and ":***@" in line


def test_the_budget_lock_on_an_unreachable_database_fails_in_one_masked_line():
    from trpo_lab.sweeper.liveness import BudgetLock

    lock = BudgetLock("postgresql+psycopg2://someone:Budget-Secret-77@127.0.0.1:1/nodb", "s")
    with pytest.raises(StorageError) as err:
        with lock():
            pass
    assert "Budget-Secret-77" not in str(err.value) and "someone:***@127.0.0.1:1/nodb" in str(err.value)
    assert "\n" not in str(err.value)
