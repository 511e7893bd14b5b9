"""The worker processes step exactly like the in-process vector env, and fail loudly."""
import os
import signal

import gymnasium as gym
import numpy as np
import pytest

import toy_envs  # registers the toy ids

from trpo_lab.config import EnvConfig
from trpo_lab.envs import EnvError
from trpo_lab.vec_env import SubprocVecEnv, SyncVecEnv, _worker_groups


def test_worker_groups_give_the_parent_the_first_share():
    assert _worker_groups(2, None if (os.cpu_count() or 1) >= 2 else 1) == [[0], [1]]
    assert _worker_groups(5, 1) == [[0, 1, 2], [3, 4]]
    assert _worker_groups(3, 8) == [[0], [1], [2]]  # no more workers than environments to share
    assert _worker_groups(1, None) == [[], [0]]


@pytest.mark.parametrize("env_id,n_envs,n_workers", [
    ("CartPole-v1", 2, None), ("Pendulum-v1", 2, None), ("CartPole-v1", 3, 1), ("Pendulum-v1", 3, 2),
    ("CartPole-v1", 1, None),
])
def test_subproc_vec_env_steps_like_sync(env_id, n_envs, n_workers):
    cfg = EnvConfig(id=env_id, max_episode_steps=30)  # short episodes: resets and truncations happen
    sync, subproc = SyncVecEnv(cfg, n_envs, seed=3), SubprocVecEnv(cfg, n_envs, seed=3, n_workers=n_workers)
    try:
        np.testing.assert_array_equal(sync.reset(), subproc.reset())
        rng = np.random.default_rng(0)
        for t in range(100):
            if env_id == "CartPole-v1":
                actions = rng.integers(0, 2, size=n_envs)
            else:
                actions = rng.uniform(-2, 2, size=(n_envs, 1))
            if t == 50:  # the exact-resume path: states out of one and into the other mid-episode
                subproc.set_state(sync.get_state())
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


def _random_actions(space, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(0, space.n, size=n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return rng.integers(0, space.nvec, size=(n, len(space.nvec)))
    return rng.integers(0, 2, size=(n, space.n))


PONG = EnvConfig(id="ALE/Pong-v5", kwargs={"frameskip": 1, "repeat_action_probability": 0.25}, preprocess="atari")


@pytest.mark.parametrize("cfg,steps", [
    (EnvConfig(id="toy_envs:ToyMultiDiscrete-v0"), 40), (EnvConfig(id="toy_envs:ToyMultiBinary-v0"), 40),
    (EnvConfig(id="toy_envs:ToyPixel-v0"), 40), (PONG, 30),
], ids=["multi_discrete", "multi_binary", "pixel", "pong"])
def test_subproc_vec_env_steps_like_sync_on_every_space(cfg, steps):
    """Images (uint8 in shared memory, as the environment gives them), MultiDiscrete and MultiBinary
    actions: the same observations, dtype included, rewards and episode ends, and environment
    states moved both ways between the two mid-run (10-step toy episodes: resets happen)."""
    if cfg.id.startswith("ALE/"):
        pytest.importorskip("ale_py")
        pytest.importorskip("cv2")
    n = 3
    sync, subproc = SyncVecEnv(cfg, n, seed=3), SubprocVecEnv(cfg, n, seed=3, n_workers=2)
    try:
        image = len(sync.observation_space.shape) > 1
        first = sync.reset()
        assert first.dtype == (np.uint8 if image else np.float64)
        np.testing.assert_array_equal(first, subproc.reset())
        assert subproc._shared["obs"].dtype == first.dtype
        rng, ended = np.random.default_rng(0), 0
        for t in range(steps):
            if t == steps // 3:
                subproc.set_state(sync.get_state())
            if t == 2 * steps // 3:
                sync.set_state(subproc.get_state())
            actions = _random_actions(sync.action_space, n, rng)
            a, b = sync.step(actions), subproc.step(actions)
            assert a.obs.dtype == b.obs.dtype == first.dtype
            for field in ("obs", "rewards", "terminated", "truncated"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert a.final_obs.keys() == b.final_obs.keys()
            for i in a.final_obs:
                assert a.final_obs[i].dtype == b.final_obs[i].dtype == first.dtype
                np.testing.assert_array_equal(a.final_obs[i], b.final_obs[i])
            assert a.episodes == b.episodes
            ended += len(a.final_obs)
        assert ended == (0 if cfg is PONG else n * (steps // toy_envs.LENGTH))  # resets happened
    finally:
        sync.close()
        subproc.close()


def test_an_error_in_a_worker_names_its_environments_and_the_error():
    venv = SubprocVecEnv(EnvConfig(id="nan_env:CrashOdd-v0"), 2, seed=0, n_workers=1)  # env 1: seed 1, in the worker
    try:
        venv.reset()
        with pytest.raises(EnvError, match=r"environments 1 failed in their worker: RuntimeError: crash on step 5"):
            for _ in range(10):
                venv.step(np.zeros(2, dtype=np.int64))
    finally:
        venv.close()
    assert not any(p.is_alive() for p in venv.processes)


def test_a_killed_worker_is_reported_not_waited_for():
    venv = SubprocVecEnv(EnvConfig(id="CartPole-v1"), 2, seed=0, n_workers=1)
    try:
        venv.reset()
        os.kill(venv.processes[0].pid, signal.SIGKILL)
        venv.processes[0].join()
        with pytest.raises(EnvError, match=r"worker process of environments 1 died \(exit code -9\)"):
            venv.step(np.zeros(2, dtype=np.int64))
    finally:
        venv.close()


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


def test_an_environment_that_cannot_be_built_in_a_worker_fails_the_construction():
    with pytest.raises(EnvError, match=r"environments 1 failed in their worker: .*CrashOnBuild"):
        SubprocVecEnv(EnvConfig(id="nan_env:CrashOnBuild-v0", kwargs={"build_pid": os.getpid()}), 2, seed=0,
                      n_workers=1)
