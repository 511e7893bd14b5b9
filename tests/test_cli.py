"""Tier 3: the command line in a subprocess, as a user runs it, from a foreign directory."""
import json

import pytest

from conftest import read_jsonl, run_cli
from trpo_lab import metrics as M


def test_run_leaves_design_outputs(tmp_path, fast_overrides):
    out = tmp_path / "run"
    proc = run_cli(*fast_overrides, "trainer.eval_every=2", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout  # says where its outputs are

    rows = read_jsonl(out / "metrics.jsonl")
    assert [r[M.ITERATION] for r in rows] == [1, 2, 3, 4]
    assert [r[M.ENV_STEPS] for r in rows] == [512, 1024, 1536, 2048]
    for row in rows:
        assert set(M.PER_ITERATION) <= set(row), set(M.PER_ITERATION) - set(row)
    assert M.EVAL_RETURN in rows[1] and M.EVAL_RETURN not in rows[0]

    summary = json.loads((out / "summary.json").read_text())
    assert set(M.SUMMARY_FIELDS) <= set(summary)
    assert summary["status"] == "completed"
    assert summary["env_id"] == "CartPole-v1" and summary["env_steps"] == 2048 and summary["iterations"] == 4
    assert summary["objective"] == summary["eval_return"] > 0
    assert summary["best_eval_return"] >= summary["eval_return"]
    assert (out / "checkpoints" / "last.pt").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()
    assert not (out / "wandb").exists()  # logger=none imports no wandb


def test_default_output_dir_is_under_cwd(tmp_path, fast_overrides):
    proc = run_cli(*fast_overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [summary] = list((tmp_path / "outputs").glob("CartPole-v1/*/summary.json"))
    assert json.loads(summary.read_text())["status"] == "completed"


def test_subprocess_vector_env_runs(tmp_path, fast_overrides):
    out = tmp_path / "run"
    proc = run_cli(*fast_overrides, "trainer.vec_env=subproc", "trainer.n_envs=2", f"hydra.run.dir={out}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["env_steps"] == 2048


@pytest.mark.parametrize("override,needle", [
    ("trpo.delta=-1", "trpo.delta=-1"),
    ("trpo.gae_lambda=1.5", "trpo.gae_lambda=1.5"),
    ("trainer.steps_per_iter=1001", "trainer.steps_per_iter=1001"),
    ("env.id=NoSuchEnv-v0", "env.id='NoSuchEnv-v0'"),
])
def test_invalid_value_is_one_line_exit_2_and_builds_nothing(tmp_path, fast_overrides, override, needle):
    out = tmp_path / "run"
    proc = run_cli(*fast_overrides, override, f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # checked before Hydra makes the run directory


@pytest.mark.parametrize("override,needle", [
    ("trpo.deltaa=0.1", "trpo.deltaa is not a setting; did you mean trpo.delta?"),
    ("+trpo.deltaa=0.1", "trpo.deltaa is not a setting; did you mean trpo.delta?"),
    ("trpo.cg_iters=many", "trpo.cg_iters: Value 'many'"),
    ("env=walkr", "env=walkr is not an option; did you mean env=walker?"),
    ("env=nosuchenv", "hopper, humanoid"),  # lists the available options
    ("env.kwargs.frame_skip=4", "+env.kwargs.frame_skip="),  # says how to add a key to a free-form dict
])
def test_hydra_level_typos_are_one_line_exit_2_without_traceback(tmp_path, fast_overrides, override, needle):
    proc = run_cli(*fast_overrides, override, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("trpo_lab: error: ") and needle in lines[0], proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_multirun_with_one_bad_value_runs_the_others_and_ends_in_one_line(tmp_path, fast_overrides):
    sweep = tmp_path / "multi"
    proc = run_cli("-m", *fast_overrides, "trpo.delta=-1,0.01", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "trpo_lab: error: a job failed: trpo.delta=-1.0 is invalid" in proc.stderr
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "completed"  # the good job ran


def test_sigterm_ends_run_as_interrupted_with_summary(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "trpo_lab", "env=cartpole", "trainer.total_steps=10000000",
                             "logger=none", f"hydra.run.dir={out}"], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]
    assert summary["env_steps"] > 0
