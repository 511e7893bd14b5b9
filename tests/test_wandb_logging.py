"""wandb as its users expect: shared group per multirun, descriptive names, flat config,
summary with final/best evaluation and steps/s, trust-region metrics charted against env steps."""
from __future__ import annotations

import sys
import types

from conftest import read_jsonl, run_cli
from trpo_lab import metrics as M
from trpo_lab.config import Config
from trpo_lab.loggers import run_identity, setting_overrides


def test_setting_overrides_drop_seed_and_bookkeeping():
    assert setting_overrides(["env=hopper", "trpo.delta=0.02", "trainer.seed=3", "logger=none",
                              "hydra.run.dir=x", "trainer.resume=auto", "env.max_episode_steps=50",
                              "+sweep=trust_region"]) == ["trpo.delta=0.02", "env.max_episode_steps=50"]


def test_name_outside_hydra_is_env_and_seed():
    cfg = Config()
    cfg.env.id, cfg.trainer.seed = "Hopper-v5", 4
    assert run_identity(cfg) == (None, "Hopper-v5 seed=4")
    cfg.logger.wandb.group, cfg.logger.wandb.name = "mine", "named"
    assert run_identity(cfg) == ("mine", "named")


class _FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.id = "fake123"
        self.rows, self.metrics, self.summary, self.exit_code = [], [], {}, None

    def define_metric(self, name, **kwargs):
        self.metrics.append((name, kwargs))

    def log(self, row):
        self.rows.append(dict(row))

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def test_what_reaches_wandb(tmp_path, monkeypatch):
    runs = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    from trpo_lab.trainer import train

    cfg = Config()
    cfg.env.id = "CartPole-v1"
    t = cfg.trainer
    t.total_steps, t.steps_per_iter, t.eval_every, t.eval_episodes, t.progress = 1536, 512, 1, 1, False
    cfg.trpo.delta, cfg.trpo.value_epochs = 0.02, 1
    train(cfg, tmp_path)
    (run,) = runs
    assert run.init["config"]["trpo.delta"] == 0.02  # flat, filterable columns
    assert run.init["name"] == "CartPole-v1 seed=0" and run.init["mode"] == "offline"
    assert all(M.KL in r and r[M.KL_LIMIT] == 0.02 and M.LINE_SEARCH_STEPS in r for r in run.rows)
    assert ("*", {"step_metric": M.ENV_STEPS}) in run.metrics
    for key in ("eval_return", "best_eval_return", "steps_per_s", "status"):
        assert key in run.summary
    assert run.exit_code == 0
    assert read_jsonl(tmp_path / "metrics.jsonl")[0][M.KL_LIMIT] == 0.02  # the same names locally


def test_multirun_jobs_share_a_group_and_are_named_by_swept_values(tmp_path):
    sweep = tmp_path / "multirun" / "delta-sweep"
    proc = run_cli("-m", "env=cartpole", "trainer.total_steps=512", "trainer.steps_per_iter=512",
                   "trainer.eval_episodes=1", "trpo.value_epochs=1", "logger.wandb.mode=offline",
                   "trpo.delta=0.01,0.03", "trainer.seed=7", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # wandb 0.2x+ writes runs in a binary log without a Python reader; the strings are plain in it.
    for job, delta in (("0", "0.01"), ("1", "0.03")):
        (log,) = (sweep / job / "wandb").glob("offline-run-*/run-*.wandb")
        data = log.read_bytes()
        assert f"CartPole-v1 delta={delta} seed=7".encode() in data  # swept value only, not total_steps
        assert b"delta-sweep" in data  # the group
        assert b"trpo.delta" in data
