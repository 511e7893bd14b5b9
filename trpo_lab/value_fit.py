"""Fitting the critic V(s) to the returns: minibatch MSE regression with Adam.

DESIGN.md step 4, with the mathematics of `torch.optim.Adam` on
`mean((V(s) - R)^2)`, written out for the MLP critic. An iteration makes
epochs x (batch / minibatch) = 320 tiny steps (minibatch 128, 64x64 net) at
the rl-zoo3 settings. Through autograd and `torch.optim` each costs about a
millisecond of framework overhead on one CPU thread, several times its
arithmetic; through hand-written torch operations still about 200 us. Here a
step is a forward pass, a hand-written backward pass and an Adam step on one
flat parameter vector, about 40 numpy calls writing into buffers allocated
once: about 110 us, of which the three 128x64x64 matrix products are a third.
The arithmetic is the same (in the critic's dtype); tests/test_value_fit.py
checks it against autograd + torch.optim.Adam.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch

from trpo_lab.mlp_grad import linear_layers
from trpo_lab.policies import ValueNet


def _tanh(z: np.ndarray, out: np.ndarray, slope: np.ndarray) -> None:
    np.tanh(z, out=out)
    np.multiply(out, out, out=slope)
    np.subtract(1.0, slope, out=slope)  # tanh' = 1 - tanh^2


def _relu(z: np.ndarray, out: np.ndarray, slope: np.ndarray) -> None:
    np.maximum(z, 0.0, out=out)
    np.copyto(slope, z > 0)


def _elu(z: np.ndarray, out: np.ndarray, slope: np.ndarray) -> None:
    positive = z > 0
    np.copyto(out, np.where(positive, z, np.expm1(np.minimum(z, 0.0))))
    np.copyto(slope, np.where(positive, 1.0, out + 1.0))


def _silu(z: np.ndarray, out: np.ndarray, slope: np.ndarray) -> None:
    sigmoid = 1.0 / (1.0 + np.exp(-z))
    np.multiply(z, sigmoid, out=out)
    np.copyto(slope, sigmoid * (1.0 + z * (1.0 - sigmoid)))


# activation(z) into `out` and its derivative at z into `slope`.
ACTIVATIONS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = {
    "tanh": _tanh, "relu": _relu, "elu": _elu, "silu": _silu,
}


class _Workspace:
    """The arrays of one minibatch size: pre-activations, activations, slopes, deltas."""

    def __init__(self, batch: int, widths: list[int], dtype: np.dtype):
        self.z = [np.empty((batch, w), dtype) for w in widths]
        self.h = [np.empty((batch, w), dtype) for w in widths[:-1]]
        self.slope = [np.empty((batch, w), dtype) for w in widths[:-1]]
        self.delta = [np.empty((batch, w), dtype) for w in widths[:-1]]
        self.residual = np.empty((batch, 1), dtype)


class ValueFitter:
    """Adam on the MSE of a `ValueNet`, with the gradient computed by hand in numpy.

    The net's parameters are re-pointed into one flat vector (the module, its
    state_dict and checkpoints are unchanged) that numpy views; Adam is a
    handful of operations on that vector. Holds Adam's state; `state_dict` saves it.
    """

    def __init__(self, value: ValueNet, activation: str, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.net, self.activation = value.net, ACTIVATIONS[activation]
        self.linears = linear_layers(value.net)
        self.lr, self.betas, self.eps = lr, betas, eps
        params = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        with torch.no_grad():
            self.flat = torch.cat([p.reshape(-1) for p in params])
        offset = 0
        for p in params:
            p.data = self.flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        # numpy views: of the parameters (shared with the module), of the gradient, and Adam's moments.
        self._theta = self.flat.numpy()
        self.weights = [layer.weight.detach().numpy() for layer in self.linears]  # [out, in]
        self.biases = [layer.bias.detach().numpy() for layer in self.linears]
        self._grad = np.zeros_like(self._theta)
        self._grads, offset = [], 0
        for p in params:
            self._grads.append(self._grad[offset:offset + p.numel()].reshape(p.shape))
            offset += p.numel()
        self.m, self.v, self._scratch = (np.zeros_like(self._theta) for _ in range(3))
        self.step = 0
        self._workspaces: dict[int, _Workspace] = {}

    def minibatch_step(self, obs: np.ndarray, returns: np.ndarray) -> float:
        """One Adam step on mean((V(obs) - returns)^2); obs [B, obs_dim], returns [B].

        Returns the loss before the step.
        """
        batch = obs.shape[0]
        ws = self._workspaces.get(batch)
        if ws is None:
            ws = self._workspaces[batch] = _Workspace(
                batch, [w.shape[0] for w in self.weights], self._theta.dtype)
        last = len(self.weights) - 1
        # Forward: z_i = h_{i-1} W_i^T + b_i, h_i = f(z_i), keeping f'(z_i).
        inputs = [obs]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = np.matmul(inputs[-1], w.T, out=ws.z[i])
            z += b
            if i < last:
                self.activation(z, ws.h[i], ws.slope[i])
                inputs.append(ws.h[i])
        # Backward of the mean squared error: d loss / d output = 2 (V - R) / B.
        residual = np.subtract(ws.z[last], returns[:, None], out=ws.residual)
        loss = float(np.vdot(residual, residual)) / batch
        delta = np.multiply(residual, 2.0 / batch, out=residual)
        for i in range(last, -1, -1):
            np.matmul(delta.T, inputs[i], out=self._grads[2 * i])
            np.add.reduce(delta, 0, out=self._grads[2 * i + 1])
            if i > 0:
                delta = np.matmul(delta, self.weights[i], out=ws.delta[i - 1])
                delta *= ws.slope[i - 1]
        self.step += 1
        self._adam()
        return loss

    def _adam(self) -> None:
        """One Adam update of the parameters in place (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam):

            m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
            theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
        """
        (beta1, beta2), t, g, m, v, tmp = self.betas, self.step, self._grad, self.m, self.v, self._scratch
        np.subtract(g, m, out=tmp)
        tmp *= 1.0 - beta1
        m += tmp
        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / (1.0 - beta2**t) ** 0.5
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= -self.lr / (1.0 - beta1**t)
        self._theta += tmp

    def fit(self, obs: np.ndarray, returns: np.ndarray, epochs: int, minibatch: int,
            generator: torch.Generator) -> float:
        """`epochs` passes over (obs [B, obs_dim], returns [B]) in random minibatches.

        Returns the mean minibatch loss (nan when epochs is 0).
        """
        return self.start(obs, returns, epochs, minibatch, generator).finish()

    def start(self, obs: np.ndarray, returns: np.ndarray, epochs: int, minibatch: int,
              generator: torch.Generator) -> "PendingFit":
        """`fit` as work to run a minibatch step at a time (`PendingFit.step`), then `finish`.

        The caller must not change obs or returns until the fit is finished.
        """
        if self.linears[0].weight.data_ptr() != self.flat.data_ptr():
            raise RuntimeError("the critic's parameters were moved out of the ValueFitter's flat vector "
                               "(by .to(), .double() or assigning them?); build a new ValueFitter")
        dtype = self._theta.dtype
        return PendingFit(self, np.asarray(obs, dtype), np.asarray(returns, dtype), epochs, minibatch, generator)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "exp_avg": torch.tensor(self.m), "exp_avg_sq": torch.tensor(self.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.m[:] = np.asarray(state["exp_avg"])
        self.v[:] = np.asarray(state["exp_avg_sq"])


class PendingFit:
    """A critic fit started by `ValueFitter.start`: the same steps as `fit`, run when asked."""

    def __init__(self, fitter: ValueFitter, obs: np.ndarray, returns: np.ndarray, epochs: int,
                 minibatch: int, generator: torch.Generator):
        self._steps = self._minibatch_steps(fitter, obs, returns, epochs, minibatch, generator)
        self._losses: list[float] = []
        self.done = False

    @staticmethod
    def _minibatch_steps(fitter: ValueFitter, obs: np.ndarray, returns: np.ndarray, epochs: int,
                         minibatch: int, generator: torch.Generator) -> Iterator[float]:
        n = obs.shape[0]
        for _ in range(epochs):
            perm = torch.randperm(n, generator=generator).numpy()
            obs_p, returns_p = obs[perm], returns[perm]  # one gather per epoch; minibatches are views
            for start in range(0, n, minibatch):
                yield fitter.minibatch_step(obs_p[start:start + minibatch], returns_p[start:start + minibatch])

    def step(self) -> None:
        """Run the next minibatch step, if any remains."""
        if not self.done:
            loss = next(self._steps, None)
            if loss is None:
                self.done = True
            else:
                self._losses.append(loss)

    def finish(self) -> float:
        """Run the remaining steps; the mean minibatch loss (nan when there were none)."""
        self._losses.extend(self._steps)
        self.done = True
        return float(np.mean(self._losses)) if self._losses else float("nan")
