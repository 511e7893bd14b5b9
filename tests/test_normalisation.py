"""Tier 1: running statistics and reward scaling against step-by-step references."""
import numpy as np

import pytest

from trpo_lab.normalisation import ObsNormalizer, RewardScaler, RunningMeanStd


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
def test_rollout_normalizer_equals_updating_step_by_step(enabled):
    """The per-step sums of the collection loop against ObsNormalizer(obs, update=True) per step."""
    rng = np.random.default_rng(3)
    data = rng.normal(50.0, 4.0, size=(3, 30, 2, 5))  # 3 rollouts of 30 steps, 2 envs, 5 dims
    data[1, 7, 0, 2] = 900.0                          # an outlier the clip must cut
    reference, fast = ObsNormalizer((5,), enabled=enabled), ObsNormalizer((5,), enabled=enabled)
    for rollout in data:
        session = fast.rollout()
        for obs in rollout:
            expected = reference(obs, update=True)
            got = session.step(obs, out=np.empty((2, 5), dtype=np.float32))
            np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)  # float32 out
            np.testing.assert_allclose(session.normalise(obs[:1]), reference(obs[:1]), rtol=1e-9, atol=1e-9)
        session.finish()
        np.testing.assert_allclose(fast.rms.mean, reference.rms.mean, rtol=1e-12)
        np.testing.assert_allclose(fast.rms.var, reference.rms.var, rtol=1e-9)
        assert fast.rms.count == reference.rms.count
    assert (np.abs(fast(data[1, 7])).max() <= 10.0) == enabled  # disabled: observations pass as they are
