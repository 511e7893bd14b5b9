"""Fitting the critic V(s) to the returns: minibatch MSE regression with Adam.

docs/design.md (The algorithm, step 4), with the mathematics of `torch.optim.Adam` on
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

The fit never reads the policy, so with worker processes
(`trainer.vec_env=subproc`) it runs in a process of its own (`FitWorker`)
while the trainer updates the policy: the critic's parameters and Adam's
moments then live in shared memory, and the minibatch order is drawn in the
trainer from the same generator, so the numbers are those of the in-process fit.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import numpy as np
import torch

from trpo_lab import workers
from trpo_lab.activations import ACTIVATIONS
from trpo_lab.mlp_grad import linear_layers
from trpo_lab.policies import ValueNet


class _Workspace:
    """The arrays of one minibatch size: pre-activations, activations, slopes, deltas."""

    def __init__(self, batch: int, widths: list[int], dtype: np.dtype):
        self.z = [np.empty((batch, w), dtype) for w in widths]
        self.h = [np.empty((batch, w), dtype) for w in widths[:-1]]
        self.slope = [np.empty((batch, w), dtype) for w in widths[:-1]]
        self.delta = [np.empty((batch, w), dtype) for w in widths[:-1]]
        self.residual = np.empty((batch, 1), dtype)


class MLPRegression:
    """Adam on mean((f(x) - y)^2) for an MLP f whose parameters live in one flat array.

    `shapes` are the layers' weight shapes [(out, in), ...]; the flat vector
    holds weight then bias of each layer, in order. theta (the parameters) and
    Adam's moments m and v are arrays the caller owns (they may be shared
    memory); this object writes them in place and holds only buffers.
    """

    def __init__(self, shapes: list[tuple[int, int]], activation: str, theta: np.ndarray, m: np.ndarray,
                 v: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.activation = ACTIVATIONS[activation].numpy_with_slope
        self.theta, self.m, self.v = theta, m, v
        self.lr, self.betas, self.eps = lr, betas, eps
        self.step = 0
        self._grad = np.zeros_like(theta)
        self._scratch = np.zeros_like(theta)
        self.weights, self.biases, self._grads, offset = [], [], [], 0
        for out_dim, in_dim in shapes:
            for shape, params in (((out_dim, in_dim), self.weights), ((out_dim,), self.biases)):
                n = int(np.prod(shape))
                params.append(theta[offset:offset + n].reshape(shape))
                self._grads.append(self._grad[offset:offset + n].reshape(shape))
                offset += n
        if offset != theta.size:
            raise ValueError(f"layer shapes {shapes} hold {offset} parameters, the flat vector {theta.size}")
        self._workspaces: dict[int, _Workspace] = {}

    def minibatch_step(self, obs: np.ndarray, returns: np.ndarray) -> float:
        """One Adam step on mean((f(obs) - returns)^2); obs [B, in], returns [B].

        Returns the loss before the step.
        """
        batch = obs.shape[0]
        ws = self._workspaces.get(batch)
        if ws is None:
            ws = self._workspaces[batch] = _Workspace(batch, [w.shape[0] for w in self.weights], self.theta.dtype)
        last = len(self.weights) - 1
        # Forward: z_i = h_{i-1} W_i^T + b_i, h_i = f(z_i), keeping f'(z_i).
        # (np.dot with out given positionally: the cheapest numpy call for these small products.)
        inputs = [obs]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = np.dot(inputs[-1], w.T, ws.z[i])
            np.add(z, b, z)
            if i < last:
                self.activation(z, ws.h[i], ws.slope[i])
                inputs.append(ws.h[i])
        # Backward of the mean squared error: d loss / d output = 2 (f - y) / B.
        residual = np.subtract(ws.z[last], returns[:, None], ws.residual)
        loss = float(np.vdot(residual, residual)) / batch
        delta = np.multiply(residual, 2.0 / batch, residual)
        for i in range(last, -1, -1):
            np.dot(delta.T, inputs[i], self._grads[2 * i])
            np.add.reduce(delta, 0, None, self._grads[2 * i + 1])
            if i > 0:
                delta = np.dot(delta, self.weights[i], ws.delta[i - 1])
                np.multiply(delta, ws.slope[i - 1], delta)
        self.step += 1
        self._adam()
        return loss

    def _adam(self) -> None:
        """One Adam update of the parameters in place (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam):

            m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
            theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
        """
        (beta1, beta2), t, g, m, v, tmp = self.betas, self.step, self._grad, self.m, self.v, self._scratch
        np.subtract(g, m, tmp)
        np.multiply(tmp, 1.0 - beta1, tmp)
        np.add(m, tmp, m)
        np.multiply(v, beta2, v)
        np.multiply(g, g, tmp)
        np.multiply(tmp, 1.0 - beta2, tmp)
        np.add(v, tmp, v)
        np.sqrt(v, tmp)
        np.multiply(tmp, 1.0 / (1.0 - beta2**t) ** 0.5, tmp)
        np.add(tmp, self.eps, tmp)
        np.divide(m, tmp, tmp)
        np.multiply(tmp, -self.lr / (1.0 - beta1**t), tmp)
        np.add(self.theta, tmp, self.theta)

    def fit(self, obs: np.ndarray, returns: np.ndarray, orders: Iterable[np.ndarray], minibatch: int) -> float:
        """One pass over (obs, returns) per permutation in `orders`, in minibatches of that order.

        Returns the mean minibatch loss (nan when there were no steps).
        """
        losses = []
        for order in orders:
            obs_p, returns_p = obs[order], returns[order]  # one gather per epoch; minibatches are views
            for start in range(0, obs.shape[0], minibatch):
                losses.append(self.minibatch_step(obs_p[start:start + minibatch], returns_p[start:start + minibatch]))
        return float(np.mean(losses)) if losses else float("nan")


def minibatch_orders(n: int, epochs: int, generator: torch.Generator) -> Iterable[np.ndarray]:
    """The epochs' random orders of n samples, drawn from `generator` one epoch at a time."""
    for _ in range(epochs):
        yield torch.randperm(n, generator=generator).numpy()


