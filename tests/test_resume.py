"""Exact resume: environment state round trips, and a killed run that continues bit for bit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_env, read_jsonl, run_cli
from trpo_lab.config import EnvConfig
from trpo_lab.vec_env import make_vec_env


def _roll(venv, actions):
    out = []
    for a in actions:
        step = venv.step(a)
        out.append((step.obs.copy(), step.rewards.copy(), step.terminated.copy(), step.truncated.copy(),
                    list(step.episodes)))
    return out


@pytest.mark.parametrize("env_id,kind", [("Hopper-v5", "sync"), ("CartPole-v1", "sync"),
                                         ("Hopper-v5", "subproc")])
def test_vec_env_state_round_trip(env_id, kind):
    """A second vec env given the first one's state mid-episode steps exactly like the first."""
    cfg = EnvConfig(id=env_id, max_episode_steps=30)  # short limit: truncations inside the window
    a, b = make_vec_env(cfg, 2, seed=3, kind=kind), make_vec_env(cfg, 2, seed=99, kind=kind)
    try:
        a.reset()
        b.reset()
        rng = np.random.default_rng(0)
        sample = (lambda: rng.uniform(-1, 1, (2, 3))) if env_id.startswith("Hopper") else \
            (lambda: rng.integers(0, 2, 2))
        _roll(a, [sample() for _ in range(17)])  # mid-episode: 17 of 30 steps
        b.set_state(a.get_state())
        actions = [sample() for _ in range(80)]  # crosses time limits and (Hopper) falls
        for (o1, r1, t1, tr1, e1), (o2, r2, t2, tr2, e2) in zip(_roll(a, actions), _roll(b, actions)):
            np.testing.assert_array_equal(o1, o2)
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(t1, t2)
            np.testing.assert_array_equal(tr1, tr2)
            assert e1 == e2
    finally:
        a.close()
        b.close()


WALL_CLOCK = ("wall_time_s", "time/steps_per_s")


def _comparable(rows):
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def _small_config(env_id: str, resume: str = "auto"):
    from trpo_lab.config import Config

    cfg = Config()
    cfg.env.id = env_id
    t = cfg.trainer
    t.total_steps, t.steps_per_iter, t.eval_every, t.eval_episodes = 512 * 6, 512, 2, 1
    t.checkpoint_every, t.progress, t.resume = 2, False, resume
    cfg.logger.wandb.mode = "disabled"
    cfg.trpo.value_epochs = 2
    return cfg


