"""Policies and the value network.

The policy and the value function are separate modules with separate
parameters: the value fit never moves the policy (docs/design.md, The algorithm, step 4).

Four policies share one interface (`Policy`):
    GaussianPolicy          Box actions: diagonal Gaussian, state-independent log-std
    CategoricalPolicy       Discrete actions: softmax over logits
    MultiCategoricalPolicy  MultiDiscrete actions: independent softmaxes, one per dimension
    BernoulliPolicy         MultiBinary actions: independent Bernoullis, sigmoid of logits

`net` is an MLP (`mlp`) or any module from trpo_lab/networks.py (the Nature CNN).
Acting during collection goes through `Policy.actor()`: for an MLP policy a
`NumpyActor` (trpo_lab/actor.py), a numpy copy of the weights taken once per
iteration (a forward pass for a handful of observations costs microseconds in
numpy and over a hundred in torch); for any other net (the CNN) a `TorchActor`
(trpo_lab/torch_actor.py) that runs the policy itself.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from trpo_lab.activations import ACTIVATIONS
from trpo_lab.actor import NumpyActor

# net_factory(out_dim, out_gain) -> the module mapping observations [B, obs_dim] to [B, out_dim].
NetFactory = Callable[[int, float], nn.Module]

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


def is_mlp(net: nn.Module) -> bool:
    """A Sequential of Linear and activation layers, as `mlp` builds: what the fast paths take."""
    activations = {spec.torch_module for spec in ACTIVATIONS.values()}
    return isinstance(net, nn.Sequential) and all(
        isinstance(m, nn.Linear) or type(m).__name__ in activations for m in net)


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
        by hand: no second-order graph, no per-product forward pass. The CNN
        is linearised by trpo_lab/autodiff.py (forward mode by hand, reverse
        mode by autograd), as exactly.
        """
        from trpo_lab.autodiff import AutogradLinearisation, LayerLinearisation
        from trpo_lab.mlp_grad import Linearisation

        named = list(self.named_parameters())
        in_net = [name.startswith("net.") for name, _ in named]
        shapes = [p.shape for _, p in named]
        sizes = [p.numel() for _, p in named]
        if is_mlp(self.net):
            lin = Linearisation(self.net, self.activation, obs)
        elif hasattr(self.net, "layers"):
            lin = LayerLinearisation(self.net, obs)
        else:
            lin = AutogradLinearisation(self.net, obs)
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

    def has_numpy_actor(self) -> bool:
        """Whether `numpy_actor` exists: for every MLP policy."""
        return is_mlp(self.net)

    def actor(self):
        """What collection and evaluation act with: the numpy copy where there is one, else the
        policy itself through torch (`TorchActor`, which reads the live parameters)."""
        if self.has_numpy_actor():
            return self.numpy_actor()
        from trpo_lab.torch_actor import TorchActor

        return TorchActor(self)

    # For TorchActor: the noise each sampled action needs, and sampling given that noise.
    noise_kind = "uniform"  # or "normal"

    def noise_dim(self) -> int:
        raise NotImplementedError

    def sample_from_noise(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions, log pi(actions|obs) [B]) for obs [B, obs_dim] and noise [B, noise_dim]."""
        raise NotImplementedError

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action of each state (the mean for a Gaussian)."""
        raise NotImplementedError


def _mlp_factory(obs_dim: int, hidden: list[int], activation: str, ortho_init: bool) -> NetFactory:
    return lambda out_dim, out_gain: mlp(obs_dim, hidden, out_dim, activation, ortho_init, out_gain)


def _inverse_cdf(logp: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Index drawn from softmax probabilities exp(logp) [B, n] by inverse CDF of uniform [B, 1]
    (as NumpyActor draws it)."""
    cdf = torch.cumsum(logp.exp(), -1)
    return torch.clamp((uniform > cdf).sum(-1), max=logp.shape[-1] - 1)


class GaussianPolicy(Policy):
    """Diagonal Gaussian N(mu_theta(s), diag(exp(log_std))^2); log_std is state-independent."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str,
                 log_std_init: float = 0.0, ortho_init: bool = True, net_factory: NetFactory | None = None):
        super().__init__()
        self.activation = activation
        self.net = (net_factory or _mlp_factory(obs_dim, hidden, activation, ortho_init))(act_dim, 0.01)
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
        return NumpyActor.of(self.net, self.activation,
                             log_std=self.log_std.detach().cpu().numpy().astype(np.float64))

    noise_kind = "normal"

    def noise_dim(self) -> int:
        return self.log_std.numel()

    def sample_from_noise(self, obs, noise):
        mean = self.net(obs)
        actions = mean + torch.exp(self.log_std) * noise
        return actions, self.log_prob(obs, actions)

    def mode(self, obs):
        return self.net(obs)


