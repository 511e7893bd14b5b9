"""Environments: construction, vectorisation, and running normalisation.

`SyncVecEnv` steps N gymnasium environments in this process; `SubprocVecEnv`
steps each in a worker process. Both reset an environment as soon as its
episode ends and hand back the final observation of that episode separately,
so the trainer can bootstrap episodes cut by a time limit with V(s_final).
"""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from trpo_lab.config import EnvConfig


class EnvError(RuntimeError):
    """The environment cannot be used by trpo_lab (space type, construction failure)."""


def make_env(cfg: EnvConfig) -> gym.Env:
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        env = gym.make(cfg.id, **kwargs)
    except Exception as err:
        raise EnvError(f"could not build env.id={cfg.id!r}: {err}") from err
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise EnvError(f"env.id={cfg.id!r} has observation space {env.observation_space}; "
                       "trpo_lab needs a Box (vector) observation")
    if not isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise EnvError(f"env.id={cfg.id!r} has action space {env.action_space}; "
                       "trpo_lab handles Box and Discrete")
    return env


@dataclass
class StepResult:
    """One step of N environments. Arrays have leading dimension N."""

    obs: np.ndarray          # next observations; after an episode end, the reset observation
    rewards: np.ndarray      # float64 [N], as the environment gave them
    terminated: np.ndarray   # bool [N], true terminal states (no bootstrapping)
    truncated: np.ndarray    # bool [N], cut by a time limit (bootstrap from final_obs)
    final_obs: dict[int, np.ndarray] = field(default_factory=dict)  # env index -> last observation
    episodes: list[tuple[float, int]] = field(default_factory=list)  # finished (return, length)


class _EpisodeTracker:
    def __init__(self, n: int):
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=np.int64)

    def add(self, rewards: np.ndarray, ended: np.ndarray) -> list[tuple[float, int]]:
        self.returns += rewards
        self.lengths += 1
        if not ended.any():
            return []
        finished = []
        for i in np.flatnonzero(ended):
            finished.append((float(self.returns[i]), int(self.lengths[i])))
            self.returns[i] = 0.0
            self.lengths[i] = 0
        return finished


def _step_one(env: gym.Env, action) -> tuple[np.ndarray, float, bool, bool, np.ndarray | None]:
    obs, reward, terminated, truncated, _ = env.step(action)
    final = None
    if terminated or truncated:
        final = obs
        obs, _ = env.reset()
    return obs, reward, terminated, truncated, final


class SyncVecEnv:
    """N environments stepped one after another in this process.

    `step` writes into arrays allocated once and returns views of them: the
    StepResult of one step is valid until the next call (copy what you keep).
    """

    def __init__(self, cfg: EnvConfig, n_envs: int, seed: int):
        self.envs = [make_env(cfg) for _ in range(n_envs)]
        self.num_envs = n_envs
        self.seed = seed
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self._tracker = _EpisodeTracker(n_envs)
        self._allocate()

    def _allocate(self) -> None:
        n, shape = self.num_envs, self.observation_space.shape
        self._obs = np.zeros((n, *shape))
        self._rewards = np.zeros(n)
        self._terminated = np.zeros(n, dtype=bool)
        self._truncated = np.zeros(n, dtype=bool)

    def reset(self) -> np.ndarray:
        obs = []
        for i, env in enumerate(self.envs):
            env.action_space.seed(self.seed + i)
            obs.append(env.reset(seed=self.seed + i)[0])
        return np.asarray(obs, dtype=np.float64)

    def step(self, actions: np.ndarray) -> StepResult:
        final_obs: dict[int, np.ndarray] = {}
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            self._store(i, _step_one(env, action), final_obs)
        return self._result(final_obs)

    def _store(self, i: int, result: tuple, final_obs: dict[int, np.ndarray]) -> None:
        """Write environment i's `_step_one` result into the step arrays."""
        obs, self._rewards[i], self._terminated[i], self._truncated[i], final = result
        self._obs[i] = obs
        if final is not None:
            final_obs[i] = np.asarray(final, dtype=np.float64)

    def _result(self, final_obs: dict[int, np.ndarray]) -> StepResult:
        episodes = self._tracker.add(self._rewards, self._terminated | self._truncated)
        return StepResult(self._obs, self._rewards, self._terminated, self._truncated, final_obs, episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(remote, parent_remote, cfg: EnvConfig) -> None:
    parent_remote.close()
    env = make_env(cfg)
    try:
        while True:
            cmd, data = remote.recv()
            if cmd == "step":
                remote.send(_step_one(env, data))
            elif cmd == "reset":
                env.action_space.seed(data)
                remote.send(env.reset(seed=data)[0])
            elif cmd == "close":
                break
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        env.close()
        remote.close()


class SubprocVecEnv(SyncVecEnv):
    """N environments, each stepped in its own worker process, all at once."""

    def __init__(self, cfg: EnvConfig, n_envs: int, seed: int):
        probe = make_env(cfg)  # fail here, with a clear message, rather than in a worker
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        self.num_envs = n_envs
        self.seed = seed
        self._tracker = _EpisodeTracker(n_envs)
        self._allocate()
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        self.remotes, self.processes = [], []
        for _ in range(n_envs):
            remote, work_remote = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(work_remote, remote, cfg), daemon=True)
            proc.start()
            work_remote.close()
            self.remotes.append(remote)
            self.processes.append(proc)

    def reset(self) -> np.ndarray:
        for i, remote in enumerate(self.remotes):
            remote.send(("reset", self.seed + i))
        return np.asarray([remote.recv() for remote in self.remotes], dtype=np.float64)

    def step(self, actions: np.ndarray) -> StepResult:
        for remote, a in zip(self.remotes, actions):
            remote.send(("step", a))
        final_obs: dict[int, np.ndarray] = {}
        for i, remote in enumerate(self.remotes):
            self._store(i, remote.recv(), final_obs)
        return self._result(final_obs)

    def close(self) -> None:
        for remote in self.remotes:
            try:
                remote.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


def make_vec_env(cfg: EnvConfig, n_envs: int, seed: int, kind: str = "sync") -> SyncVecEnv:
    return (SubprocVecEnv if kind == "subproc" else SyncVecEnv)(cfg, n_envs, seed)


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
        if not self.enabled:
            return obs
        if update:
            self.rms.update(obs)
        return np.clip((obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps), -self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "clip": self.clip, **self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.enabled, self.clip = bool(state["enabled"]), float(state["clip"])
        self.rms.load_state_dict(state)


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
