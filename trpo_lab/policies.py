"""Policies and the value network.

The policy and the value function are separate modules with separate
parameters: the value fit never moves the policy (DESIGN.md step 4).

Two policies share one interface (`Policy`):
    GaussianPolicy     Box actions: diagonal Gaussian, state-independent log-std
    CategoricalPolicy  Discrete actions: softmax over logits

Acting during collection goes through `NumpyActor`, a numpy copy of the
policy's weights taken once per iteration: a forward pass for a handful of
observations costs microseconds in numpy and over a hundred in torch.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

_TORCH_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}
# In place: each overwrites its argument with activation(argument).
_NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], object]] = {
    "tanh": lambda h: np.tanh(h, h),
    "relu": lambda h: np.maximum(h, 0.0, out=h),
    "elu": lambda h: np.copyto(h, np.where(h > 0, h, np.expm1(np.minimum(h, 0.0)))),
    "silu": lambda h: np.multiply(h, 1.0 / (1.0 + np.exp(-h)), out=h),
}
ACTIVATIONS = tuple(_TORCH_ACTIVATIONS)
_LOG_2PI = math.log(2.0 * math.pi)


def mlp(in_dim: int, hidden: list[int], out_dim: int, activation: str, ortho_init: bool,
        out_gain: float) -> nn.Sequential:
    """Linear-activation stack ending in a linear layer of width out_dim."""
    layers: list[nn.Module] = []
    widths = [in_dim, *hidden]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), _TORCH_ACTIVATIONS[activation]()]
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

    def _output_fisher(self, out, u):
        # Fisher of N(mu, sigma^2) in mu is 1 / sigma^2.
        return u * torch.exp(-2.0 * self.log_std.detach())

    def _extra_fisher(self, chunks):
        # Fisher of N(mu, sigma^2) in log sigma is 2, and the same for every state.
        return [2.0 * c for c in chunks]

    def numpy_actor(self) -> "NumpyActor":
        return NumpyActor(self.net, self.activation, log_std=self.log_std.detach().numpy().astype(np.float64))


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

    def _output_fisher(self, out, u):
        # Fisher of softmax(z) in the logits z is diag(p) - p p^T.
        p = torch.softmax(out, dim=-1)
        return p * u - p * (p * u).sum(-1, keepdim=True)

    def numpy_actor(self) -> "NumpyActor":
        return NumpyActor(self.net, self.activation, log_std=None)


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


class NumpyActor:
    """A frozen numpy copy of a policy for acting: sample(obs) -> (actions, log-probs).

    Takes float observations [N, obs_dim]; returns actions [N, act_dim]
    (float64) or [N] (int64) and their log-probabilities under the copied
    policy (the behaviour policy beta of DESIGN.md). The forward pass writes
    into arrays allocated once per batch size.
    """

    def __init__(self, net: nn.Sequential, activation: str, log_std: np.ndarray | None):
        linears = [m for m in net if isinstance(m, nn.Linear)]
        self.weights = [np.ascontiguousarray(m.weight.detach().numpy().T, dtype=np.float64) for m in linears]
        self.biases = [m.bias.detach().numpy().astype(np.float64) for m in linears]
        self.act = _NUMPY_ACTIVATIONS[activation]
        self.log_std = log_std
        if log_std is not None:
            self.std = np.exp(log_std)
            self.logp_const = -log_std.sum() - 0.5 * len(log_std) * _LOG_2PI
        self._buffers: dict[int, list[np.ndarray]] = {}

    def forward(self, obs: np.ndarray) -> np.ndarray:
        """The net's output [N, out]: an array of this actor's, overwritten by the next call.

        Called once per environment step on a few rows, so the calls are the
        cheapest numpy has: np.dot into a buffer (half the cost of np.matmul's
        call on arrays this small), out given positionally.
        """
        buffers = self._buffers.get(obs.shape[0])
        if buffers is None:
            buffers = self._buffers[obs.shape[0]] = [np.empty((obs.shape[0], w.shape[1])) for w in self.weights]
        if obs.dtype != np.float64 or not obs.flags.c_contiguous:
            obs = np.ascontiguousarray(obs, dtype=np.float64)
        h, last = obs, len(self.weights) - 1
        for i, (w, b, out) in enumerate(zip(self.weights, self.biases, buffers)):
            np.dot(h, w, out)
            np.add(out, b, out)
            if i < last:
                self.act(out)
            h = out
        return h

    def noise(self, rng: np.random.Generator, steps: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The randomness of `steps` calls to `sample` for n observations, drawn at once.

        Returns (noise, log-probs). Gaussian: noise is std * eps for standard
        normal eps [steps, n, act_dim], and since the action mean + std * eps
        has log-probability const - |eps|^2 / 2 whatever the mean, the
        log-probs [steps, n] come with it. Categorical: uniform [steps, n, 1]
        and None (they depend on the logits). The same numbers, in the same
        order, as drawing each step's share in turn, without the per-call cost
        of the generator.
        """
        if self.log_std is not None:
            eps = rng.standard_normal((steps, n, len(self.log_std)))
            return self.std * eps, self.logp_const - 0.5 * (eps * eps).sum(-1)
        return rng.random((steps, n, 1)), None

    def sample(self, obs: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Actions for obs [N, obs_dim], given one step of `noise()` [N, ...], and their
        log-probabilities [N] (None for a Gaussian: `noise()` gave them)."""
        out = self.forward(obs)
        if self.log_std is not None:
            return out + noise, None
        logits = out - out.max(-1, keepdims=True)
        logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        cdf = np.cumsum(np.exp(logp_all), -1)
        actions = np.minimum((noise > cdf).sum(-1), out.shape[-1] - 1)
        return actions, logp_all[np.arange(out.shape[0]), actions]

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        out = self.forward(obs)
        return out.copy() if self.log_std is not None else out.argmax(-1)
