"""Acting in numpy: the policy's forward pass, sampling and log-probabilities, without torch.

`NumpyActor` is a frozen copy of a policy's weights. Collection calls it once
per environment step on a handful of observations, where a numpy forward pass
costs microseconds and torch's over a hundred. This module imports no torch,
so rollout worker processes (trpo_lab/rollout_worker.py) start without it.
tests/test_actor.py checks its actions and log-probabilities against the
torch policy's for every activation.
"""
from __future__ import annotations

import math
import numpy as np

from trpo_lab.activations import ACTIVATIONS

_LOG_2PI = math.log(2.0 * math.pi)


class NumpyActor:
    """A frozen numpy copy of a policy for acting: sample(obs) -> (actions, log-probs).

    Takes float observations [N, obs_dim]; returns actions [N, act_dim]
    (float64) or [N] (int64) and their log-probabilities under the copied
    policy (the behaviour policy beta of docs/design.md). The forward pass writes
    into arrays allocated once per batch size.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activation: str,
                 log_std: np.ndarray | None):
        """weights[i]: layer i's weight transposed, [in, out], C-contiguous float64; biases[i]: [out]."""
        self.weights, self.biases = weights, biases
        self.activation = activation
        self.act = ACTIVATIONS[activation].numpy
        self.log_std = log_std
        self.refresh()
        self._buffers: dict[int, list[np.ndarray]] = {}

    def refresh(self) -> None:
        """Recompute what follows from log_std (after its values were overwritten in place)."""
        if self.log_std is not None:
            self.std = np.exp(self.log_std)
            self.logp_const = -self.log_std.sum() - 0.5 * len(self.log_std) * _LOG_2PI

    @classmethod
    def of(cls, net, activation: str, log_std: np.ndarray | None) -> "NumpyActor":
        """A copy of the current weights of `net`, a torch Sequential of Linear and activation layers."""
        linears = [m for m in net if hasattr(m, "weight")]
        weights = [np.ascontiguousarray(m.weight.detach().cpu().numpy().T, dtype=np.float64) for m in linears]
        return cls(weights, [m.bias.detach().cpu().numpy().astype(np.float64) for m in linears], activation, log_std)

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
        return self.sample_output(self.forward(obs), noise)

    def sample_output(self, out: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`sample` given the net's output `out` [N, out] for the observations."""
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
