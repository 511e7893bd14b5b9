"""Acting without torch: a numpy copy of the policy, taken once per iteration.

A forward pass for one observation costs microseconds in numpy and over a
hundred in torch. The copy imports no torch, so an environment worker process
can unpickle it (it travels to the workers once per rollout) without loading
torch.
"""
from __future__ import annotations

import math

import numpy as np


def _tanh(h: np.ndarray) -> None:
    np.tanh(h, h)


def _relu(h: np.ndarray) -> None:
    np.maximum(h, 0.0, out=h)


def _elu(h: np.ndarray) -> None:
    np.copyto(h, np.where(h > 0, h, np.expm1(np.minimum(h, 0.0))))


def _silu(h: np.ndarray) -> None:
    np.multiply(h, 1.0 / (1.0 + np.exp(-h)), out=h)


# In place: each overwrites its argument with activation(argument).
NUMPY_ACTIVATIONS = {"tanh": _tanh, "relu": _relu, "elu": _elu, "silu": _silu}
LOG_2PI = math.log(2.0 * math.pi)


class NumpyActor:
    """A frozen numpy copy of a policy for acting: sample(obs) -> (actions, log-probs).

    weights [in, out] and biases [out] per linear layer, float64. Takes float
    observations [N, obs_dim]; returns actions [N, act_dim] (float64) or [N]
    (int64) and their log-probabilities under the copied policy (the behaviour
    policy beta of DESIGN.md). With `log_std` the policy is a diagonal Gaussian
    around the net's output, without it a softmax over the net's logits. The
    forward pass writes into arrays allocated once per batch size.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activation: str,
                 log_std: np.ndarray | None):
        self.weights = [np.ascontiguousarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64) for b in biases]
        self.activation = activation
        self.act_fn = NUMPY_ACTIVATIONS[activation]
        self.log_std = log_std
        if log_std is not None:
            self.std = np.exp(log_std)
            self.logp_const = -log_std.sum() - 0.5 * len(log_std) * LOG_2PI
        self._buffers: dict[int, list[np.ndarray]] = {}
        last = len(self.weights) - 1
        self._vector_layers = [(w, b, np.empty(w.shape[1]), i < last)
                               for i, (w, b) in enumerate(zip(self.weights, self.biases))]
        self._action = np.empty(self.weights[-1].shape[1])

    def __getstate__(self):
        return {"weights": self.weights, "biases": self.biases, "activation": self.activation,
                "log_std": self.log_std}

    def __setstate__(self, state) -> None:
        self.__init__(**state)

    def forward(self, obs: np.ndarray) -> np.ndarray:
        """The net's output [N, out]: an array of this actor's, overwritten by the next call.

        Called once per environment step on one row, so the calls are the
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
                self.act_fn(out)
            h = out
        return h

    def act(self, obs: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray | int, float | None]:
        """One observation's action, obs [obs_dim] and one row of `noise()`, and its log-probability
        (None for a Gaussian: `noise()` gave it). A Gaussian action is an array of this actor's,
        overwritten by the next call. The collection loop's path: vectors, no batch dimension."""
        h = obs
        for w, b, out, hidden in self._vector_layers:
            np.dot(h, w, out)
            np.add(out, b, out)
            if hidden:
                self.act_fn(out)
            h = out
        if self.log_std is not None:
            return np.add(h, noise, self._action), None
        logits = h - h.max()
        logp_all = logits - np.log(np.exp(logits).sum())
        action = min(int((noise[0] > np.cumsum(np.exp(logp_all))).sum()), h.shape[0] - 1)
        return action, float(logp_all[action])

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