def _categorical_kl(old_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(old || new) of categoricals given as log-probabilities, summed over the last axis
    (over all dimensions' entries for independent categoricals side by side)."""
    return (old_logp.exp() * (old_logp - logp)).sum(-1)


def _categorical_entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


class CategoricalPolicy(Policy):
    """Softmax policy over n actions with logits from `net`."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: list[int], activation: str,
                 ortho_init: bool = True, net_factory: NetFactory | None = None):
        super().__init__()
        self.activation = activation
        self.net = (net_factory or _mlp_factory(obs_dim, hidden, activation, ortho_init))(n_actions, 0.01)

    def dist_params(self, obs):
        return (torch.log_softmax(self.net(obs), dim=-1),)

    def log_prob(self, obs, actions):
        (logp,) = self.dist_params(obs)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def kl_from(self, old, obs):
        return _categorical_kl(old[0], self.dist_params(obs)[0])

    def entropy(self, obs):
        return _categorical_entropy(self.dist_params(obs)[0])

    def params_from_output(self, out, log_std):
        return (torch.log_softmax(out, dim=-1),)

    def _output_fisher(self, out, u):
        # Fisher of softmax(z) in the logits z is diag(p) - p p^T.
        p = torch.softmax(out, dim=-1)
        return p * u - p * (p * u).sum(-1, keepdim=True)

    def numpy_actor(self) -> "NumpyActor":
        return NumpyActor.of(self.net, self.activation, log_std=None)

    def noise_dim(self) -> int:
        return 1

    def sample_from_noise(self, obs, noise):
        (logp,) = self.dist_params(obs)
        actions = _inverse_cdf(logp, noise)
        return actions, logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def mode(self, obs):
        return self.net(obs).argmax(-1)


class MultiCategoricalPolicy(Policy):
    """Independent softmaxes over nvec[0], nvec[1], ... choices (MultiDiscrete actions [B, k]).

    `net` gives the logits of all dimensions side by side, [B, sum(nvec)]; the
    distribution parameters are their per-dimension log-softmaxes, side by side.
    log-prob, KL and entropy are sums over the dimensions.
    """

    def __init__(self, obs_dim: int, nvec: list[int], hidden: list[int], activation: str,
                 ortho_init: bool = True, net_factory: NetFactory | None = None):
        super().__init__()
        self.activation = activation
        self.nvec = [int(n) for n in nvec]
        self.net = (net_factory or _mlp_factory(obs_dim, hidden, activation, ortho_init))(sum(self.nvec), 0.01)

    def _segments(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.nvec, dim=-1)

    def params_from_output(self, out, log_std):
        return (torch.cat([torch.log_softmax(z, dim=-1) for z in self._segments(out)], dim=-1),)

    def dist_params(self, obs):
        return self.params_from_output(self.net(obs), None)

    def log_prob(self, obs, actions):
        (logp,) = self.dist_params(obs)
        actions = actions.long()
        return sum(seg.gather(-1, actions[:, j:j + 1]).squeeze(-1) for j, seg in enumerate(self._segments(logp)))

    def kl_from(self, old, obs):
        # Each dimension's KL is sum_a p_old (log p_old - log p); their sum runs over all entries.
        return _categorical_kl(old[0], self.dist_params(obs)[0])

    def entropy(self, obs):
        return _categorical_entropy(self.dist_params(obs)[0])

    def _output_fisher(self, out, u):
        # Block diagonal: diag(p_j) - p_j p_j^T for each dimension's logits.
        (logp,) = self.params_from_output(out, None)
        p = logp.exp()
        pu = p * u
        sums = torch.cat([s.sum(-1, keepdim=True).expand_as(s) for s in self._segments(pu)], dim=-1)
        return pu - p * sums

    def noise_dim(self) -> int:
        return len(self.nvec)

    def sample_from_noise(self, obs, noise):
        (logp,) = self.dist_params(obs)
        segments = self._segments(logp)
        actions = torch.stack([_inverse_cdf(seg, noise[:, j:j + 1]) for j, seg in enumerate(segments)], -1)
        return actions, sum(seg.gather(-1, actions[:, j:j + 1]).squeeze(-1) for j, seg in enumerate(segments))

    def mode(self, obs):
        return torch.stack([z.argmax(-1) for z in self._segments(self.net(obs))], -1)

    def numpy_actor(self) -> "NumpyActor":
        return NumpyActor.of(self.net, self.activation, log_std=None, nvec=self.nvec)


class BernoulliPolicy(Policy):
    """Independent Bernoullis with P(a_i = 1) = sigmoid(z_i), logits z from `net` (MultiBinary actions [B, n])."""

    def __init__(self, obs_dim: int, n: int, hidden: list[int], activation: str,
                 ortho_init: bool = True, net_factory: NetFactory | None = None):
        super().__init__()
        self.activation = activation
        self.n = int(n)
        self.net = (net_factory or _mlp_factory(obs_dim, hidden, activation, ortho_init))(self.n, 0.01)

    def params_from_output(self, out, log_std):
        return (out,)

    def dist_params(self, obs):
        return (self.net(obs),)

    def log_prob(self, obs, actions):
        z = self.net(obs)
        a = actions.to(z.dtype)
        return (a * nn.functional.logsigmoid(z) + (1.0 - a) * nn.functional.logsigmoid(-z)).sum(-1)

    def kl_from(self, old, obs):
        (old_z,) = old
        z = self.net(obs)
        p_old = torch.sigmoid(old_z)
        ls = nn.functional.logsigmoid
        return (p_old * (ls(old_z) - ls(z)) + (1.0 - p_old) * (ls(-old_z) - ls(-z))).sum(-1)

    def entropy(self, obs):
        z = self.net(obs)
        p = torch.sigmoid(z)
        ls = nn.functional.logsigmoid
        return -(p * ls(z) + (1.0 - p) * ls(-z)).sum(-1)

    def _output_fisher(self, out, u):
        # Fisher of a Bernoulli in its logit is p (1 - p).
        p = torch.sigmoid(out)
        return p * (1.0 - p) * u

    def noise_dim(self) -> int:
        return self.n

    def sample_from_noise(self, obs, noise):
        z = self.net(obs)
        actions = (noise < torch.sigmoid(z)).long()
        return actions, self.log_prob(obs, actions)

    def mode(self, obs):
        return (self.net(obs) > 0).long()

    def numpy_actor(self) -> "NumpyActor":
        return NumpyActor.of(self.net, self.activation, log_std=None, bernoulli=True)


class ValueNet(nn.Module):
    """V(s): observations [B, obs_dim] -> values [B]."""

    def __init__(self, obs_dim: int, hidden: list[int], activation: str, ortho_init: bool = True,
                 net_factory: NetFactory | None = None):
        super().__init__()
        self.net = (net_factory or _mlp_factory(obs_dim, hidden, activation, ortho_init))(1, 1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Values [B] on the CPU, whatever device the net is on (trainer.device)."""
        device = next(self.net.parameters()).device
        return self.net(obs.to(device)).squeeze(-1).cpu()


ACTION_SPACES = "Box, Discrete, MultiDiscrete and MultiBinary"


def make_policy(obs_dim: int, action_space, hidden: list[int], activation: str,
                log_std_init: float, ortho_init: bool, net_factory: NetFactory | None = None) -> Policy:
    """The policy family that fits a gymnasium action space; `net_factory` (default: the MLP of
    `hidden`) builds its network."""
    import gymnasium as gym

    if isinstance(action_space, gym.spaces.Box):
        return GaussianPolicy(obs_dim, int(np.prod(action_space.shape)), hidden, activation,
                              log_std_init, ortho_init, net_factory)
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_dim, int(action_space.n), hidden, activation, ortho_init, net_factory)
    if isinstance(action_space, gym.spaces.MultiDiscrete) and len(action_space.shape) == 1:
        return MultiCategoricalPolicy(obs_dim, list(action_space.nvec), hidden, activation, ortho_init, net_factory)
    if isinstance(action_space, gym.spaces.MultiBinary) and len(action_space.shape) == 1:
        return BernoulliPolicy(obs_dim, int(action_space.shape[0]), hidden, activation, ortho_init, net_factory)
    raise ValueError(f"unsupported action space {action_space}: trpo_lab handles {ACTION_SPACES} "
                     "(one-dimensional), not nested or multi-dimensional ones")
