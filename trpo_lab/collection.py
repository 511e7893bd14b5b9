"""Collecting the batch of an update: who acts (the behaviour policy beta) and on which environments.

Two collectors share one interface, chosen by `trainer.collection`:

    SyncCollector    this process steps the vector env, then the trainer updates
                     (`trainer.policy_lag=K`: beta is the policy of K updates ago)
    AsyncCollector   rollout worker processes step continuously while the trainer
                     updates (trpo_lab/async_collection.py)

Both fill a `Rollout` in which every sample carries its behaviour
log-probability and the version of the policy that produced it (version v:
the parameters after v updates), so the update can correct for beta != pi_old
(docs/off_policy.md).
"""
from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch

from trpo_lab.vec_env import SyncVecEnv, make_vec_env


class DivergedError(RuntimeError):
    """Training produced non-finite numbers (environment output, losses or parameters)."""


@dataclass
class Rollout:
    """One iteration's batch, [T, N] leading dimensions (T steps of N environments)."""

    obs: np.ndarray            # float32 [T, N, obs_dim], normalised as the policy saw them
    actions: np.ndarray        # float32 [T, N, act_dim] (Box), int64 [T, N] (Discrete) or [T, N, k] (Multi*)
    behaviour_logp: np.ndarray  # float64 [T, N], log beta(a|s) at collection time
    rewards: np.ndarray        # float64 [T, N], scaled rewards (RewardScaler) once collected
    terminated: np.ndarray     # bool [T, N]
    episode_ends: np.ndarray   # bool [T, N], terminated or truncated
    versions: np.ndarray       # int64 [T, N], the version of the policy that acted
    last_obs: np.ndarray | None = None  # float32 [N, obs_dim], normalised s_T
    # (t, env, normalised final observation) of episodes cut by a time limit
    truncations: list[tuple[int, int, np.ndarray]] | None = None
    # beta's distribution parameters at obs, flat [T * N, ...] (Policy.dist_params);
    # None where beta is pi_old for every sample.
    behaviour_dist: Optional[tuple[torch.Tensor, ...]] = None

    @classmethod
    def allocate(cls, T: int, N: int, obs_dim: int, action_space: gym.Space) -> "Rollout":
        if isinstance(action_space, gym.spaces.Discrete):
            actions = np.zeros((T, N), dtype=np.int64)
        elif isinstance(action_space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
            actions = np.zeros((T, N, int(np.prod(action_space.shape))), dtype=np.int64)
        else:
            actions = np.zeros((T, N, int(np.prod(action_space.shape))), dtype=np.float32)
        return cls(
            obs=np.zeros((T, N, obs_dim), dtype=np.float32), actions=actions,
            behaviour_logp=np.zeros((T, N)), rewards=np.zeros((T, N)),
            terminated=np.zeros((T, N), dtype=bool), episode_ends=np.zeros((T, N), dtype=bool),
            versions=np.zeros((T, N), dtype=np.int64),
        )

    def check_finite(self, next_obs: np.ndarray) -> None:
        """Raise DivergedError if the environment gave a non-finite observation or reward.

        A non-finite observation makes every normalised one after it non-finite
        (the running sums hold it), so checking the stored ones covers them all.
        """
        if not (np.isfinite(self.obs).all() and np.isfinite(next_obs).all() and np.isfinite(self.rewards).all()
                and all(np.isfinite(f).all() for _, _, f in self.truncations)):
            raise DivergedError("the environment returned a non-finite observation or reward")

    def lags(self, version: int) -> np.ndarray:
        """How many updates older than pi_old (version `version`) each sample's policy is, [T, N]."""
        return version - self.versions


def collect(venv: SyncVecEnv, agent, actor, obs: np.ndarray, rollout: Rollout,
            rng: np.random.Generator, episodes: deque) -> np.ndarray:
    """Fill `rollout` by acting with `actor` (Policy.actor()); returns the observation to continue from.

    The per-step path writes into preallocated arrays; what can wait for the
    whole rollout (the finiteness checks, reward scaling) does.
    """
    box = isinstance(venv.action_space, gym.spaces.Box)
    rollout.truncations = []
    noise, logp = actor.noise(rng, *rollout.behaviour_logp.shape)
    if logp is not None:
        rollout.behaviour_logp[:] = logp
    if box:
        low, high = venv.action_space.low, venv.action_space.high
        clipped = np.empty(rollout.actions.shape[1:])
    norm = agent.obs_norm.rollout()
    obs_n = np.empty(rollout.obs.shape[1:])  # float64, as the actor computes; stored as float32
    for t in range(rollout.obs.shape[0]):
        norm.step(obs, obs_n)
        rollout.obs[t] = obs_n
        actions, step_logp = actor.sample(obs_n, noise[t])
        if step_logp is not None:
            rollout.behaviour_logp[t] = step_logp
        rollout.actions[t] = actions
        if box:
            np.minimum(actions, high, out=clipped)
            venv.step_async(np.maximum(clipped, low, out=clipped))
        else:
            venv.step_async(actions)
        step = venv.step_wait()
        rollout.rewards[t] = step.rewards  # as the environment gave them; scaled below
        rollout.terminated[t] = step.terminated
        np.logical_or(step.terminated, step.truncated, rollout.episode_ends[t])
        for i, final in step.final_obs.items():
            if step.truncated[i] and not step.terminated[i]:
                rollout.truncations.append((t, i, norm.normalise(final[None])[0]))
        if step.episodes:
            episodes.extend(step.episodes)
        obs = step.obs  # the vector env's buffer: read (by norm.step) before the next step rewrites it
    norm.finish()
    rollout.check_finite(obs)
    rollout.rewards[:] = agent.reward_scaler(rollout.rewards, rollout.episode_ends)
    rollout.last_obs = agent.obs_norm(obs).astype(np.float32)
    return obs.copy()


def _policy_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


class SyncCollector:
    """Collects each batch in this process, with the policy of `policy_lag` updates ago.

    Update k (pi_old = version k - 1) learns from a batch acted on by version
    max(0, k - 1 - policy_lag): the last policy_lag + 1 versions are kept
    (`behaviour_policies`, saved in checkpoints), so a run's numbers depend on
    its seed alone and resume exactly. The observation normaliser is the
    agent's, updated as the batch comes in, whatever the lag: the stale part of
    beta is its network, and the stored observations are the ones it saw.
    With policy_lag=0 this is the on-policy collection, number for number.
    """

    def __init__(self, cfg, T: int, N: int, seed: int):
        tc = cfg.trainer
        self.venv = make_vec_env(cfg.env, N, seed, tc.vec_env)
        self.observation_space, self.action_space = self.venv.observation_space, self.venv.action_space
        self.rng = np.random.default_rng(seed)
        self.episodes: deque = deque(maxlen=100)
        self.policy_lag = tc.policy_lag
        self.rollout = Rollout.allocate(T, N, int(np.prod(self.observation_space.shape)), self.action_space)
        self.behaviour_policies: deque[tuple[int, dict[str, torch.Tensor]]] = deque(maxlen=self.policy_lag + 1)
        self._behaviour: torch.nn.Module | None = None  # a copy of the policy that acts, with policy_lag
        self._obs: np.ndarray | None = None

    def collect(self, agent, version: int) -> Rollout:
        """The batch for the update from pi_old = `version` (the agent's policy now)."""
        if self._obs is None:
            self._obs = self.venv.reset()
        rollout = self.rollout
        if not self.policy_lag:
            actor, behaviour_version = agent.policy.actor(), version
        else:
            self.behaviour_policies.append((version, _policy_state(agent.policy)))
            behaviour_version, state = self.behaviour_policies[0]
            if self._behaviour is None:
                self._behaviour = copy.deepcopy(agent.policy)
            self._behaviour.load_state_dict(state)
            actor = self._behaviour.actor()
        self._obs = collect(self.venv, agent, actor, self._obs, rollout, self.rng, self.episodes)
        rollout.versions.fill(behaviour_version)
        rollout.behaviour_dist = None
        if behaviour_version != version:
            with torch.no_grad():
                flat = torch.from_numpy(rollout.obs.reshape(-1, rollout.obs.shape[-1])).to(
                    next(self._behaviour.parameters()).device)
                rollout.behaviour_dist = tuple(p.detach() for p in self._behaviour.dist_params(flat))
        return rollout

    def policy_updated(self, agent, version: int) -> None:
        """The agent's policy is now version `version` (nothing to do: the next collect takes it)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "venv": self.venv.get_state(),
            "obs": np.array(self._obs),
            "numpy_rng": self.rng.bit_generator.state,
            "episodes": list(self.episodes),
            "behaviour_policies": [(v, dict(s)) for v, s in self.behaviour_policies],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.venv.set_state(state["venv"])
        self._obs = np.array(state["obs"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.episodes.clear()
        self.episodes.extend(state["episodes"])
        self.behaviour_policies.clear()
        self.behaviour_policies.extend(state.get("behaviour_policies", []))

    def close(self) -> None:
        self.venv.close()


def make_collector(cfg, T: int, N: int):
    """The collector `trainer.collection` names; its environments are built (and its workers started)."""
    if cfg.trainer.collection == "async":
        from trpo_lab.async_collection import AsyncCollector

        return AsyncCollector(cfg, T, N, cfg.trainer.seed)
    return SyncCollector(cfg, T, N, cfg.trainer.seed)
