"""Acting through torch, for the policies without a numpy copy (those whose net is not an MLP: the CNN).

`TorchActor` has the interface collection and evaluation use (`noise`, `sample`,
`deterministic`; see `actor.NumpyActor`) and runs the policy itself, on the
device its parameters are on, so it sees the policy's current parameters:
callers act with it only while the policy is not being updated (collection
and evaluation run between updates). The randomness is drawn in numpy from the
collector's generator, as for NumpyActor, so runs depend on their seed alone.
"""
from __future__ import annotations

import numpy as np
import torch


class TorchActor:
    def __init__(self, policy):
        self.policy = policy
        first = next(policy.parameters())
        self.device, self.dtype = first.device, first.dtype

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.dtype).to(self.device)

    def noise(self, rng: np.random.Generator, steps: int, n: int) -> tuple[np.ndarray, None]:
        """The randomness of `steps` calls to `sample` for n observations, [steps, n, noise_dim]:
        standard normal for a Gaussian policy, uniform on [0, 1) otherwise."""
        shape = (steps, n, self.policy.noise_dim())
        return (rng.standard_normal(shape) if self.policy.noise_kind == "normal" else rng.random(shape)), None

    @torch.no_grad()
    def sample(self, obs: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions [N, ...], their log-probabilities [N] float64) for obs [N, obs_dim]."""
        actions, logp = self.policy.sample_from_noise(self._tensor(obs).reshape(len(obs), -1), self._tensor(noise))
        return actions.cpu().numpy(), logp.double().cpu().numpy()

    @torch.no_grad()
    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.mode(self._tensor(obs).reshape(len(obs), -1)).cpu().numpy()
