"""Running normalisation of observations (part of the policy) and of rewards (by the return's spread)."""
from __future__ import annotations

from typing import Any

import numpy as np


class RunningMeanStd:
    """Running mean and variance over batches (Chan et al. parallel update), float64."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape)
        self.var = np.ones(shape)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        # Sums rather than batch.mean / batch.var: the same numbers without their
        # Python-level overhead, which dominates for the per-step batch of N rows.
        n = batch.shape[0]
        batch_mean = np.add.reduce(batch, 0) / n
        diff = batch - batch_mean
        batch_var = np.add.reduce(diff * diff, 0) / n
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def update_each(self, batches: np.ndarray) -> np.ndarray:
        """`update` with batches[0], then batches[1], ...; returns the variance after each, [T, ...].

        batches: [T, n, ...]. Vectorised over T by prefix sums instead of T
        calls: with y = x - mean_0 (the mean before), S_t and Q_t the running
        sums of y and y^2 and c_t the running count, the mean after batch t is
        mean_0 + S_t / c_t and the variance (var_0 c_0 + Q_t - S_t^2 / c_t) / c_t:
        the pooled statistics the sequential update computes, up to rounding.
        """
        T, n = batches.shape[:2]
        y = batches - self.mean
        counts = (self.count + n * np.arange(1, T + 1)).reshape(T, *([1] * (batches.ndim - 2)))
        sums = np.cumsum(y.sum(1), axis=0)
        squares = np.cumsum((y * y).sum(1), axis=0)
        variances = (self.var * self.count + squares - sums * sums / counts) / counts
        self.mean = self.mean + sums[-1] / counts[-1]
        self.var = variances[-1]
        self.count = float(counts[-1])
        return variances

    def state_dict(self) -> dict[str, Any]:
        return {"mean": np.array(self.mean, copy=True), "var": np.array(self.var, copy=True), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = np.array(state["mean"]), np.array(state["var"]), float(state["count"])


class ObsNormalizer:
    """(obs - running mean) / running std, clipped; part of the policy's state."""

    def __init__(self, shape: tuple[int, ...], enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(shape)
        self.enabled, self.clip, self.eps = enabled, clip, eps

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        """obs [n, ...] normalised, as rows [n, d] (an image's pixels side by side)."""
        obs = obs.reshape(obs.shape[0], -1)
        if not self.enabled:
            return obs
        if update:
            self.rms.update(obs)
        return np.clip((obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps), -self.clip, self.clip)

    def rollout(self) -> "RolloutNormalizer":
        """Per-step updating and normalising for one rollout; call its `finish` at the end."""
        return RolloutNormalizer(self)

    def state_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "clip": self.clip, **self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.enabled, self.clip = bool(state["enabled"]), float(state["clip"])
        self.rms.load_state_dict(state)


class RolloutNormalizer:
    """`ObsNormalizer(obs, update=True)` step after step, with the statistics kept as sums.

    The per-step update of `RunningMeanStd` is a dozen small numpy calls; here
    it is four. Anchored at the mean m0, variance v0 and count c0 at the start
    of the rollout: with y = x - m0 for every row x seen since, S = sum y,
    Q = v0 c0 + sum y^2 and c = c0 + rows, the running statistics are
    mean = m0 + S / c and var = Q / c - (S / c)^2, the pooled statistics the
    sequential update computes (as `RunningMeanStd.update_each` does), up to
    rounding. `finish` writes them back into the normaliser.
    """

    def __init__(self, norm: ObsNormalizer):
        self.norm, rms = norm, norm.rms
        self.enabled = norm.enabled
        d = rms.mean.size
        self._anchor, self._count = rms.mean.reshape(-1).copy(), rms.count
        self._sums = np.zeros(2 * d)  # [S, Q]
        self._sums[d:] = rms.var.reshape(-1) * rms.count
        self._rows = np.empty((0, 2 * d))  # [n, 2d]: y and y^2 of the latest step
        self._row_sums = np.empty(2 * d)
        self._scaled = np.empty(2 * d)      # [S / c, Q / c]
        self._mean_offset, self._second = self._scaled[:d], self._scaled[d:]
        self._std = np.empty(d)
        self._d = d

    def step(self, obs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Add obs [n, d] to the statistics, then write obs normalised with them into `out` [n, d].

        Called once per environment step: every numpy call writes into an array
        kept from the last call (out given positionally: keyword parsing costs
        a measurable share of a call on arrays this small).
        """
        if obs.ndim != 2:  # images: [n, C, H, W] as rows of d numbers
            obs = obs.reshape(obs.shape[0], self._d)
        if not self.enabled:
            np.copyto(out, obs)
            return out
        rows = self._rows
        if rows.shape[0] != obs.shape[0]:
            rows = self._rows = np.empty((obs.shape[0], 2 * self._d))
            self._y, self._y2 = rows[:, :self._d], rows[:, self._d:]
        y = self._y
        np.subtract(obs, self._anchor, y)
        np.multiply(y, y, self._y2)
        np.add.reduce(rows, 0, None, self._row_sums)
        np.add(self._sums, self._row_sums, self._sums)
        self._count += obs.shape[0]
        self._update_std()
        return self._normalise(y, out)

    def normalise(self, obs: np.ndarray) -> np.ndarray:
        """obs [n, d] normalised with the statistics so far, without adding it (float64)."""
        obs = obs.reshape(obs.shape[0], self._d)  # as `step` does: rows of d numbers
        if not self.enabled:
            return np.array(obs, dtype=np.float64)
        return self._normalise(obs - self._anchor, np.empty(obs.shape))

    def _update_std(self) -> None:
        std, mean_offset = self._std, self._mean_offset
        np.multiply(self._sums, 1.0 / self._count, self._scaled)  # [S/c, Q/c]
        np.multiply(mean_offset, mean_offset, std)
        np.subtract(self._second, std, std)                       # var = Q/c - (S/c)^2
        np.add(std, self.norm.eps, std)
        np.sqrt(std, std)

    def _normalise(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """(y - S/c) / std, clipped, into out: y is obs - m0, so this is (obs - mean) / std."""
        np.subtract(y, self._mean_offset, out)
        np.divide(out, self._std, out)
        np.minimum(out, self.norm.clip, out=out)  # (np.minimum and np.maximum take out by keyword only)
        np.maximum(out, -self.norm.clip, out=out)
        return out

    def finish(self) -> None:
        """Write the statistics back into the normaliser's RunningMeanStd."""
        if not self.enabled:
            return
        rms, d = self.norm.rms, self._d
        mean_offset, second = self._sums[:d] / self._count, self._sums[d:] / self._count
        shape = rms.mean.shape
        rms.mean = (self._anchor + mean_offset).reshape(shape)
        rms.var = (second - mean_offset * mean_offset).reshape(shape)
        rms.count = float(self._count)


class RewardScaler:
    """Divides rewards by the running std of each environment's discounted return."""

    def __init__(self, n_envs: int, gamma: float, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(n_envs)
        self.gamma, self.enabled, self.clip, self.eps = gamma, enabled, clip, eps

    def __call__(self, rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
        """Scaled rewards of one rollout; rewards and episode_ends [T, N].

        Step t's reward is divided by the std of the discounted returns seen up
        to and including step t (as if scaled step by step, like sb3's
        VecNormalize); the return of an environment restarts after its episode ends.
        """
        if not self.enabled:
            return rewards
        returns = np.empty_like(rewards)
        running = self.returns
        for t in range(rewards.shape[0]):
            running = running * self.gamma + rewards[t]
            returns[t] = running
            running[episode_ends[t]] = 0.0
        self.returns = running
        variances = self.rms.update_each(returns)  # [T]
        scaled = rewards / np.sqrt(variances + self.eps)[:, None]
        return np.clip(scaled, -self.clip, self.clip)

    @property
    def scale(self) -> float:
        """Factor from environment rewards to the rewards the value net is fitted on."""
        return 1.0 / float(np.sqrt(self.rms.var + self.eps)) if self.enabled else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"returns": self.returns.copy(), **self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns = np.array(state["returns"])
        self.rms.load_state_dict(state)
