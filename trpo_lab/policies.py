"""Policies and the value network.

The policy and the value function are separate modules with separate
parameters: the value fit never moves the policy (docs/design.md, The algorithm, step 4).

Two policies share one interface (`Policy`):
    GaussianPolicy     Box actions: diagonal Gaussian, state-independent log-std
    CategoricalPolicy  Discrete actions: softmax over logits

Acting during collection goes through `NumpyActor` (trpo_lab/actor.py), a
numpy copy of the policy's weights taken once per iteration: a forward pass for
a handful of observations costs microseconds in numpy and over a hundred in torch.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from trpo_lab.activations import ACTIVATIONS
from trpo_lab.actor import NumpyActor

_LOG_2PI = math.log(2.0 * math.pi)


def mlp(in_dim: int, hidden: list[int], out_dim: int, activation: str, ortho_init: bool,
        out_gain: float) -> nn.Sequential:
    """Linear-activation stack ending in a linear layer of width out_dim."""
    layers: list[nn.Module] = []
    widths = [in_dim, *hidden]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), getattr(nn, ACTIVATIONS[activation].torch_module)()]
    layers.append(nn.Linear(widths[-1], out_dim))
    if ortho_init:
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            nn.init.orthogonal_(layer.weight, gain=out_gain if i == len(linears) - 1 else math.sqrt(2.0))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Policy(nn.Module):
    """A stochastic policy pi_theta(a|s) whose Fisher is E_s[J^T M J].

    `net` maps observations [B, obs_dim] to the state-dependent distribution
    parameters (the Gaussian mean, or the logits); subclasses say what M is.
    """

    net: nn.Sequential
    activation: str

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s), shape [B]."""
        raise NotImplementedError

    def kl_from(self, old: tuple[torch.Tensor, ...], obs: torch.Tensor) -> torch.Tensor:
        """KL(old(.|s) || pi_theta(.|s)) per state, shape [B]."""
        raise NotImplementedError

    def entropy(self, obs: torch.Tensor) -> torch.Tensor:
        """Entropy per state, shape [B]."""
        raise NotImplementedError

    def params_from_output(self, out: torch.Tensor, log_std: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """`dist_params` of a policy whose net gave `out` [B, out] (and, Gaussian, whose
        log-std was `log_std` [B, act_dim]): how a rollout worker's record of beta is read."""
        raise NotImplementedError

    def _output_fisher(self, out: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """M u for the distribution Fisher M in the net's output coordinates, [B, out]."""
        raise NotImplementedError

    def _extra_fisher(self, chunks: list[torch.Tensor]) -> list[torch.Tensor]:
        """F v for the parameters outside `net` (in registration order); none by default."""
        return chunks

    def fisher_product(self, obs: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """v -> F v at the current parameters, F = mean_s J_s^T M_s J_s.

        `v` and the result are flat, in the order of `self.parameters()` (the
        order `parameters_to_vector` uses). The net is linearised once here
        (`mlp_grad.Linearisation`: its activations at `obs` are kept) and each
        product is one forward-mode pass J v and one back-propagation J^T (M J v),
        by hand: no second-order graph, no per-product forward pass.
        """
        from trpo_lab.mlp_grad import Linearisation

        named = list(self.named_parameters())
        in_net = [name.startswith("net.") for name, _ in named]
        shapes = [p.shape for _, p in named]
        sizes = [p.numel() for _, p in named]
        lin = Linearisation(self.net, self.activation, obs)
        out = lin.output
        batch = obs.shape[0]

        def product(v: torch.Tensor) -> torch.Tensor:
            chunks = [c.view(shape) for c, shape in zip(torch.split(v, sizes), shapes)]
            jv = lin.jvp([c for c, net in zip(chunks, in_net) if net])
            net_part = iter(lin.vjp(self._output_fisher(out, jv) / batch))
            extra_part = iter(self._extra_fisher([c for c, net in zip(chunks, in_net) if not net]))
            return torch.cat([(next(net_part) if net else next(extra_part)).reshape(-1) for net in in_net])

        return product

    def numpy_actor(self) -> "NumpyActor":
        raise NotImplementedError


class GaussianPolicy(Policy):
    """Diagonal Gaussian N(mu_theta(s), diag(exp(log_std))^2); log_std is state-independent."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str,
                 log_std_init: float = 0.0, ortho_init: bool = True):
        super().__init__()
        self.activation = activation
        self.net = mlp(obs_dim, hidden, act_dim, activation, ortho_init, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def dist_params(self, obs):
        mean = self.net(obs)
        return mean, self.log_std.expand_as(mean)

    def log_prob(self, obs, actions):
        mean, log_std = self.dist_params(obs)
        z = (actions - mean) * torch.exp(-log_std)
        return -0.5 * (z * z).sum(-1) - log_std.sum(-1) - 0.5 * mean.shape[-1] * _LOG_2PI

    def kl_from(self, old, obs):
        old_mean, old_log_std = old
        mean, log_std = self.dist_params(obs)
        var_ratio = torch.exp(2.0 * (old_log_std - log_std))
        mean_term = ((old_mean - mean) * torch.exp(-log_std)) ** 2
        return 0.5 * (var_ratio + mean_term - 1.0).sum(-1) + (log_std - old_log_std).sum(-1)

    def entropy(self, obs):
        ent = (self.log_std + 0.5 * (1.0 + _LOG_2PI)).sum()
        return ent.expand(obs.shape[0])

    def params_from_output(self, out, log_std):
        return out, log_std

    def _output_fisher(self, out, u):
        # Fisher of N(mu, sigma^2) in mu is 1 / sigma^2.
        return u * torch.exp(-2.0 * self.log_std.detach())

    def _extra_fisher(self, chunks):
        # Fisher of N(mu, sigma^2) in log sigma is 2, and the same for every state.
        return [2.0 * c for c in chunks]

    def numpy_actor(self) -> "NumpyActor":
        return NumpyActor.of(self.net, self.activation, log_std=self.log_std.detach().numpy().astype(np.float64))


class CategoricalPolicy(Policy):
    """Softmax policy over n actions with logits from `net`."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: list[int], activation: str,
                 ortho_init: bool = True):
        super().__init__()
        self.activation = activation
        self.net = mlp(obs_dim, hidden, n_actions, activation, ortho_init, out_gain=0.01)

    def dist_params(self, obs):
        return (torch.log_softmax(self.net(obs), dim=-1),)

    def log_prob(self, obs, actions):
        (logp,) = self.dist_params(obs)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def kl_from(self, old, obs):
        (old_logp,) = old
        (logp,) = self.dist_params(obs)
        return (old_logp.exp() * (old_logp - logp)).sum(-1)

    def entropy(self, obs):
        (logp,) = self.dist_params(obs)
        return -(logp.exp() * logp).sum(-1)

    def params_from_output(self, out, log_std):
        return (torch.log_softmax(out, dim=-1),)

    def _output_fisher(self, out, u):
        # Fisher of softmax(z) in the logits z is diag(p) - p p^T.
        p = torch.softmax(out, dim=-1)
        return p * u - p * (p * u).sum(-1, keepdim=True)

    def numpy_actor(self) -> "NumpyActor":
        return NumpyActor.of(self.net, self.activation, log_std=None)


class ValueNet(nn.Module):
    """V(s): observations [B, obs_dim] -> values [B]."""

    def __init__(self, obs_dim: int, hidden: list[int], activation: str, ortho_init: bool = True):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, activation, ortho_init, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def make_policy(obs_dim: int, action_space, hidden: list[int], activation: str,
                log_std_init: float, ortho_init: bool) -> Policy:
    """The policy family that fits a gymnasium action space."""
    import gymnasium as gym

    if isinstance(action_space, gym.spaces.Box):
        return GaussianPolicy(obs_dim, int(np.prod(action_space.shape)), hidden, activation,
                              log_std_init, ortho_init)
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_dim, int(action_space.n), hidden, activation, ortho_init)
    raise ValueError(f"unsupported action space {action_space}: trpo_lab handles Box and Discrete")
