"""The numpy actor that collects is the torch policy that is updated: same outputs, same log-probabilities."""
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch

from trpo_lab.policies import make_policy


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
def test_gaussian_actions_and_log_probs_are_the_policys(activation):
    torch.manual_seed(0)
    policy = make_policy(5, gym.spaces.Box(-1, 1, (3,)), [16, 16], activation, -0.3, True)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.0, 0.4]))
    actor = pickle.loads(pickle.dumps(policy.numpy_actor()))  # as a worker process receives it
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(20, 5))
    noise, logp = actor.noise(rng, 20, 1)
    actions = np.array([actor.act(o, n[0])[0].copy() for o, n in zip(obs, noise)])
    with torch.no_grad():
        mean = policy.dist_params(torch.from_numpy(obs).float())[0].numpy()
        expected = policy.log_prob(torch.from_numpy(obs).float(), torch.from_numpy(actions).float()).numpy()
    np.testing.assert_allclose(actions - noise[:, 0], mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logp[:, 0], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(actor.deterministic(obs), mean, rtol=1e-6, atol=1e-6)


def test_categorical_actions_follow_the_policys_probabilities():
    torch.manual_seed(0)
    policy = make_policy(4, gym.spaces.Discrete(3), [16], "tanh", 0.0, False)
    actor = pickle.loads(pickle.dumps(policy.numpy_actor()))
    rng = np.random.default_rng(2)
    obs = rng.normal(size=4)
    noise, logp = actor.noise(rng, 20000, 1)
    assert logp is None
    draws = [actor.act(obs, n[0]) for n in noise]
    with torch.no_grad():
        probs = torch.softmax(policy.dist_params(torch.from_numpy(obs[None]).float())[0], -1).numpy()[0]
        expected = policy.log_prob(torch.from_numpy(obs[None]).float().repeat(3, 1), torch.arange(3)).numpy()
    for a in range(3):
        np.testing.assert_allclose([lp for b, lp in draws if b == a][0], expected[a], rtol=1e-6)
    counts = np.bincount([a for a, _ in draws], minlength=3) / len(draws)
    np.testing.assert_allclose(counts, probs, atol=0.015)  # 20,000 draws: standard error < 0.004
    assert actor.deterministic(obs[None])[0] == probs.argmax()
