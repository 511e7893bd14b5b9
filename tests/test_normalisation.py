"""Tier 1: running statistics and reward scaling against step-by-step references."""
import copy
from collections import deque

import numpy as np
import pytest

from trpo_lab.envs import ObsNormalizer, RewardScaler, RunningMeanStd, RunningNormalise


def test_running_mean_std_matches_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(50, 4, 3))
    rms = RunningMeanStd((3,))
    for batch in data:
        rms.update(batch)
    flat = data.reshape(-1, 3)
    np.testing.assert_allclose(rms.mean, flat.mean(0), rtol=1e-5)  # the 1e-4 prior count shifts it a little
    np.testing.assert_allclose(rms.var, flat.var(0), rtol=1e-4)


def test_update_each_equals_sequential_updates():
    rng = np.random.default_rng(1)
    data = rng.normal(40.0, 5.0, size=(30, 2))
    sequential, vectorised = RunningMeanStd(()), RunningMeanStd(())
    sequential.update(rng.normal(size=7))
    vectorised.load_state_dict(sequential.state_dict())
    expected = []
    for batch in data:
        sequential.update(batch)
        expected.append(float(sequential.var))
    np.testing.assert_allclose(vectorised.update_each(data), expected, rtol=1e-10)
    np.testing.assert_allclose(vectorised.mean, sequential.mean, rtol=1e-12)
    assert vectorised.count == sequential.count


def test_reward_scaler_equals_scaling_step_by_step():
    """The rollout-at-once scaler against sb3 VecNormalize's per-step recipe."""
    rng = np.random.default_rng(2)
    T, N, gamma, eps = 40, 2, 0.99, 1e-8
    rewards = rng.normal(1.0, 1.0, size=(2, T, N))
    ends = rng.random((2, T, N)) < 0.1
    scaler = RewardScaler(N, gamma)
    got = [scaler(rewards[k], ends[k]) for k in range(2)]  # two rollouts: state carries over

    returns, rms, expected = np.zeros(N), RunningMeanStd(()), []
    for k in range(2):
        for t in range(T):
            returns = returns * gamma + rewards[k, t]
            rms.update(returns)
            returns[ends[k, t]] = 0.0
            expected.append(np.clip(rewards[k, t] / np.sqrt(rms.var + eps), -10, 10))
    np.testing.assert_allclose(np.concatenate(got), np.array(expected), rtol=1e-9)
    np.testing.assert_allclose(scaler.returns, returns)


@pytest.mark.parametrize("enabled", [True, False])
def test_running_normalise_equals_updating_step_by_step(enabled):
    """An environment's normalisation within a rollout: its anchored sums against the
    normaliser updated with one observation at a time, and the normaliser itself untouched."""
    rng = np.random.default_rng(3)
    start = ObsNormalizer((5,), enabled=enabled)
    start.update(rng.normal(48.0, 3.0, size=(20, 5)))
    before = start.state_dict()
    reference = copy.deepcopy(start)
    stream = RunningNormalise(start)
    data = rng.normal(50.0, 4.0, size=(60, 5))
    data[7, 2] = 900.0  # an outlier the clip must cut
    for x in data:
        reference.update(x[None])
        got = stream.step(x, np.empty(5))
        np.testing.assert_allclose(got, reference(x[None])[0], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stream.normalise(x + 1.0, np.empty(5)), reference((x + 1.0)[None])[0],
                                   rtol=1e-9, atol=1e-9)
    assert all(np.array_equal(before[k], v) for k, v in start.state_dict().items())
    assert (np.abs(stream.normalise(data[7], np.empty(5))).max() <= 10.0) == enabled


def test_each_environment_normalises_with_its_own_observations_then_all_join(tmp_path):
    """Within a rollout, environment i's observation at step t is normalised with the statistics
    from before the rollout plus environment i's observations up to t; after it, the statistics
    take in every environment's observations."""
    from trpo_lab.config import Config, EnvConfig
    from trpo_lab.envs import make_vec_env
    from trpo_lab.trainer import Rollout, build_agent, collect

    cfg = Config(env=EnvConfig(id="Pendulum-v1"))
    venv = make_vec_env(cfg.env, 2, 0, 64)
    agent = build_agent(cfg, venv.observation_space, venv.action_space)
    rollout = Rollout.allocate(64, 2, 3, venv.action_space)
    rng, obs = np.random.default_rng(0), venv.reset()
    for _ in range(3):
        before = copy.deepcopy(agent.obs_norm)
        next_obs = collect(venv, agent, agent.policy.numpy_actor(), obs, rollout, rng, deque())
        raw = venv.segment.obs.copy()
        np.testing.assert_array_equal(raw[0], obs)
        for i in range(2):
            own = copy.deepcopy(before)
            for t in range(64):
                own.update(raw[t, i][None])
                np.testing.assert_allclose(rollout.obs[t, i], own(raw[t, i][None])[0], rtol=1e-5, atol=1e-5)
        before.update(raw)
        np.testing.assert_array_equal(agent.obs_norm.rms.mean, before.rms.mean)
        np.testing.assert_array_equal(agent.obs_norm.rms.var, before.rms.var)
        obs = next_obs
    venv.close()
