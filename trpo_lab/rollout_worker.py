"""The rollout worker process of asynchronous collection, and the shared memory it works in.

Imports no torch: a worker needs numpy, gymnasium and the numpy actor only.
The trainer's side (trpo_lab/async_collection.py) owns the same memory:

    PolicyChannel   the newest published policy: the actor's weights, the
                    observation normaliser's statistics, and its version
                    (the number of updates behind it), written under a lock
    BatchSlots      two batches of T steps of all N environments; worker w
                    writes its own environments' columns

A worker fills slot b % 2 with batch b once the trainer has freed that slot
(semaphore `free`), and tells the trainer it is done (semaphore `filled`), so
it is never more than one batch ahead of the update in progress. At the start
of every step it checks the channel's version (a read of shared memory) and,
when it changed, copies the new policy in (under the lock): a sample's
behaviour policy is the newest one its worker had when it acted.

A worker normalises observations as synchronous collection does, with running
statistics that include every observation so far: the published statistics
(all complete batches) joined with its own observations of the batch in
progress. Acting on a normaliser frozen between publications instead, with the
untrained identity for the first batches, learned far worse on Hopper
(docs/off_policy.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from trpo_lab import workers
from trpo_lab.actor import NumpyActor
from trpo_lab.config import EnvConfig
from trpo_lab.envs import make_env
from trpo_lab.normalisation import ObsNormalizer

SLOTS = 2
# PolicyChannel header fields (int64).
VERSION, RESET_SEED, STOP = range(3)


@dataclass
class PolicyLayout:
    """Where the actor's numbers sit in the channel's flat parameter vector, and its distribution.

    widths: [obs_dim, hidden..., out_dim]; per layer its weight transposed
    [in, out] then its bias [out]; then, for a Gaussian policy, log_std [act_dim].
    The distribution as NumpyActor takes it: Gaussian, independent categoricals
    over `nvec` (MultiDiscrete), independent Bernoullis (MultiBinary), else one
    categorical (Discrete).
    """

    widths: list[int]
    activation: str
    gaussian: bool
    nvec: list[int] | None = None
    bernoulli: bool = False

    @classmethod
    def of(cls, obs_dim: int, hidden: list[int], activation: str, action_space: gym.Space) -> "PolicyLayout":
        """The layout of the MLP policy that policies.make_policy builds for `action_space`."""
        if isinstance(action_space, gym.spaces.Box):
            return cls([obs_dim, *hidden, int(np.prod(action_space.shape))], activation, gaussian=True)
        if isinstance(action_space, gym.spaces.Discrete):
            return cls([obs_dim, *hidden, int(action_space.n)], activation, gaussian=False)
        if isinstance(action_space, gym.spaces.MultiDiscrete):
            nvec = [int(n) for n in action_space.nvec]
            return cls([obs_dim, *hidden, sum(nvec)], activation, gaussian=False, nvec=nvec)
        return cls([obs_dim, *hidden, int(action_space.shape[0])], activation, gaussian=False, bernoulli=True)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """One action's shape: [act_dim] (Gaussian, Bernoulli), [k] (MultiDiscrete) or [] (Discrete)."""
        if self.nvec is not None:
            return (len(self.nvec),)
        return (self.widths[-1],) if self.gaussian or self.bernoulli else ()

    @property
    def size(self) -> int:
        layers = sum(a * b + b for a, b in zip(self.widths[:-1], self.widths[1:]))
        return layers + (self.widths[-1] if self.gaussian else 0)

    def actor(self, flat: np.ndarray) -> NumpyActor:
        """A NumpyActor whose weights are views of `flat` (overwrite flat, then call refresh())."""
        weights, biases, offset = [], [], 0
        for a, b in zip(self.widths[:-1], self.widths[1:]):
            weights.append(flat[offset:offset + a * b].reshape(a, b))
            offset += a * b
            biases.append(flat[offset:offset + b])
            offset += b
        log_std = flat[offset:offset + self.widths[-1]] if self.gaussian else None
        return NumpyActor(weights, biases, self.activation, log_std, self.nvec, self.bernoulli)

    def write(self, actor: NumpyActor, flat: np.ndarray) -> None:
        """Put `actor`'s numbers into `flat`."""
        offset = 0
        for w, b in zip(actor.weights, actor.biases):
            flat[offset:offset + w.size] = w.reshape(-1)
            offset += w.size
            flat[offset:offset + b.size] = b
            offset += b.size
        if self.gaussian:
            flat[offset:offset + actor.log_std.size] = actor.log_std


