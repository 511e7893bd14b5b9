"""Run-level edges a new user hit: each ends in a clear line and loses nothing.

Failures before training still leave summary.json; image observations are refused before
training; wandb online without an account falls back to offline; Ctrl-C says how to resume;
trainer.resume=RUN_DIR continues in RUN_DIR; multirun folders carry the task; integral floats
are integers; the docs name only wandb sync options that exist.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env, read_jsonl, run_cli
from trpo_lab import metrics as M
from trpo_lab.__main__ import integral_floats
from trpo_lab.checkpoint import load_checkpoint
from trpo_lab.config import EnvConfig, task_name
from trpo_lab.envs import EnvError, make_env
from trpo_lab.normalisation import ObsNormalizer, RunningMeanStd


def _with_test_envs() -> dict[str, str]:
    env = cli_env()
    env["PYTHONPATH"] = str(REPO / "tests") + os.pathsep + env["PYTHONPATH"]
    return env


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "trpo_lab", *args], cwd=cwd, env=env or _with_test_envs(),
                          capture_output=True, text=True, timeout=timeout)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_run_whose_environment_cannot_be_built_leaves_a_failed_summary(tmp_path, fast_overrides):
    out = tmp_path / "run"
    proc = _cli(*fast_overrides, "env.id=nan_env:CrashOnBuild-v0", "+env.kwargs.build_pid=1",
                f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 1
    assert len(_lines(proc.stderr)) == 1 and "could not build env.id" in proc.stderr, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "CrashOnBuild" in summary["error"]
    assert set(M.SUMMARY_FIELDS) <= set(summary) and summary["env_steps"] == 0


def test_a_multirun_job_with_an_unknown_namespace_leaves_a_failed_summary(tmp_path, fast_overrides):
    sweep = tmp_path / "multi"
    proc = _cli("-m", *fast_overrides, "env.id=NoSuchNamespace/Env-v0,CartPole-v1", f"hydra.sweep.dir={sweep}",
                cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    failed = json.loads((sweep / "0" / "summary.json").read_text())
    assert failed["status"] == "failed" and "NoSuchNamespace" in failed["error"]
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "completed"


def test_image_observations_are_refused_before_training_in_one_line(tmp_path, fast_overrides):
    out = tmp_path / "run"
    proc = _cli(*fast_overrides, "env.id=nan_env:ImageObs-v0", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 1
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and "image observations" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text()


def test_only_flat_vector_observations_are_accepted_and_normalised_as_rows(monkeypatch):
    import gymnasium as gym

    original = gym.make
    for shape, kind in (((8, 8, 3), "image observations"), ((2, 3), "image observations"), ((4,), None)):
        def make(*args, _shape=shape, **kwargs):
            env = original(*args, **kwargs)
            env.observation_space = gym.spaces.Box(-1.0, 1.0, _shape)
            return env

        monkeypatch.setattr(gym, "make", make)
        if kind is None:
            make_env(EnvConfig(id="CartPole-v1")).close()
        else:
            with pytest.raises(EnvError, match=f"{kind} .*one-dimensional Box"):
                make_env(EnvConfig(id="CartPole-v1"))
    # The time-limit path normalises the final observation with the rollout's statistics, as rows.
    norm = ObsNormalizer((4,))
    rollout = norm.rollout()
    batch = np.random.default_rng(0).normal(size=(2, 4))
    rollout.step(batch, np.empty((2, 4)))
    final = np.arange(4.0)
    rms = RunningMeanStd((4,))
    rms.update(batch)
    expected = np.clip((final - rms.mean) / np.sqrt(rms.var + norm.eps), -norm.clip, norm.clip)
    np.testing.assert_allclose(rollout.normalise(final[None])[0], expected, rtol=1e-6)


def test_integral_floats_are_integers_for_integer_settings():
    assert integral_floats(["trainer.total_steps=1e5", "trainer.total_steps=2048.0,4e3", "trpo.delta=1e-3",
                            "trainer.total_steps=1.5", "trainer.seed=3", "+trainer.eval_every=5e0",
                            "trainer.total_steps=range(1,3)"]) == \
        ["trainer.total_steps=100000", "trainer.total_steps=2048,4000", "trpo.delta=1e-3",
         "trainer.total_steps=1.5", "trainer.seed=3", "+trainer.eval_every=5", "trainer.total_steps=range(1,3)"]


def test_total_steps_as_a_float_literal_runs(tmp_path, fast_overrides):
    out = tmp_path / "run"
    proc = run_cli(*fast_overrides, "trainer.total_steps=1.024e3", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["env_steps"] == 1024


def test_resume_from_a_path_continues_there_and_warns_only_about_typed_keys(tmp_path):
    from trpo_lab.config import Config
    from trpo_lab.trainer import train

    run_dir = tmp_path / "first"
    cfg = Config()
    cfg.env.id, cfg.logger.wandb.mode, cfg.trainer.progress = "CartPole-v1", "disabled", False
    cfg.trainer.total_steps, cfg.trainer.steps_per_iter, cfg.trainer.eval_episodes = 1024, 512, 2
    train(cfg, run_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli(f"trainer.resume={run_dir}", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "ignoring" not in proc.stderr + proc.stdout  # env.id, total_steps... were never typed
    assert f"outputs in {run_dir}" in proc.stdout
    assert list(elsewhere.iterdir()) == []  # no second, empty time-stamped folder
    assert not (run_dir / ".hydra").exists()  # nor this launch's config written over the run's own
    proc = run_cli(f"trainer.resume={run_dir}", "trpo.delta=0.5", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in (proc.stderr + proc.stdout).splitlines() if "ignoring" in line]
    assert len(warning) == 1 and warning[0].endswith("ignoring this command's trpo.delta"), warning
    proc = run_cli(f"trainer.resume={tmp_path / 'nothing'}", cwd=elsewhere)
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr and list(elsewhere.iterdir()) == []


def test_ctrl_c_prints_the_command_that_resumes_the_run(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "trpo_lab", "env=cartpole", "trainer.total_steps=10000000",
                             "trainer.steps_per_iter=512", "trainer.checkpoint_every=1", "logger=none"],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("outputs/CartPole-v1/*/checkpoints/last.pt")):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    [run_dir] = list(tmp_path.glob("outputs/CartPole-v1/*"))
    assert f"continue it with: python -m trpo_lab trainer.resume={run_dir}" in stderr, stderr


def test_wandb_online_without_an_account_logs_offline_and_says_so(tmp_path, fast_overrides):
    env = cli_env()
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SILENT"):
        env.pop(key, None)
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc, no wandb settings
    out = tmp_path / "run"
    overrides = [o for o in fast_overrides if not o.startswith("logger")]
    proc = subprocess.run([sys.executable, "-m", "trpo_lab", *overrides, "logger=wandb_online",
                           f"hydra.run.dir={out}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "could not start online" in proc.stdout + proc.stderr and "wandb sync" in proc.stdout + proc.stderr
    assert list((out / "wandb").glob("offline-run-*"))


def test_multirun_folders_carry_the_task(tmp_path, fast_overrides):
    proc = run_cli("-m", *fast_overrides, "trpo.delta=0.01,0.02", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("multirun/CartPole-v1/*/[01]/summary.json"))) == 2
    assert task_name("Hopper-v5", ["env=hopper", "trpo.delta=0.1,0.2"]) == "Hopper-v5"
    assert task_name("Walker2d-v5", ["env=cartpole,hopper"]) == "cartpole+hopper"
    assert task_name("Walker2d-v5", ["env.id=choice(ALE/Pong-v5,CartPole-v1)"]) == "ALE_Pong-v5+CartPole-v1"


def test_the_final_evaluation_is_the_last_row_and_best_pt_holds_the_best(tmp_path, fast_overrides):
    out = tmp_path / "run"
    proc = run_cli(*fast_overrides, "trainer.eval_every=1", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows, summary = read_jsonl(out / "metrics.jsonl"), json.loads((out / "summary.json").read_text())
    assert rows[-1][M.EVAL_RETURN] == summary["eval_return"]
    assert rows[-1][M.EVAL_RETURN_STD] == summary["eval_return_std"]
    assert sum(M.EVAL_RETURN in r for r in rows) == len(rows)  # no second, unlogged final evaluation
    best = load_checkpoint(out, "best.pt")
    assert best["eval_return"] == summary["best_eval_return"] == max(r[M.EVAL_RETURN] for r in rows)


def test_docs_name_only_wandb_sync_options_that_exist():
    """wandb 0.31 removed `wandb sync --sync-all`; the docs must not send users to it."""
    help_text = subprocess.run([sys.executable, "-m", "wandb", "sync", "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    assert "--yes" in help_text  # the help was read
    used = set()
    for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for line in doc.read_text().splitlines():
            if "wandb sync" in line:
                used.update(re.findall(r"(--[a-z][a-z-]+)", line.split("wandb sync", 1)[1].split("#")[0]))
    assert used, "the docs show wandb sync"
    assert not [flag for flag in used if flag not in help_text]
