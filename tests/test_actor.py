"""The numpy actor that collects is the torch policy that is updated: same actions, same log-probabilities.

Collection stores the actor's log-probabilities as log beta(a|s), the
denominator of the surrogate's importance ratio (docs/design.md); if they drifted
from the torch policy's log pi(a|s), the first ratio of every update would be
wrong while the learning tests might still pass.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from trpo_lab.policies import make_policy


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float()


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
def test_gaussian_actions_and_log_probs_are_the_policys(activation):
    torch.manual_seed(0)
    policy = make_policy(5, gym.spaces.Box(-1, 1, (3,)), [16, 16], activation, -0.3, True)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.0, 0.4]))
        for p in policy.net.parameters():  # out of the near-zero initial output, so the mean matters
            p.add_(0.3 * torch.randn_like(p))
    actor = policy.numpy_actor()
    rng = np.random.default_rng(1)
    steps, n = 7, 2
    obs = rng.normal(size=(steps, n, 5))
    noise, logp = actor.noise(rng, steps, n)
    assert noise.shape == (steps, n, 3) and logp.shape == (steps, n)
    actions = np.stack([actor.sample(obs[t], noise[t])[0].copy() for t in range(steps)])

    flat_obs, flat_actions = obs.reshape(-1, 5), actions.reshape(-1, 3)
    with torch.no_grad():
        mean = policy.dist_params(_torch(flat_obs))[0].numpy()
        expected = policy.log_prob(_torch(flat_obs), _torch(flat_actions)).numpy()
    assert np.abs(mean).max() > 0.1
    np.testing.assert_allclose(flat_actions - noise.reshape(-1, 3), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logp.reshape(-1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(actor.deterministic(flat_obs), mean, rtol=1e-5, atol=1e-5)


def test_gaussian_noise_has_the_policys_spread():
    policy = make_policy(2, gym.spaces.Box(-1, 1, (2,)), [8], "tanh", 0.0, True)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-1.0, 0.5]))
    noise, _ = policy.numpy_actor().noise(np.random.default_rng(0), 20000, 1)
    np.testing.assert_allclose(noise.reshape(-1, 2).std(0), np.exp([-1.0, 0.5]), rtol=0.03)
    np.testing.assert_allclose(noise.reshape(-1, 2).mean(0), 0.0, atol=0.05)


def test_categorical_actions_follow_the_policys_probabilities():
    torch.manual_seed(0)
    policy = make_policy(4, gym.spaces.Discrete(3), [16], "tanh", 0.0, False)
    with torch.no_grad():
        policy.net[-1].weight.mul_(5.0)  # unequal probabilities, so a wrong mapping shows
    actor = policy.numpy_actor()
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(1, 4))
    noise, logp = actor.noise(rng, 20000, 1)
    assert logp is None
    draws = [actor.sample(obs, noise[t]) for t in range(len(noise))]
    actions = np.array([int(a[0]) for a, _ in draws])
    with torch.no_grad():
        probs = torch.softmax(policy.dist_params(_torch(obs))[0], -1).numpy()[0]
        expected = policy.log_prob(_torch(obs).repeat(3, 1), torch.arange(3)).numpy()
    assert probs.max() - probs.min() > 0.1
    for (a, lp) in draws[:50]:
        np.testing.assert_allclose(lp[0], expected[a[0]], rtol=1e-5)
    counts = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(counts, probs, atol=0.015)  # 20,000 draws: standard error < 0.004
    assert actor.deterministic(obs)[0] == probs.argmax()


MULTI = {"multi_categorical": gym.spaces.MultiDiscrete([3, 2, 4]), "bernoulli": gym.spaces.MultiBinary(3)}


def _multi_policy(dist: str, activation: str, obs_dim: int = 5):
    torch.manual_seed(0)
    policy = make_policy(obs_dim, MULTI[dist], [16, 16], activation, 0.0, True)
    with torch.no_grad():  # out of the near-zero initial logits, so unequal probabilities show
        for p in policy.net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return policy


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
@pytest.mark.parametrize("dist", list(MULTI))
def test_multi_discrete_and_binary_log_probs_are_the_policys(dist, activation):
    policy = _multi_policy(dist, activation)
    actor = policy.numpy_actor()
    rng = np.random.default_rng(1)
    steps, n = 7, 3
    obs = rng.normal(size=(steps, n, 5))
    noise, logp = actor.noise(rng, steps, n)
    assert noise.shape == (steps, n, 3) and logp is None
    draws = [actor.sample(obs[t], noise[t]) for t in range(steps)]
    actions = np.stack([a for a, _ in draws]).reshape(-1, 3)
    logps = np.stack([lp for _, lp in draws]).reshape(-1)
    assert actions.dtype == np.int64 and all(MULTI[dist].contains(a) for a in actions)
    flat_obs = obs.reshape(-1, 5)
    with torch.no_grad():
        expected = policy.log_prob(_torch(flat_obs), torch.from_numpy(actions)).numpy()
        mode = policy.mode(_torch(flat_obs)).numpy()
    assert len(np.unique(logps.round(3))) > 3  # the log-probs depend on the state and the action
    np.testing.assert_allclose(logps, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(actor.deterministic(flat_obs), mode)


@pytest.mark.parametrize("dist", list(MULTI))
def test_multi_discrete_and_binary_actions_follow_the_policys_probabilities(dist):
    """Each dimension's empirical frequencies over 20,000 draws against the torch policy's marginals."""
    policy = _multi_policy(dist, "tanh")
    actor = policy.numpy_actor()
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(1, 5))
    noise, _ = actor.noise(rng, 20000, 1)
    actions = np.stack([actor.sample(obs, noise[t])[0][0] for t in range(len(noise))])
    with torch.no_grad():
        (params,) = policy.dist_params(_torch(obs))
    if dist == "bernoulli":
        marginals = [np.array([1.0 - p, p]) for p in torch.sigmoid(params[0]).numpy()]
    else:
        marginals = [s.exp().numpy() for s in torch.split(params[0], policy.nvec)]
    assert max(p.max() - p.min() for p in marginals) > 0.1
    for j, probs in enumerate(marginals):
        counts = np.bincount(actions[:, j], minlength=len(probs)) / len(actions)
        np.testing.assert_allclose(counts, probs, atol=0.015)  # standard error < 0.004
