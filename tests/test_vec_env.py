"""The worker processes step exactly like the in-process vector env, and fail loudly."""
import os
import signal

import numpy as np
import pytest

from conftest import segment_copy, small_actor
from trpo_lab.config import EnvConfig
from trpo_lab.envs import EnvError, SubprocVecEnv, SyncVecEnv, _worker_groups, make_env


def test_worker_groups_give_the_parent_the_first_share():
    assert _worker_groups(2, None if (os.cpu_count() or 1) >= 2 else 1) == [[0], [1]]
    assert _worker_groups(5, 1) == [[0, 1, 2], [3, 4]]
    assert _worker_groups(3, 8) == [[0], [1], [2]]  # no more workers than environments to share
    assert _worker_groups(1, None) == [[], [0]]


@pytest.mark.parametrize("env_id,n_envs,n_workers", [
    ("CartPole-v1", 2, None), ("Pendulum-v1", 2, None), ("CartPole-v1", 3, 1), ("Pendulum-v1", 3, 2),
    ("CartPole-v1", 1, None),
])
def test_subproc_vec_env_collects_like_sync(env_id, n_envs, n_workers):
    cfg = EnvConfig(id=env_id, max_episode_steps=30)  # short episodes: resets and truncations happen
    steps = 50
    sync, subproc = SyncVecEnv(cfg, n_envs, 3, steps), SubprocVecEnv(cfg, n_envs, 3, steps, n_workers=n_workers)
    try:
        actor, normalise = small_actor(sync)
        obs = sync.reset()
        np.testing.assert_array_equal(obs, subproc.reset())
        rng = np.random.default_rng(0)
        for k in range(3):
            if k == 2:  # the exact-resume path: states out of one and into the other mid-episode
                subproc.set_state(sync.get_state())
            noise, _ = actor.noise(rng, steps, n_envs)
            a = segment_copy(sync.collect(actor, normalise, noise, obs))
            b = segment_copy(subproc.collect(actor, normalise, noise, obs))
            assert a.pop("episodes") == b.pop("episodes")
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
            assert (a["terminated"] | a["truncated"]).any(axis=0).all()  # every env ended an episode
            obs = a["next_obs"]
    finally:
        sync.close()
        subproc.close()


def test_a_rollout_is_what_acting_step_by_step_gives():
    """Collection against a plain loop: normalise, act, clip, step, reset at an episode end."""
    cfg = EnvConfig(id="Pendulum-v1", max_episode_steps=20)
    venv = SyncVecEnv(cfg, 2, 5, 45)
    actor, normalise = small_actor(venv)
    noise, _ = actor.noise(np.random.default_rng(1), 45, 2)
    obs = venv.reset()
    segment = venv.collect(actor, normalise, noise, obs)
    envs = [make_env(cfg) for _ in range(2)]
    for i, env in enumerate(envs):
        x, _ = env.reset(seed=5 + i)
        returns, finished = 0.0, []
        for t in range(45):
            np.testing.assert_array_equal(segment.obs[t, i], x)
            action = actor.forward(normalise(np.asarray(x, dtype=np.float64)[None]))[0] + noise[t, i]
            np.testing.assert_array_equal(segment.actions[t, i], action)
            x, reward, terminated, truncated, _ = env.step(np.clip(action, -2.0, 2.0))
            assert segment.rewards[t, i] == reward and segment.truncated[t, i] == truncated
            returns += reward
            if terminated or truncated:
                np.testing.assert_array_equal(segment.final_obs[t, i], x)
                finished.append((returns, 20))
                returns, (x, _) = 0.0, env.reset()
        np.testing.assert_array_equal(segment.next_obs[i], x)
        assert finished == [segment.episodes[2 * k + i] for k in range(2)]  # steps 19 and 39, env 0 then 1
    venv.close()


def test_an_error_in_a_worker_names_its_environments_and_the_error():
    venv = SubprocVecEnv(EnvConfig(id="nan_env:CrashOdd-v0"), 2, 0, 10, n_workers=1)  # env 1: seed 1, in the worker
    try:
        actor, normalise = small_actor(venv)
        obs = venv.reset()
        with pytest.raises(EnvError, match=r"environments 1 failed in their worker: RuntimeError: crash on step 5"):
            venv.collect(actor, normalise, actor.noise(np.random.default_rng(0), 10, 2)[0], obs)
    finally:
        venv.close()
    assert not any(p.is_alive() for p in venv.processes)


def test_a_killed_worker_is_reported_not_waited_for():
    venv = SubprocVecEnv(EnvConfig(id="CartPole-v1"), 2, 0, 10, n_workers=1)
    try:
        actor, normalise = small_actor(venv)
        obs = venv.reset()
        os.kill(venv.processes[0].pid, signal.SIGKILL)
        venv.processes[0].join()
        with pytest.raises(EnvError, match=r"worker process of environments 1 died \(exit code -9\)"):
            venv.collect(actor, normalise, actor.noise(np.random.default_rng(0), 10, 2)[0], obs)
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
        SubprocVecEnv(EnvConfig(id="nan_env:CrashOnBuild-v0", kwargs={"build_pid": os.getpid()}), 2, 0, 10,
                      n_workers=1)
