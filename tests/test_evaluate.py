"""python -m trpo_lab.evaluate: the checkpoint's policy and normaliser, deterministic episodes, video."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from trpo_lab.config import Config
from trpo_lab.trainer import train


def _train(run_dir: Path, env_id: str, **env) -> dict:
    cfg = Config()
    cfg.env.id = env_id
    for k, v in env.items():
        setattr(cfg.env, k, v)
    t = cfg.trainer
    t.total_steps, t.steps_per_iter, t.eval_episodes, t.progress = 1024, 512, 2, False
    cfg.trpo.value_epochs = 2
    cfg.logger.wandb.mode = "disabled"
    return train(cfg, run_dir)


def test_evaluate_reproduces_the_runs_final_evaluation(tmp_path):
    """Same checkpoint, normaliser and seeds as the trainer's final evaluation: the same mean."""
    run_dir = tmp_path / "run"
    summary = _train(run_dir, "CartPole-v1")
    proc = run_cli(str(run_dir), "--episodes", "2", cwd=tmp_path, module="trpo_lab.evaluate", timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["episodes"] == 2 and len(result["returns"]) == 2
    assert result["return_mean"] == pytest.approx(summary["eval_return"], abs=1e-9)
    assert f"deterministic return {result['return_mean']:.2f} +- {result['return_std']:.2f}" in proc.stdout
    # CartPole renders through pygame: a video if it is installed, else a plain sentence.
    assert result["video"] is not None or "no renderer available" in proc.stdout


def test_evaluate_saves_a_mujoco_video_or_says_why_not(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, "Hopper-v5", max_episode_steps=20)
    proc = run_cli(str(run_dir), "-n", "1", cwd=tmp_path, module="trpo_lab.evaluate", timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir / "evaluation.json").read_text())
    if result["video"] is None:
        assert "no renderer available" in proc.stdout
    else:
        video = Path(result["video"])
        assert video.parent == run_dir / "videos" and video.stat().st_size > 1000


def test_evaluate_without_checkpoint_fails_clearly(tmp_path):
    proc = run_cli(str(tmp_path), cwd=tmp_path, module="trpo_lab.evaluate")
    assert proc.returncode == 2
    assert "no checkpoint at" in proc.stderr


def test_evaluate_without_a_working_gl_backend_still_evaluates(tmp_path):
    """A GL backend mujoco cannot load would make `import mujoco` itself fail: evaluate
    probes it first, says plainly that there is no renderer, and still evaluates."""
    import subprocess
    import sys

    from conftest import cli_env

    run_dir = tmp_path / "run"
    _train(run_dir, "Hopper-v5", max_episode_steps=20)
    env = {**cli_env(), "MUJOCO_GL": "no-such-backend"}
    proc = subprocess.run([sys.executable, "-m", "trpo_lab.evaluate", str(run_dir), "-n", "1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no renderer available" in proc.stdout and "MUJOCO_GL=no-such-backend" in proc.stdout
    assert json.loads((run_dir / "evaluation.json").read_text())["video"] is None


def test_evaluate_best_checkpoint_and_stochastic_episodes(tmp_path):
    """best.pt replays the best evaluation; --stochastic samples actions, reproducibly by seed."""
    run_dir = tmp_path / "run"
    cfg = Config()
    cfg.env.id = "CartPole-v1"
    t = cfg.trainer
    t.total_steps, t.steps_per_iter, t.eval_episodes, t.eval_every, t.progress = 2048, 512, 2, 1, False
    cfg.trpo.value_epochs = 2
    cfg.logger.wandb.mode = "disabled"
    summary = train(cfg, run_dir)
    proc = run_cli(str(run_dir), "--checkpoint", "best", "--episodes", "2", "--no-video", cwd=tmp_path,
                   module="trpo_lab.evaluate", timeout=120)
    assert proc.returncode == 0, proc.stderr
    best = json.loads((run_dir / "evaluation.json").read_text())
    assert best["checkpoint"] == "best" and best["policy"] == "deterministic"
    assert best["return_mean"] == pytest.approx(summary["best_eval_return"], abs=1e-9)
    proc = run_cli(str(run_dir), "--stochastic", "-n", "3", "--seed", "5", "--no-video", cwd=tmp_path,
                   module="trpo_lab.evaluate", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "stochastic return" in proc.stdout
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["policy"] == "stochastic" and result["seed"] == 5
    from trpo_lab.evaluate import episode_returns, load_agent, main

    cfg, agent, _ = load_agent(run_dir)
    assert episode_returns(cfg, agent, 3, 5, stochastic=True) == result["returns"]  # the seed decides them
    (run_dir / "checkpoints" / "best.pt").unlink()
    assert main([str(run_dir), "--checkpoint", "best"]) == 2


def test_a_run_that_evaluates_sampled_actions_is_evaluated_so_again(tmp_path):
    """trainer.eval_stochastic: the trainer's evaluations sample actions, and evaluate does the same
    by default (the same mean as the run's final evaluation); --deterministic takes the most likely."""
    from trpo_lab.config import eval_seed
    from trpo_lab.evaluate import episode_returns, load_agent

    cfg = Config()
    cfg.env.id = "CartPole-v1"
    t = cfg.trainer
    t.total_steps, t.steps_per_iter, t.eval_episodes, t.progress, t.eval_stochastic = 1024, 512, 3, False, True
    cfg.trpo.value_epochs = 2
    cfg.logger.wandb.mode = "disabled"
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir)
    run_cfg, agent, _ = load_agent(run_dir)
    seed = eval_seed(run_cfg.trainer)
    sampled = episode_returns(run_cfg, agent, 3, seed, stochastic=True)
    assert summary["eval_return"] == pytest.approx(sum(sampled) / 3, abs=1e-9)
    assert sampled != episode_returns(run_cfg, agent, 3, seed)  # the deterministic policy plays otherwise
    proc = run_cli(str(run_dir), "-n", "3", "--no-video", cwd=tmp_path, module="trpo_lab.evaluate", timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["policy"] == "stochastic" and result["return_mean"] == pytest.approx(summary["eval_return"])
    proc = run_cli(str(run_dir), "-n", "3", "--no-video", "--deterministic", cwd=tmp_path,
                   module="trpo_lab.evaluate", timeout=120)
    assert proc.returncode == 0 and json.loads((run_dir / "evaluation.json").read_text())["policy"] == "deterministic"