def channel_spec(layout: PolicyLayout, obs_dim: int) -> dict:
    """params: the actor (PolicyLayout); norm: the normaliser's running mean and variance [2, obs_dim];
    norm_meta: its count, clip, eps and enabled flag; header: VERSION, RESET_SEED, STOP."""
    return {"params": ((layout.size,), np.float64), "norm": ((2, obs_dim), np.float64),
            "norm_meta": ((4,), np.float64), "header": ((3,), np.int64)}


def slot_spec(T: int, N: int, obs_dim: int, layout: PolicyLayout) -> dict:
    """One batch: what the trainer's Rollout needs, plus the raw observations (for the normaliser's
    statistics) and beta's distribution (net output, and log-std for a Gaussian)."""
    out_dim = layout.widths[-1]
    return {
        "obs": ((T, N, obs_dim), np.float32), "raw_obs": ((T, N, obs_dim), np.float64),
        "actions": ((T, N, *layout.action_shape), np.float32 if layout.gaussian else np.int64),
        "behaviour_logp": ((T, N), np.float64), "dist_out": ((T, N, out_dim), np.float32),
        "log_std": ((T, N, out_dim if layout.gaussian else 0), np.float32),
        "rewards": ((T, N), np.float64), "terminated": ((T, N), np.bool_), "truncated": ((T, N), np.bool_),
        "final_obs": ((T, N, obs_dim), np.float32), "versions": ((T, N), np.int64),
        "last_obs": ((N, obs_dim), np.float32), "last_raw_obs": ((N, obs_dim), np.float64),
    }


def run(w: int, env_ids: list[int], env_cfg: EnvConfig, layout: PolicyLayout, T: int, seed: int,
        channel: workers.SharedArrays, lock, slots: list[workers.SharedArrays], status: workers.SharedArrays,
        free, filled, errors, parent_pid: int) -> None:
    """Rollout worker w: steps environments env_ids (columns of the slots) batch after batch."""
    workers.blas_threads(1)
    envs: list[gym.Env] = []

    def start():
        envs.extend(make_env(env_cfg) for _ in env_ids)
        return _Worker(w, env_ids, envs, layout, T, seed, channel, lock, slots, parent_pid).step

    try:
        workers.serve(start, free, filled, status.views()["status"], w, errors, parent_pid, stop_on_error=True)
    finally:
        for env in envs:
            env.close()
        errors.close()


