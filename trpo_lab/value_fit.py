"""Fitting the critic V(s) to the returns: minibatch MSE regression with Adam.

DESIGN.md step 4, with the mathematics of `torch.optim.Adam` on
`mean((V(s) - R)^2)`, written out for the MLP critic. An iteration makes
epochs x (batch / minibatch) = 320 tiny steps (minibatch 128, 64x64 net) at
the rl-zoo3 settings; through autograd and `torch.optim` each costs about a
millisecond of framework overhead on one CPU thread, several times its
arithmetic. Here a step is a forward pass, a hand-written backward pass
(`mlp_grad.Linearisation`) and an Adam step on one flat parameter vector:
about 20 tensor operations and no graph. tests/test_value_fit.py checks it
against autograd + torch.optim.Adam.
"""
from __future__ import annotations

from typing import Any

import torch

from trpo_lab.mlp_grad import Linearisation, linear_layers
from trpo_lab.policies import ValueNet


def adam_step(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int,
              lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """One Adam update in place (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam computes it).

        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
        param <- param - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
    """
    m.lerp_(grad, 1.0 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = (v.sqrt() / (1.0 - beta2**step) ** 0.5).add_(eps)
    param.addcdiv_(m, denom, value=-lr / (1.0 - beta1**step))


class ValueFitter:
    """Adam on the MSE of a `ValueNet`, with the gradient computed by hand.

    The net's parameters are re-pointed into one flat vector (the module, its
    state_dict and checkpoints are unchanged), so Adam is a handful of
    operations on that vector. Holds Adam's state; `state_dict` saves it.
    """

    def __init__(self, value: ValueNet, activation: str, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.net, self.activation = value.net, activation
        self.linears = linear_layers(value.net)
        self.lr, self.betas, self.eps = lr, betas, eps
        params = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        with torch.no_grad():
            self.flat = torch.cat([p.reshape(-1) for p in params])
        self.grad = torch.zeros_like(self.flat)
        self.grads = []  # views of self.grad shaped like the parameters, in their order
        offset = 0
        for layer in self.linears:
            for p in (layer.weight, layer.bias):
                n = p.numel()
                p.data = self.flat[offset:offset + n].view_as(p)
                self.grads.append(self.grad[offset:offset + n].view_as(p))
                offset += n
        self.m, self.v, self.step = torch.zeros_like(self.flat), torch.zeros_like(self.flat), 0

    @torch.no_grad()
    def minibatch_step(self, obs: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        """One Adam step on mean((V(obs) - returns)^2); obs [B, obs_dim], returns [B].

        Returns the loss before the step, a 0-d tensor.
        """
        lin = Linearisation(self.net, self.activation, obs)
        residual = lin.output.squeeze(-1) - returns
        loss = residual.dot(residual) / residual.shape[0]
        lin.vjp((residual * (2.0 / residual.shape[0])).unsqueeze(-1), out=self.grads)
        self.step += 1
        adam_step(self.flat, self.grad, self.m, self.v, self.step, self.lr, *self.betas, self.eps)
        return loss

    def fit(self, obs: torch.Tensor, returns: torch.Tensor, epochs: int, minibatch: int,
            generator: torch.Generator) -> float:
        """`epochs` passes over (obs [B, obs_dim], returns [B]) in random minibatches.

        Returns the mean minibatch loss (nan when epochs is 0).
        """
        return self.start(obs, returns, epochs, minibatch, generator).finish()

    def start(self, obs: torch.Tensor, returns: torch.Tensor, epochs: int, minibatch: int,
              generator: torch.Generator) -> "PendingFit":
        """`fit` as work to run a minibatch step at a time (`PendingFit.step`), then `finish`.

        The caller must not change obs or returns until the fit is finished.
        """
        if self.linears[0].weight.data_ptr() != self.flat.data_ptr():
            raise RuntimeError("the critic's parameters were moved out of the ValueFitter's flat vector "
                               "(by .to(), .double() or assigning them?); build a new ValueFitter")
        return PendingFit(self, obs, returns, epochs, minibatch, generator)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "exp_avg": self.m.clone(), "exp_avg_sq": self.v.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.m.copy_(state["exp_avg"])
        self.v.copy_(state["exp_avg_sq"])


class PendingFit:
    """A critic fit started by `ValueFitter.start`: the same steps as `fit`, run when asked."""

    def __init__(self, fitter: ValueFitter, obs: torch.Tensor, returns: torch.Tensor, epochs: int,
                 minibatch: int, generator: torch.Generator):
        self._steps = self._minibatch_steps(fitter, obs, returns, epochs, minibatch, generator)
        self._losses: list[torch.Tensor] = []
        self.done = False

    @staticmethod
    def _minibatch_steps(fitter, obs, returns, epochs, minibatch, generator):
        n = obs.shape[0]
        for _ in range(epochs):
            perm = torch.randperm(n, generator=generator)
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
        return float(torch.stack(self._losses).mean()) if self._losses else float("nan")
