"""The TRPO mathematics as small pure functions (Schulman et al. 2015, "TRPO").

Read next to the paper:
    gae                     Schulman et al. 2016, eq. (16), with time-limit bootstrapping
    surrogate               TRPO eq. (14): E[pi_theta(a|s) / beta(a|s) * A_hat]
    off_policy_terms        which denominator and weights the surrogate uses when beta != pi_old
    importance_weights      the weights pi_old / beta of a batch: largest, effective sample size
    mean_kl                 TRPO eq. (12): E_s[KL(pi_old(.|s) || pi_theta(.|s))]
    fisher_vector_product   TRPO appendix C: v -> F v, with F = E_s[J^T M J]
    fisher_subsample        the states F averages over (all, or a fixed-stride subsample)
    conjugate_gradient      TRPO appendix C: solve F x = g without forming F
    line_search             TRPO appendix C: backtrack from sqrt(2 delta / x^T F x) x
    trpo_update             one policy update, returning a typed stats record

Nothing here logs or imports a logger: callers get `UpdateStats` back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from trpo_lab.config import TRPOConfig
from trpo_lab.policies import Policy


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    episode_ends: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """Generalised advantage estimates, float32 array of shape [T, N].

    All inputs have shape [T, N] (T steps of N environments).
    `next_values[t]` is V(s_{t+1}): the next state's value while the episode goes
    on, V(s_final) of the last observation when a time limit cut the episode
    (bootstrapping), and 0 when the episode truly terminated.
    `episode_ends[t]` is 1 where an episode ended at step t for either reason:
    the lambda-trace stops there.

        delta_t = r_t + gamma * next_values[t] - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - episode_ends[t]) * A_{t+1}
    """
    deltas = rewards + gamma * next_values - values
    carry = gamma * lam * (1.0 - episode_ends)
    advantages = np.empty_like(deltas)
    running = np.zeros(deltas.shape[1], dtype=deltas.dtype)
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    return advantages


def surrogate(policy: Policy, obs: torch.Tensor, actions: torch.Tensor, denominator_logp: torch.Tensor,
              advantages: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Importance-sampled surrogate E[w * pi_theta(a|s) / q(a|s) * A], a scalar.

    q is the policy whose log-probabilities `denominator_logp` [B] are given
    (beta for TRPO eq. 14) and w optional constant weights [B] (see
    `off_policy_terms`).
    """
    ratio = torch.exp(policy.log_prob(obs, actions) - denominator_logp)
    if weights is not None:
        ratio = weights * ratio
    return (ratio * advantages).mean()


