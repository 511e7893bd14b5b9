"""Tier 4: learning, determinism, and every ending leaving a summary."""
import json

import pytest

from conftest import read_jsonl
from trpo_lab import metrics as M
from trpo_lab.config import Config, EnvConfig, LoggerConfig, TrainerConfig, TRPOConfig, WandbConfig
from trpo_lab.trainer import DivergedError, train

NO_WANDB = LoggerConfig(wandb=WandbConfig(mode="disabled"))


def _cfg(env_id="CartPole-v1", **trainer) -> Config:
    base = dict(total_steps=2048, steps_per_iter=512, eval_episodes=2, progress=False)
    base.update(trainer)
    return Config(env=EnvConfig(id=env_id), trainer=TrainerConfig(**base), logger=NO_WANDB)


def _strip_times(rows):
    return [{k: v for k, v in r.items() if k not in (M.WALL_TIME, M.STEPS_PER_S)} for r in rows]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train(_cfg("Pendulum-v1", seed=seed, eval_every=2), tmp_path / name)
    a, b, c = (_strip_times(read_jsonl(tmp_path / n / "metrics.jsonl")) for n in "abc")
    assert a == b
    assert a != c


def test_subproc_and_sync_give_the_same_numbers(tmp_path):
    train(_cfg("Pendulum-v1", seed=1, vec_env="sync"), tmp_path / "sync")
    train(_cfg("Pendulum-v1", seed=1, vec_env="subproc"), tmp_path / "subproc")
    assert (_strip_times(read_jsonl(tmp_path / "sync" / "metrics.jsonl"))
            == _strip_times(read_jsonl(tmp_path / "subproc" / "metrics.jsonl")))


def test_diverging_environment_ends_failed_with_reason_in_summary(tmp_path):
    with pytest.raises(DivergedError):
        train(_cfg("nan_env:NaNReward-v0", n_envs=1), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "non-finite" in summary["error"]


def test_eval_hook_prunes_and_summary_says_so(tmp_path):
    seen = []

    def on_eval(env_steps, value):
        seen.append(env_steps)
        return True

    summary = train(_cfg(eval_every=1), tmp_path, on_eval=on_eval)
    assert seen == [512]
    assert summary["status"] == "pruned" and summary["env_steps"] == 512
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "pruned"
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 1


@pytest.mark.slow
def test_cartpole_reaches_475(tmp_path):
    cfg = _cfg(total_steps=40_960, steps_per_iter=2048, n_envs=2, eval_every=0, eval_episodes=10)
    summary = train(cfg, tmp_path)
    assert summary["eval_return"] >= 475, summary


@pytest.mark.slow
def test_pendulum_improves_clearly(tmp_path):
    cfg = _cfg("Pendulum-v1", total_steps=102_400, steps_per_iter=2048, n_envs=2, eval_every=0,
               eval_episodes=10)
    cfg.trpo = TRPOConfig(delta=0.02, gamma=0.95)
    train(cfg, tmp_path)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    first, last = rows[0][M.EP_RETURN], rows[-1][M.EP_RETURN]
    # A random Pendulum policy scores about -1200; "clearly" means several hundred better.
    assert last > first + 400, (first, last)
