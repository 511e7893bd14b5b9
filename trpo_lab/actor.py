"""Acting in numpy: the policy's forward pass, sampling and log-probabilities, without torch.

`NumpyActor` is a frozen copy of an MLP policy's weights, for each of the four
distributions (trpo_lab/policies.py): Gaussian, categorical, independent
categoricals (MultiDiscrete) and independent Bernoullis (MultiBinary).
Collection calls it once per environment step on a handful of observations,
where a numpy forward pass costs microseconds and torch's over a hundred. This
module imports no torch, so rollout worker processes (trpo_lab/rollout_worker.py)
start without it. tests/test_actor.py checks its actions and log-probabilities
against the torch policy's for every distribution and activation.
"""
from __future__ import annotations

import math
import numpy as np

from trpo_lab.activations import ACTIVATIONS

_LOG_2PI = math.log(2.0 * math.pi)


def _categorical(out: np.ndarray, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index [N] int64, its log-probability [N]) drawn from softmax(out) [N, n] by inverse CDF of
    uniform [N, 1] (as policies._inverse_cdf draws it)."""
    logits = out - out.max(-1, keepdims=True)
    logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    cdf = np.cumsum(np.exp(logp_all), -1)
    actions = np.minimum((uniform > cdf).sum(-1), out.shape[-1] - 1)
    return actions, logp_all[np.arange(out.shape[0]), actions]


class NumpyActor:
    """A frozen numpy copy of a policy for acting: sample(obs) -> (actions, log-probs).

    Takes float observations [N, obs_dim]; returns actions [N, act_dim]
    (float64, Gaussian), [N] (int64, categorical) or [N, k] (int64,
    MultiDiscrete and MultiBinary) and their log-probabilities under the copied
    policy (the behaviour policy beta of docs/design.md). The forward pass writes
    into arrays allocated once per batch size.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activation: str,
                 log_std: np.ndarray | None, nvec: list[int] | None = None, bernoulli: bool = False):
        """weights[i]: layer i's weight transposed, [in, out], C-contiguous float64; biases[i]: [out].

        The distribution: Gaussian with `log_std`; independent categoricals over
        nvec[0], nvec[1], ... choices (logits side by side) with `nvec`;
        independent Bernoullis with P(a_i = 1) = sigmoid(out_i) with `bernoulli`;
        else one categorical over the outputs.
        """
        self.weights, self.biases = weights, biases
        self.activation = activation
        self.act = ACTIVATIONS[activation].numpy
        self.log_std = log_std
        self.nvec, self.bernoulli = (None if nvec is None else [int(n) for n in nvec]), bernoulli
        if self.nvec is not None:
            ends = np.cumsum(self.nvec)
            self._segments = list(zip(ends - self.nvec, ends))
        self.refresh()
        self._buffers: dict[int, list[np.ndarray]] = {}

    def refresh(self) -> None:
        """Recompute what follows from log_std (after its values were overwritten in place)."""
        if self.log_std is not None:
            self.std = np.exp(self.log_std)
            self.logp_const = -self.log_std.sum() - 0.5 * len(self.log_std) * _LOG_2PI

    @classmethod
    def of(cls, net, activation: str, log_std: np.ndarray | None, nvec: list[int] | None = None,
           bernoulli: bool = False) -> "NumpyActor":
        """A copy of the current weights of `net`, a torch Sequential of Linear and activation layers."""
        linears = [m for m in net if hasattr(m, "weight")]
        weights = [np.ascontiguousarray(m.weight.detach().cpu().numpy().T, dtype=np.float64) for m in linears]
        return cls(weights, [m.bias.detach().cpu().numpy().astype(np.float64) for m in linears], activation,
                   log_std, nvec, bernoulli)

    def noise_dim(self) -> int:
        """Uniform numbers per sampled action (not Gaussian): one per categorical or Bernoulli."""
        if self.nvec is not None:
            return len(self.nvec)
        return self.weights[-1].shape[1] if self.bernoulli else 1

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
        log-probs [steps, n] come with it. Otherwise uniform [steps, n, noise_dim]
        (one per categorical or Bernoulli, as TorchActor draws it) and None
        (the log-probs depend on the logits). The same numbers, in the same
        order, as drawing each step's share in turn, without the per-call cost
        of the generator.
        """
        if self.log_std is not None:
            eps = rng.standard_normal((steps, n, len(self.log_std)))
            return self.std * eps, self.logp_const - 0.5 * (eps * eps).sum(-1)
        return rng.random((steps, n, self.noise_dim())), None

    def sample(self, obs: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Actions for obs [N, obs_dim], given one step of `noise()` [N, ...], and their
        log-probabilities [N] (None for a Gaussian: `noise()` gave them)."""
        return self.sample_output(self.forward(obs), noise)

    def sample_output(self, out: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`sample` given the net's output `out` [N, out] for the observations."""
        if self.log_std is not None:
            return out + noise, None
        if self.nvec is not None:  # log pi(a|s) = sum_j log softmax_j(a_j)
            actions = np.empty((out.shape[0], len(self.nvec)), dtype=np.int64)
            logp = np.zeros(out.shape[0])
            for j, (lo, hi) in enumerate(self._segments):
                actions[:, j], logp_j = _categorical(out[:, lo:hi], noise[:, j:j + 1])
                logp += logp_j
            return actions, logp
        if self.bernoulli:
            # a_i = 1 with probability sigmoid(z_i) = exp(-log(1 + e^-z_i)); log p(a_i) = -log(1 + e^(-+z_i)).
            actions = (noise < np.exp(-np.logaddexp(0.0, -out))).astype(np.int64)
            return actions, -np.logaddexp(0.0, np.where(actions == 1, -out, out)).sum(-1)
        return _categorical(out, noise)

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The most likely action of each observation (the mean for a Gaussian)."""
        out = self.forward(obs)
        if self.log_std is not None:
            return out.copy()
        if self.nvec is not None:
            return np.stack([out[:, lo:hi].argmax(-1) for lo, hi in self._segments], -1)
        return (out > 0).astype(np.int64) if self.bernoulli else out.argmax(-1)
