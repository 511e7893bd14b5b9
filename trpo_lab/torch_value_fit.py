"""Fitting a critic that is not an MLP (the Nature CNN) to the returns: autograd and torch.optim.Adam.

The same regression as value_fit.ValueFitter (minibatch MSE, Adam, the epochs'
orders drawn from the same generator), with its interface (`start`, `fit`,
`state_dict`, ...), on the device the critic is on. value_fit's hand-written
numpy fit exists for MLPs only; for a CNN the convolutions dominate and
autograd's overhead does not matter.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trpo_lab.policies import ValueNet
from trpo_lab.value_fit import PendingFit, minibatch_orders


class TorchValueFitter:
    def __init__(self, value: ValueNet, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.value = value
        self.optimizer = torch.optim.Adam(value.parameters(), lr=lr, betas=betas, eps=eps)

    def fit(self, obs: np.ndarray, returns: np.ndarray, epochs: int, minibatch: int,
            generator: torch.Generator) -> float:
        return self.start(obs, returns, epochs, minibatch, generator).finish()

    def start(self, obs: np.ndarray, returns: np.ndarray, epochs: int, minibatch: int,
              generator: torch.Generator) -> PendingFit:
        """`epochs` passes over (obs [B, obs_dim], returns [B]) in random minibatches, run at `finish`."""
        device = next(self.value.parameters()).device
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32)).to(device)
        returns_t = torch.as_tensor(np.asarray(returns, dtype=np.float32)).to(device)
        orders = minibatch_orders(obs_t.shape[0], epochs, generator)

        def run() -> float:
            losses = []
            for order in orders:
                order = torch.from_numpy(order).to(device)
                for start in range(0, obs_t.shape[0], minibatch):
                    idx = order[start:start + minibatch]
                    loss = ((self.value.net(obs_t[idx]).squeeze(-1) - returns_t[idx]) ** 2).mean()
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    losses.append(loss.detach())
            return float(torch.stack(losses).mean()) if losses else float("nan")

        return PendingFit(run)

    def use_worker(self, batch: int, epochs: int) -> None:
        """No worker process for a torch critic: its fit runs in the trainer."""

    def close(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
