"""Tier 1: running statistics and reward scaling against step-by-step references."""
from collections import deque

import numpy as np
import pytest

from trpo_lab.envs import ObsNormalizer, RewardScaler, RunningMeanStd


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
def test_normalisation_is_fixed_for_a_rollout_and_updated_after_it(enabled):
    """Each rollout is normalised with the statistics of the rollouts before it, row by row
    (as collection does) exactly as in one batch; then its observations join the statistics."""
    rng = np.random.default_rng(3)
    data = rng.normal(50.0, 4.0, size=(3, 30, 2, 5))  # 3 rollouts of 30 steps, 2 envs, 5 dims
    data[1, 7, 0, 2] = 900.0                          # an outlier the clip must cut
    norm, reference = ObsNormalizer((5,), enabled=enabled), RunningMeanStd((5,))
    for rollout in data:
        normalise = norm.frozen()
        batch = normalise(rollout)
        if enabled:
            expected = np.clip((rollout - reference.mean) / np.sqrt(reference.var + 1e-8), -10.0, 10.0)
            np.testing.assert_allclose(batch, expected, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_array_equal(batch, rollout)
        row = np.empty((1, 5))
        for t, i in np.ndindex(30, 2):
            np.testing.assert_array_equal(normalise(rollout[t, i], row)[0], batch[t, i])
        norm.update(rollout)
        reference.update(rollout.reshape(-1, 5))
        if enabled:
            np.testing.assert_array_equal(norm.rms.mean, reference.mean)
            np.testing.assert_array_equal(norm.rms.var, reference.var)
        else:
            assert norm.rms.count == 1e-4  # nothing learned
    assert (np.abs(norm(data[1, 7])).max() <= 10.0) == enabled  # disabled: observations pass as they are


def test_the_trainer_normalises_a_rollout_with_the_statistics_from_before_it(tmp_path):
    """The stored observations are the raw ones normalised with the statistics at the rollout's
    start; after it, the statistics are those of every observation collected so far."""
    from trpo_lab.config import Config, EnvConfig
    from trpo_lab.envs import make_vec_env
    from trpo_lab.trainer import Rollout, build_agent, collect

    cfg = Config(env=EnvConfig(id="Pendulum-v1"))
    venv = make_vec_env(cfg.env, 2, 0, 64)
    agent = build_agent(cfg, venv.observation_space, venv.action_space)
    rollout = Rollout.allocate(64, 2, 3, venv.action_space)
    rng, obs, seen = np.random.default_rng(0), venv.reset(), RunningMeanStd((3,))
    for _ in range(3):
        mean, std = seen.mean.copy(), np.sqrt(seen.var + 1e-8)
        next_obs = collect(venv, agent, agent.policy.numpy_actor(), obs, rollout, rng, deque())
        raw = venv.segment.obs
        np.testing.assert_array_equal(raw[0], obs)
        np.testing.assert_allclose(rollout.obs, np.clip((raw - mean) / std, -10, 10), rtol=1e-6, atol=1e-6)
        seen.update(raw.reshape(-1, 3))
        np.testing.assert_array_equal(agent.obs_norm.rms.mean, seen.mean)
        obs = next_obs
    venv.close()
