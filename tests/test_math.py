"""Tier 1: the TRPO mathematics against answers worked out independently."""
import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from conftest import explicit_kl_hessian
from trpo_lab.config import TRPOConfig
from trpo_lab.policies import CategoricalPolicy, GaussianPolicy
from trpo_lab.trpo import Batch, conjugate_gradient, fisher_vector_product, gae, line_search, mean_kl, trpo_update


def _policies():
    torch.manual_seed(0)
    return [
        GaussianPolicy(3, 2, [5, 4], "tanh", log_std_init=-0.3).double(),
        CategoricalPolicy(3, 4, [5], "relu", ortho_init=False).double(),
    ]


def _every_activation():
    """Each activation in both policy families (elu and silu have non-trivial derivatives)."""
    from trpo_lab.activations import NAMES as ACTIVATIONS

    torch.manual_seed(3)
    cases = []
    for act in ACTIVATIONS:
        cases.append(pytest.param(GaussianPolicy(3, 2, [5, 4], act, log_std_init=-0.3).double(), id=f"gaussian-{act}"))
        cases.append(pytest.param(CategoricalPolicy(3, 4, [5], act, ortho_init=False).double(), id=f"categorical-{act}"))
    return cases


@pytest.mark.parametrize("policy", _every_activation())
def test_fisher_vector_product_matchesexplicit_kl_hessian(policy):
    obs = torch.randn(9, 3, dtype=torch.float64)
    H = explicit_kl_hessian(policy, obs)
    fvp = fisher_vector_product(policy, obs, damping=0.0)
    F = torch.stack([fvp(e) for e in torch.eye(H.shape[0], dtype=torch.float64)])
    assert torch.allclose(F, H, atol=1e-10), (F - H).abs().max()
    damped = fisher_vector_product(policy, obs, damping=0.1)
    v = torch.randn(H.shape[0], dtype=torch.float64)
    assert torch.allclose(damped(v), H @ v + 0.1 * v, atol=1e-10)


def test_gaussian_fisher_log_std_block_is_two():
    policy = _policies()[0]
    obs = torch.randn(4, 3, dtype=torch.float64)
    fvp = fisher_vector_product(policy, obs, damping=0.0)
    names = [n for n, _ in policy.named_parameters()]
    offset = sum(p.numel() for n, p in policy.named_parameters() if names.index(n) < names.index("log_std"))
    e = torch.zeros(sum(p.numel() for p in policy.parameters()), dtype=torch.float64)
    e[offset] = 1.0
    assert fvp(e)[offset].item() == pytest.approx(2.0)


@pytest.mark.parametrize("policy", _policies(), ids=["gaussian", "categorical"])
def test_kl_of_policy_with_itself_is_zero(policy):
    obs = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        old = policy.dist_params(obs)
        assert mean_kl(policy, obs, old).item() == pytest.approx(0.0, abs=1e-12)
        vector_to_parameters(parameters_to_vector(policy.parameters()) + 0.1, policy.parameters())
        assert mean_kl(policy, obs, old).item() > 1e-6


def test_gaussian_kl_matches_closed_form_one_dimension():
    policy = GaussianPolicy(1, 1, [2], "tanh").double()
    obs = torch.zeros(1, 1, dtype=torch.float64)
    with torch.no_grad():
        mean_old, log_std_old = (t.clone() for t in policy.dist_params(obs))
        policy.log_std.fill_(np.log(2.0))
        policy.net[-1].bias.add_(1.5)
        mu0, s0 = mean_old.item(), np.exp(log_std_old.item())
        mu1, s1 = policy.dist_params(obs)[0].item(), 2.0
        expected = np.log(s1 / s0) + (s0**2 + (mu0 - mu1) ** 2) / (2 * s1**2) - 0.5
        assert mean_kl(policy, obs, (mean_old, log_std_old)).item() == pytest.approx(expected)


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    A = A @ A.T + 6 * np.eye(6)
    b = rng.standard_normal(6)
    At, bt = torch.tensor(A), torch.tensor(b)
    x, residual = conjugate_gradient(lambda v: At @ v, bt, iters=6)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    assert residual < 1e-6
    x_few, residual_few = conjugate_gradient(lambda v: At @ v, bt, iters=1)
    assert residual_few > residual  # one iteration is not a solve