class _Worker:
    def __init__(self, w, env_ids, envs, layout: PolicyLayout, T, seed, channel, lock, slots, parent_pid):
        self.w, self.envs, self.T = w, envs, T
        self.cols = slice(env_ids[0], env_ids[-1] + 1)  # contiguous
        self.env_ids = env_ids
        self.channel, self.lock = channel.views(), lock
        self.header = self.channel["header"]
        self.slots = [s.views() for s in slots]
        self.parent_pid = parent_pid
        self.layout = layout
        self._flat = np.zeros(layout.size)
        self.actor = layout.actor(self._flat)
        self.version = -1
        self.obs_dim = self.channel["norm"].shape[1]
        self.obs = np.zeros((len(envs), self.obs_dim))
        self.batch = 0
        self.norm = ObsNormalizer((self.obs_dim,))
        self.live = self.norm.rollout()  # the published statistics joined with this batch's observations
        self.rng = np.random.default_rng([seed, w])
        space = envs[0].action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if layout.gaussian:
            self.low, self.high = space.low, space.high

    def refresh(self, seen: np.ndarray | None = None) -> None:
        """Copy the newest published policy in (called when the channel's version changed); `seen`:
        this batch's observations so far [rows, obs_dim], not yet in the published statistics."""
        channel = self.channel
        while not self.lock.acquire(timeout=1.0):
            if not workers.pid_alive(self.parent_pid):
                raise EOFError("the trainer is gone")
        try:
            np.copyto(self._flat, channel["params"])
            rms = self.norm.rms
            rms.mean, rms.var = channel["norm"][0].copy(), channel["norm"][1].copy()
            count, clip, eps, enabled = channel["norm_meta"]
            rms.count, self.norm.clip, self.norm.eps, self.norm.enabled = float(count), float(clip), float(eps), \
                bool(enabled)
            self.version = int(channel["header"][VERSION])
        finally:
            self.lock.release()
        self.actor.refresh()
        self.live = self.norm.rollout()
        if seen is not None and len(seen):
            self.live.step(seen, np.empty_like(seen))

    def step(self) -> bool:
        """Fill the next batch's slot (after resetting the environments, for the first); False at STOP."""
        header = self.header
        if header[STOP]:
            return False
        if self.batch == 0:
            self.refresh()
            reset_seed = int(header[RESET_SEED])
            for j, env in zip(self.env_ids, self.envs):
                env.action_space.seed(reset_seed + j)
                self.obs[j - self.env_ids[0]] = env.reset(seed=reset_seed + j)[0]
        self.obs = self.fill(self.slots[self.batch % SLOTS], self.obs)
        self.batch += 1
        return True

    def fill(self, slot: dict[str, np.ndarray], obs: np.ndarray) -> np.ndarray:
        """Step T times into `slot`'s columns of this worker's environments; returns the next observations."""
        c, T, n, header = self.cols, self.T, len(self.envs), self.channel["header"]
        obs_out, raw_out, act_out, logp_out = slot["obs"], slot["raw_obs"], slot["actions"], slot["behaviour_logp"]
        dist_out, std_out, version_out = slot["dist_out"], slot["log_std"], slot["versions"]
        rewards, terminated, truncated, final_out = (slot[k] for k in ("rewards", "terminated", "truncated",
                                                                       "final_obs"))
        obs_n = np.empty_like(obs)
        gaussian = self.layout.gaussian
        if not gaussian:
            uniform, _ = self.actor.noise(self.rng, T, n)
        else:
            eps = self.rng.standard_normal((T, n, self.low.size))
            half_sq = 0.5 * (eps * eps).sum(-1)
            noise, clipped = np.empty((n, self.low.size)), np.empty((n, self.low.size))
        for t in range(T):
            if header[VERSION] != self.version:
                self.refresh(raw_out[:t, c].reshape(-1, self.obs_dim))
            live = self.live
            live.step(obs, obs_n)
            raw_out[t, c] = obs
            obs_out[t, c] = obs_n
            version_out[t, c] = self.version
            actor = self.actor
            out = actor.forward(obs_n)
            dist_out[t, c] = out
            if not gaussian:
                actions, logp = actor.sample_output(out, uniform[t])
                logp_out[t, c] = logp
                act_out[t, c] = actions
            else:
                std_out[t, c] = actor.log_std
                np.multiply(eps[t], actor.std, noise)
                actions = np.add(out, noise, noise)
                logp_out[t, c] = actor.logp_const - half_sq[t]
                act_out[t, c] = actions
                np.minimum(actions, self.high, out=clipped)
                actions = np.maximum(clipped, self.low, out=clipped)
            for i, env in enumerate(self.envs):
                ob, reward, term, trunc, _ = env.step(int(actions[i]) if self.discrete else actions[i])
                j = c.start + i
                if term or trunc:
                    final_out[t, j] = live.normalise(np.asarray(ob, dtype=np.float64).reshape(1, -1))[0]
                    ob, _ = env.reset()
                obs[i] = np.asarray(ob).reshape(-1)
                rewards[t, j], terminated[t, j], truncated[t, j] = reward, term, trunc
        slot["last_raw_obs"][c] = obs
        slot["last_obs"][c] = self.live.normalise(obs)
        return obs
