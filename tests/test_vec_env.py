"""The shared-memory worker processes step exactly like the in-process vector env."""
import numpy as np
import pytest

from trpo_lab.config import EnvConfig
from trpo_lab.envs import SubprocVecEnv, SyncVecEnv


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_subproc_vec_env_steps_like_sync(env_id):
    cfg = EnvConfig(id=env_id, max_episode_steps=30)  # short episodes: resets and truncations happen
    sync, subproc = SyncVecEnv(cfg, 2, seed=3), SubprocVecEnv(cfg, 2, seed=3)
    try:
        np.testing.assert_array_equal(sync.reset(), subproc.reset())
        rng = np.random.default_rng(0)
        for _ in range(100):
            if env_id == "CartPole-v1":
                actions = rng.integers(0, 2, size=2)
            else:
                actions = rng.uniform(-2, 2, size=(2, 1))
            a, b = sync.step(actions), subproc.step(actions)
            for field in ("obs", "rewards", "terminated", "truncated"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert a.final_obs.keys() == b.final_obs.keys()
            for i in a.final_obs:
                np.testing.assert_array_equal(a.final_obs[i], b.final_obs[i])
            assert a.episodes == b.episodes
    finally:
        sync.close()
        subproc.close()


def test_training_with_workers_gives_the_same_numbers(tmp_path):
    """The critic fit that overlaps the next collection (subproc) changes the order, not the numbers."""
    import json

    from trpo_lab.config import Config
    from trpo_lab.trainer import train

    rows = {}
    for kind in ("sync", "subproc"):
        cfg = Config(env=EnvConfig(id="CartPole-v1"))
        cfg.trainer.total_steps, cfg.trainer.steps_per_iter, cfg.trainer.vec_env = 7 * 256, 256, kind
        cfg.trainer.checkpoint_every, cfg.trainer.eval_every, cfg.trainer.eval_episodes = 3, 5, 2
        cfg.trainer.progress, cfg.logger.wandb.mode = False, "disabled"
        summary = train(cfg, tmp_path / kind)
        lines = (tmp_path / kind / "metrics.jsonl").read_text().splitlines()
        rows[kind] = [{k: v for k, v in json.loads(line).items() if "time" not in k and "per_s" not in k}
                      for line in lines]
        rows[kind].append(summary["eval_return"])
    assert [r["iteration"] for r in rows["subproc"][:-1]] == list(range(1, 8))
    assert rows["sync"] == rows["subproc"]