def test_gae_by_hand_with_termination_and_truncation():
    # One environment, 4 steps: an episode truncated by a time limit at t=1
    # (bootstrapped with V(s_final)=10), then one that terminates at t=3.
    gamma, lam = 0.9, 0.5
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    values = np.array([[0.5], [1.0], [1.5], [2.0]])
    next_values = np.array([[1.0], [10.0], [2.0], [0.0]])
    ends = np.array([[0.0], [1.0], [0.0], [1.0]])
    adv = gae(rewards, values, next_values, ends, gamma, lam)
    d3 = 4.0 + 0.0 - 2.0
    d2 = 3.0 + 0.9 * 2.0 - 1.5
    d1 = 2.0 + 0.9 * 10.0 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = [d0 + 0.45 * d1, d1, d2 + 0.45 * d3, d3]
    np.testing.assert_allclose(adv[:, 0], expected)


def test_gae_lambda_one_gives_discounted_return_minus_value():
    rewards = np.ones((5, 2))
    values = np.zeros((5, 2))
    next_values = np.zeros((5, 2))
    ends = np.zeros((5, 2))
    ends[-1] = 1.0
    adv = gae(rewards, values, next_values, ends, gamma=0.5, lam=1.0)
    np.testing.assert_allclose(adv[0], [1 + 0.5 + 0.25 + 0.125 + 0.0625] * 2)


def test_line_search_restores_old_parameters_when_no_step_passes():
    policy = _policies()[0]
    before = parameters_to_vector(policy.parameters()).detach().clone()
    step = torch.ones_like(before)
    result = line_search(policy, step, evaluate=lambda: (0.0, 1.0), surrogate_before=0.0,
                         max_kl=0.01, backtrack_iters=5, backtrack_coeff=0.5)
    assert not result.accepted and result.steps == 5
    assert torch.equal(parameters_to_vector(policy.parameters()), before)


def test_line_search_rejects_non_finite_and_takes_first_acceptable():
    policy = _policies()[0]
    before = parameters_to_vector(policy.parameters()).detach().clone()
    outcomes = iter([(float("nan"), 0.0), (1.0, 0.5), (0.5, 0.001)])
    result = line_search(policy, torch.ones_like(before), evaluate=lambda: next(outcomes),
                         surrogate_before=0.0, max_kl=0.01, backtrack_iters=5, backtrack_coeff=0.5)
    assert result.accepted and result.steps == 3 and result.step_fraction == 0.25
    assert torch.allclose(parameters_to_vector(policy.parameters()), before + 0.25)


def test_trpo_update_respects_trust_region_and_improves_surrogate():
    torch.manual_seed(1)
    policy = GaussianPolicy(4, 2, [16], "tanh")
    obs = torch.randn(256, 4)
    with torch.no_grad():
        actions = policy.dist_params(obs)[0] + torch.randn(256, 2)
        logp = policy.log_prob(obs, actions)
    advantages = actions[:, 0] - actions[:, 1]  # prefer a larger first action
    settings = TRPOConfig(delta=0.01, cg_iters=10, cg_damping=0.1, backtrack_iters=10, backtrack_coeff=0.8)
    stats = trpo_update(policy, Batch(obs, actions, logp, advantages), settings)
    assert stats.line_search_success
    assert 0 < stats.kl <= 0.01
    assert stats.surrogate_gain > 0
    # The quadratic model is good here: the full step is accepted, close to the bound.
    assert stats.line_search_steps == 1 and stats.kl > 0.005