def test_stopped_run_resumed_by_path_equals_uninterrupted(tmp_path):
    """Stop after iteration 4's checkpoint (as a pruned run), leave a stray row and a
    half-written line behind, resume with trainer.resume=RUN_DIR: the rows match."""
    from trpo_lab.trainer import train

    train(_small_config("CartPole-v1"), tmp_path / "straight")
    evals = []
    summary = train(_small_config("CartPole-v1"), tmp_path / "stopped",
                    on_eval=lambda steps, ret: evals.append(steps) or len(evals) == 2)
    assert summary["status"] == "pruned" and summary["iterations"] == 4
    with open(tmp_path / "stopped" / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 5, "env_steps": 2560}\n{"iterat')
    resumed = train(_small_config("CartPole-v1", resume=str(tmp_path / "stopped")), tmp_path / "elsewhere")

    assert resumed["status"] == "completed" and resumed["iterations"] == 6
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    after = read_jsonl(tmp_path / "stopped" / "metrics.jsonl")
    assert [r["iteration"] for r in after] == [1, 2, 3, 4, 5, 6]
    assert _comparable(after) == _comparable(straight)
    assert not (tmp_path / "elsewhere" / "metrics.jsonl").exists()  # the run continued in place


def test_auto_resume_refuses_a_different_config(tmp_path):
    from trpo_lab.config import ConfigError
    from trpo_lab.trainer import train

    cfg = _small_config("CartPole-v1")
    cfg.trainer.total_steps = 512
    train(cfg, tmp_path / "run")
    cfg.trpo.delta = 0.05
    with pytest.raises(ConfigError, match="trpo.delta"):
        train(cfg, tmp_path / "run")


def _cli(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trpo_lab", "env=hopper", "trainer.total_steps=4096",
            "trainer.steps_per_iter=512", "trainer.checkpoint_every=2", "trainer.eval_every=3",
            "trainer.eval_episodes=1", "trpo.value_epochs=2", "logger=none", f"hydra.run.dir={run_dir}", *extra]


@pytest.mark.parametrize("extra", [(), ("trainer.policy_lag=2",)], ids=["on-policy", "policy_lag=2"])
def test_kill_9_then_same_command_continues_exactly(tmp_path, extra):
    """kill -9 a Hopper run mid-way (mid-episode, rows written after its last checkpoint);
    the same command again finishes it, and every row equals the uninterrupted run's.
    With a policy lag the checkpoint also holds the lagged behaviour policies."""
    straight = subprocess.run(_cli(tmp_path / "straight", *extra), cwd=tmp_path, env=cli_env(),
                              capture_output=True, text=True, timeout=120)
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(_cli(run_dir, *extra), cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 5:
            break  # checkpoints at 2 and 4, row 5 written after the last one
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run_dir / "summary.json").exists()
    rows_at_kill = len(read_jsonl(metrics))

    again = subprocess.run(_cli(run_dir, *extra), cwd=tmp_path, env=cli_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    expected = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    got = read_jsonl(metrics)
    assert len(expected) == 8 and rows_at_kill >= 5
    assert _comparable(got) == _comparable(expected)
    if extra:
        assert [r["rollout/policy_lag_max"] for r in got] == [0, 1, 2, 2, 2, 2, 2, 2]


def test_claim_holds_a_run_dir_for_one_run_at_a_time(tmp_path):
    from trpo_lab.resume import RunDirInUse, claim

    with claim(tmp_path / "run"):
        with pytest.raises(RunDirInUse, match=rf"in use by another trpo_lab run \(pid {os.getpid()}\)"):
            with claim(tmp_path / "run"):
                pass
    with claim(tmp_path / "run"):  # released when the first run ended
        pass


def test_a_file_system_without_locks_runs_unguarded_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from trpo_lab.resume import claim

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="trpo_lab.resume"), claim(tmp_path / "run"):
        pass
    assert "cannot lock" in caplog.text and "Function not implemented" in caplog.text


def test_the_same_command_while_its_run_is_alive_is_refused_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    command = ["env=cartpole", "trainer.total_steps=10000000", "trainer.steps_per_iter=512",
               "trainer.checkpoint_every=1", "logger=none", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen([sys.executable, "-m", "trpo_lab", *command], cwd=tmp_path, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None and not (
                metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended early"
        record = {name: (run_dir / ".hydra" / name).read_text() for name in ("config.yaml", "overrides.yaml")}
        second = run_cli(*command, cwd=tmp_path)
        assert second.returncode == 1
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"in use by another trpo_lab run (pid {first.pid})" in lines[0], second.stderr
        # Another config in the same directory: refused before Hydra writes .hydra/ there, so the
        # live run's record still says how it was started (the report reads its delta from it).
        other = run_cli(*command, "trpo.delta=0.05", cwd=tmp_path)
        assert other.returncode == 1 and "in use by another trpo_lab run" in other.stderr, other.stderr
        assert {name: (run_dir / ".hydra" / name).read_text() for name in record} == record
        assert "delta: 0.01" in record["config.yaml"] and "0.05" not in record["overrides.yaml"]
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    # The first run's outputs are its own: every iteration once, in order, and its summary.
    rows = read_jsonl(metrics)
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 2
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_auto_resume_of_a_different_config_is_one_line_exit_2(tmp_path, fast_overrides):
    run_dir = tmp_path / "run"
    assert run_cli(*fast_overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    proc = run_cli(*fast_overrides, "trpo.delta=0.05", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "trpo.delta: 0.01 -> 0.05" in lines[0], proc.stderr
    assert read_jsonl(run_dir / "metrics.jsonl") == rows