def off_policy_terms(correction: str, behaviour_logp: torch.Tensor, old_logp: torch.Tensor, is_clip: float
                     ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(denominator log-probabilities, weights or None) of the surrogate for a batch drawn from beta.

        importance   pi_theta / beta                              TRPO eq. (14), unbiased for any beta
        truncated    min(pi_old / beta, is_clip) * pi_theta / pi_old   the truncated weight of ACER
                     (Wang et al. 2017) and IMPALA (Espeholt et al. 2018), held constant
        none         pi_theta / pi_old                            beta treated as pi_old: the baseline

    With beta = pi_old the three are the same surrogate. behaviour_logp and
    old_logp are log beta(a|s) and log pi_old(a|s), [B].
    """
    if correction == "importance":
        return behaviour_logp, None
    if correction == "truncated":
        return old_logp, torch.exp(old_logp - behaviour_logp).clamp(max=is_clip)
    if correction == "none":
        return old_logp, None
    raise ValueError(f"unknown off-policy correction {correction!r}")


def importance_weights(behaviour_logp: torch.Tensor, old_logp: torch.Tensor) -> tuple[float, float]:
    """(largest weight, effective sample size as a fraction of the batch) of w = pi_old / beta, [B].

    ESS = (sum w)^2 / (B sum w^2) (Kong 1992): 1 when beta = pi_old, near 1 / B
    when one sample carries all the weight. Computed in float64 from the
    log-ratios, shifted by their maximum so that no weight overflows.
    """
    log_w = (old_logp - behaviour_logp).double()
    top = log_w.max()
    w = torch.exp(log_w - top)
    ess = float(w.sum() ** 2 / (w.numel() * (w * w).sum()))
    return float(torch.exp(top)), ess


def mean_kl(policy: Policy, obs: torch.Tensor, old_dist_params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over states of KL(pi_old(.|s) || pi_theta(.|s)), a scalar."""
    return policy.kl_from(old_dist_params, obs).mean()


def fisher_vector_product(policy: Policy, obs: torch.Tensor,
                          damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map v -> (F + damping * I) v at the current parameters (flat vectors).

    F is the Hessian of the mean KL at theta_old, which for these policies is
    E_s[J_s^T M_s J_s]: J_s the Jacobian of the distribution parameters (mean
    and log-std, or logits) with respect to theta, M_s the Fisher of the
    distribution in those parameters. Each product costs one forward-mode and
    one reverse-mode pass (`Policy.fisher_product`), no second derivatives.
    """
    product = policy.fisher_product(obs)
    return lambda v: product(v) + damping * v


def fisher_subsample(obs: torch.Tensor, fraction: float) -> torch.Tensor:
    """Every k-th row of obs [B, ...], k = round(1 / fraction): the states the Fisher averages over.

    A fixed stride, not a random draw: no generator is consumed, so runs resume exactly,
    and with fraction 1 it is obs itself.
    """
    step = max(1, round(1.0 / fraction))
    return obs if step == 1 else obs[::step]


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iters: int, residual_tol: float = 1e-10) -> tuple[torch.Tensor, float]:
    """Approximately solve A x = b for symmetric positive-definite A given as `matvec`.

    Starts from x = 0 and stops after `iters` iterations or when the squared
    residual drops below `residual_tol`. Returns (x, ||b - A x||) where the
    residual is the one CG tracks.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot = torch.dot(r, r)
    for _ in range(iters):
        if r_dot <= residual_tol:
            break
        Ap = matvec(p)
        alpha = r_dot / torch.dot(p, Ap)
        x += alpha * p
        r -= alpha * Ap
        new_r_dot = torch.dot(r, r)
        p = r + (new_r_dot / r_dot) * p
        r_dot = new_r_dot
    return x, float(r_dot.sqrt())


@dataclass
class LineSearchResult:
    accepted: bool
    steps: int           # step sizes tried (backtrack_iters when none was accepted)
    step_fraction: float  # coeff ** k of the accepted step, 0.0 when none was
    kl: float            # mean KL of the kept parameters (0.0 when restored)
    surrogate_gain: float  # surrogate improvement of the kept parameters


def line_search(
    params: torch.nn.Module,
    full_step: torch.Tensor,
    evaluate: Callable[[], tuple[float, float]],
    surrogate_before: float,
    max_kl: float,
    backtrack_iters: int,
    backtrack_coeff: float,
) -> LineSearchResult:
    """Backtracking line search on theta_old + coeff^k * full_step, k = 0, 1, ...

    `evaluate()` returns (surrogate, mean_kl) at the module's current
    parameters. The first step whose KL is within `max_kl` and whose surrogate
    improved (both finite) is kept. When none is, the module's parameters are
    restored to theta_old exactly.
    """
    old = parameters_to_vector(params.parameters()).detach().clone()
    for k in range(backtrack_iters):
        fraction = backtrack_coeff ** k
        vector_to_parameters(old + fraction * full_step, params.parameters())
        surr, kl = evaluate()
        gain = surr - surrogate_before
        if np.isfinite(surr) and np.isfinite(kl) and kl <= max_kl and gain > 0:
            return LineSearchResult(True, k + 1, fraction, kl, gain)
    vector_to_parameters(old, params.parameters())
    return LineSearchResult(False, backtrack_iters, 0.0, 0.0, 0.0)


@dataclass
class UpdateStats:
    """What one policy update did; the trainer turns it into metrics."""

    kl: float
    surrogate_gain: float
    line_search_steps: int
    line_search_success: bool
    step_fraction: float
    cg_residual: float
    entropy: float
    behaviour_kl: float   # mean KL(beta || pi_old) over the batch's states (0 when beta is pi_old)
    is_ratio_max: float   # largest pi_old / beta in the batch
    is_ess: float         # effective sample size of pi_old / beta, as a fraction of the batch


@dataclass
class Batch:
    """What one update learns from; B samples, flattened over steps and environments.

    obs [B, obs_dim] (normalised, as the behaviour policy saw them; images flat), actions
    [B, act_dim] (Box; int64 [B] Discrete, [B, k] MultiDiscrete and MultiBinary), behaviour_logp and advantages [B].
    behaviour_dist: beta's distribution parameters at obs (as `Policy.dist_params`
    gives them), or None when beta is pi_old itself.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    behaviour_logp: torch.Tensor
    advantages: torch.Tensor
    behaviour_dist: Optional[tuple[torch.Tensor, ...]] = None

    def to(self, device) -> "Batch":
        """This batch on `device` (itself when it is there already: the CPU runs copy nothing)."""
        move = lambda t: t.to(device)  # noqa: E731
        dist = None if self.behaviour_dist is None else tuple(map(move, self.behaviour_dist))
        return Batch(move(self.obs), move(self.actions), move(self.behaviour_logp), move(self.advantages), dist)


def trpo_update(policy: Policy, batch: Batch, settings: TRPOConfig) -> UpdateStats:
    """One TRPO policy step (docs/design.md, "The algorithm", steps 2 and 3); updates `policy` in place.

    Uses settings.delta, cg_iters, cg_damping, fisher_fraction, backtrack_iters, backtrack_coeff,
    off_policy_correction and is_clip. The trust region is the mean KL from
    pi_old (the policy on entry) to the new policy over the batch's states,
    whatever policy collected the batch.
    """
    obs, actions = batch.obs, batch.actions
    params = list(policy.parameters())
    with torch.no_grad():
        old_dist = tuple(p.detach() for p in policy.dist_params(obs))
        old_logp = policy.log_prob(obs, actions)
        is_ratio_max, is_ess = importance_weights(batch.behaviour_logp, old_logp)
        behaviour_kl = 0.0 if batch.behaviour_dist is None else \
            float(policy.kl_from(batch.behaviour_dist, obs).mean())
    denominator, weights = off_policy_terms(settings.off_policy_correction, batch.behaviour_logp, old_logp,
                                            settings.is_clip)

    def objective() -> torch.Tensor:
        return surrogate(policy, obs, actions, denominator, batch.advantages, weights)

    surr = objective()
    # (reshape, not parameters_to_vector's view: a convolution's gradient may come non-contiguous)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(surr, params)]).detach()
    surrogate_before = float(surr.detach())

    fvp = fisher_vector_product(policy, fisher_subsample(obs, settings.fisher_fraction), settings.cg_damping)
    direction, cg_residual = conjugate_gradient(fvp, grad, settings.cg_iters)
    curvature = torch.dot(direction, fvp(direction))  # x^T (F + damping I) x
    if not (torch.isfinite(curvature) and curvature > 0):
        result = LineSearchResult(False, 0, 0.0, 0.0, 0.0)
    else:
        full_step = torch.sqrt(2.0 * settings.delta / curvature) * direction

        def evaluate() -> tuple[float, float]:
            with torch.no_grad():
                return float(objective()), float(mean_kl(policy, obs, old_dist))

        result = line_search(policy, full_step, evaluate, surrogate_before, settings.delta,
                             settings.backtrack_iters, settings.backtrack_coeff)

    with torch.no_grad():
        entropy = float(policy.entropy(obs).mean())
    return UpdateStats(
        kl=result.kl,
        surrogate_gain=result.surrogate_gain,
        line_search_steps=result.steps,
        line_search_success=result.accepted,
        step_fraction=result.step_fraction,
        cg_residual=cg_residual,
        entropy=entropy,
        behaviour_kl=behaviour_kl,
        is_ratio_max=is_ratio_max,
        is_ess=is_ess,
    )