class ValueFitter:
    """Adam on the MSE of a `ValueNet`, with the gradient computed by hand in numpy (`MLPRegression`).

    The net's parameters are re-pointed into one flat vector (the module, its
    state_dict and checkpoints are unchanged) that numpy views. Holds Adam's
    state; `state_dict` saves it. `use_worker` moves the fits to a process of
    their own.
    """

    def __init__(self, value: ValueNet, activation: str, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.net, self.activation_name = value.net, activation
        self.linears = linear_layers(value.net)
        self.shapes = [tuple(layer.weight.shape) for layer in self.linears]
        with torch.no_grad():
            flat = torch.cat([p.reshape(-1) for layer in self.linears for p in (layer.weight, layer.bias)])
        self._bind(flat.numpy(), np.zeros_like(flat.numpy()), np.zeros_like(flat.numpy()), lr, betas, eps)
        self.worker: FitWorker | None = None

    def _bind(self, theta: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float,
              betas: tuple[float, float], eps: float) -> None:
        """Make theta (holding the parameters' values) the storage of the net's parameters."""
        self.flat = torch.from_numpy(theta)
        offset = 0
        for layer in self.linears:
            for p in (layer.weight, layer.bias):
                p.data = self.flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        step = self.core.step if hasattr(self, "core") else 0
        self.core = MLPRegression(self.shapes, self.activation_name, theta, m, v, lr, betas, eps)
        self.core.step = step

    def fit(self, obs: np.ndarray, returns: np.ndarray, epochs: int, minibatch: int,
            generator: torch.Generator) -> float:
        """`epochs` passes over (obs [B, obs_dim], returns [B]) in random minibatches.

        Returns the mean minibatch loss (nan when epochs is 0).
        """
        return self.start(obs, returns, epochs, minibatch, generator).finish()

    def start(self, obs: np.ndarray, returns: np.ndarray, epochs: int, minibatch: int,
              generator: torch.Generator) -> "PendingFit":
        """`fit`, run in the worker from now on if there is one, else when `finish` is called.

        Until `finish`, the caller must not change obs or returns, nor use the critic.
        """
        if self.linears[0].weight.data_ptr() != self.flat.data_ptr():
            raise RuntimeError("the critic's parameters were moved out of the ValueFitter's flat vector "
                               "(by .to(), .double() or assigning them?); build a new ValueFitter")
        dtype = self.core.theta.dtype
        obs, returns = np.asarray(obs, dtype), np.asarray(returns, dtype)
        orders = minibatch_orders(obs.shape[0], epochs, generator)
        if self.worker is not None:
            self.worker.start(obs, returns, list(orders), minibatch, self.core.step)
            return PendingFit(lambda: self.worker.finish(self.core))
        return PendingFit(lambda: self.core.fit(obs, returns, orders, minibatch))

    def use_worker(self, batch: int, epochs: int) -> None:
        """Run the fits of up to `epochs` epochs of `batch` samples in a worker process from now on."""
        if self.worker is None:
            self.worker = FitWorker(self, batch, epochs)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.core.step, "exp_avg": torch.tensor(self.core.m), "exp_avg_sq": torch.tensor(self.core.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.core.step = int(state["step"])
        self.core.m[:] = np.asarray(state["exp_avg"])
        self.core.v[:] = np.asarray(state["exp_avg_sq"])


class PendingFit:
    """A critic fit started by `ValueFitter.start`; `finish` returns its mean minibatch loss."""

    def __init__(self, run: Callable[[], float]):
        self._run, self._loss = run, None

    def finish(self) -> float:
        if self._loss is None:
            self._loss = self._run()
        return self._loss


# FitWorker commands and statuses (control block: command, status, Adam step, samples, epochs, minibatch).
_FIT, _CLOSE = 0, 1


class FitWorker:
    """A process that runs a ValueFitter's fits (see the module docstring).

    Shared memory: the parameters, Adam's moments, the inputs (obs, returns,
    the epochs' orders) and a control block; the parent and the worker hand
    over with two semaphores (trpo_lab/workers.py).
    """

    def __init__(self, fitter: ValueFitter, batch: int, epochs: int):
        ctx = workers.context()
        core = fitter.core
        dtype = core.theta.dtype
        code = "f" if dtype == np.float32 else "d"
        obs_dim = fitter.shapes[0][1]
        self._raw = {"theta": ctx.RawArray(code, core.theta.size), "m": ctx.RawArray(code, core.theta.size),
                     "v": ctx.RawArray(code, core.theta.size), "obs": ctx.RawArray(code, batch * obs_dim),
                     "returns": ctx.RawArray(code, batch), "orders": ctx.RawArray("q", max(1, epochs) * batch),
                     "control": ctx.RawArray("q", 6), "loss": ctx.RawArray("d", 1)}
        arrays = _fit_arrays(self._raw, dtype, batch, obs_dim, epochs)
        for name in ("theta", "m", "v"):
            arrays[name][:] = getattr(core, name)
        fitter._bind(arrays["theta"], arrays["m"], arrays["v"], core.lr, core.betas, core.eps)
        self._arrays, self.batch, self.epochs = arrays, batch, epochs
        self._go, done = ctx.Semaphore(0), ctx.Semaphore(0)
        receive, self._errors = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_fit_worker, daemon=True,
            args=(self._raw, str(dtype), batch, obs_dim, epochs, fitter.shapes, fitter.activation_name,
                  (core.lr, core.betas, core.eps), self._go, done, self._errors, os.getpid()))
        self.process.start()
        self._errors.close()
        self._receive = receive
        self._done = workers.Waiter(done, alive=self.process.is_alive)
        self._ready()

    def _ready(self) -> None:
        """Wait for the worker's signal: started (its start-up is not fitting time), or a fit done."""
        try:
            self._done.wait()
        except EOFError as err:
            raise RuntimeError(f"the critic-fit worker process died (exit code {self.process.exitcode})") from err

    def start(self, obs: np.ndarray, returns: np.ndarray, orders: list[np.ndarray], minibatch: int,
              adam_step: int) -> None:
        n = obs.shape[0]
        if n > self.batch or len(orders) > self.epochs:
            raise ValueError(f"a fit of {len(orders)} epochs of {n} samples; the worker holds "
                             f"{self.epochs} of {self.batch}")
        a = self._arrays
        a["obs"][:n] = obs
        a["returns"][:n] = returns
        for e, order in enumerate(orders):
            a["orders"][e, :n] = order
        a["control"][:] = (_FIT, workers.OK, adam_step, n, len(orders), minibatch)
        self._go.release()

    def finish(self, core: MLPRegression) -> float:
        """Wait for the fit; update core's Adam step count; the mean minibatch loss."""
        self._ready()
        control = self._arrays["control"]
        if control[1] != workers.OK:
            raise RuntimeError(f"the critic fit failed in its worker: {self._receive.recv_bytes().decode()}")
        core.step = int(control[2])
        return float(self._arrays["loss"][0])

    def close(self) -> None:
        self._arrays["control"][0] = _CLOSE
        self._go.release()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()


def _fit_arrays(raw: dict, dtype, batch: int, obs_dim: int, epochs: int) -> dict[str, np.ndarray]:
    views = {name: np.frombuffer(raw[name], dtype=dtype) for name in ("theta", "m", "v", "obs", "returns")}
    views["obs"] = views["obs"].reshape(batch, obs_dim)
    views["orders"] = np.frombuffer(raw["orders"], dtype=np.int64).reshape(max(1, epochs), batch)
    views["control"] = np.frombuffer(raw["control"], dtype=np.int64)
    views["loss"] = np.frombuffer(raw["loss"], dtype=np.float64)
    return views


def _fit_worker(raw: dict, dtype: str, batch: int, obs_dim: int, epochs: int, shapes, activation: str,
                adam: tuple, go, done, errors, parent_pid: int) -> None:
    workers.blas_threads(1)
    a = _fit_arrays(raw, np.dtype(dtype), batch, obs_dim, epochs)
    control = a["control"]
    core = MLPRegression(shapes, activation, a["theta"], a["m"], a["v"], *adam)

    def step() -> bool:
        if control[0] == _CLOSE:
            return False
        core.step, n, n_epochs, minibatch = (int(x) for x in control[2:6])
        a["loss"][0] = core.fit(a["obs"][:n], a["returns"][:n], a["orders"][:n_epochs, :n], minibatch)
        control[2] = core.step
        return True

    workers.serve(lambda: step, go, done, control, 1, errors, parent_pid)
