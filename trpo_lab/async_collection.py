"""Asynchronous collection (`trainer.collection=async`): the trainer's side of the rollout workers.

Rollout worker processes (trpo_lab/rollout_worker.py) step the environments
continuously with the newest policy they have received, while this process
updates on each batch as soon as it is complete and publishes the new policy
(weights and observation normaliser) without waiting for collection. The
hand-off is a producer/consumer queue of two batch slots in shared memory:
workers fill the next batch while the update of the previous one runs, so a
sample's behaviour policy is pi_old or the policy one update before it, and
every sample records which (`Rollout.versions`), with its log-probability and
its distribution (for `train/behaviour_kl`).

The trainer owns the learning state: the observation normaliser's statistics
grow here from each batch's raw observations, rewards are scaled here, and
finished episodes are counted here from the batch. Workers normalise with the
published statistics joined with their own observations of the batch in
progress, as synchronous collection normalises with everything seen so far.

Async runs are not reproducible step for step (the lag depends on timing);
a checkpoint holds the agent and the counters, and a resumed async run starts
new episodes. A worker that dies ends the run with an error naming it; so
does a worker's exception.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np
import torch

from trpo_lab import workers
from trpo_lab.collection import Rollout
from trpo_lab.envs import EnvError, make_env
from trpo_lab.networks import network_kind
from trpo_lab.vec_env import _EpisodeTracker
from trpo_lab.rollout_worker import RESET_SEED, SLOTS, STOP, VERSION, PolicyLayout, channel_spec, run, slot_spec
from trpo_lab.workers import SharedArrays


class RolloutWorkerError(EnvError):
    """A rollout worker died or failed; the message names it."""


def default_workers(n_envs: int) -> int:
    """One rollout worker per core, at most one per environment."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_envs, cores))


class AsyncCollector:
    """Rollout workers stepping N environments in T-step batches (see the module docstring)."""

    def __init__(self, cfg, T: int, N: int, seed: int):
        probe = make_env(cfg.env)  # a bad env fails here, with a clear message, before any worker starts
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        kind = network_kind(cfg.network.type, self.observation_space)
        if kind != "mlp" or cfg.trainer.device != "cpu":
            raise EnvError(f"trainer.collection=async takes MLP policies on the CPU (its workers act in numpy), "
                           f"not CNNs on images; env.id={cfg.env.id!r} has {self.observation_space} -> "
                           f"{self.action_space}, network.type={cfg.network.type!r} gives {kind}, "
                           f"trainer.device={cfg.trainer.device!r}: use trainer.collection=sync")
        self.T, self.N, self.seed = T, N, seed
        self.episodes: deque = deque(maxlen=100)
        self._tracker = _EpisodeTracker(N)
        self._batches = 0             # batches handed to the trainer so far
        self._reset_seed = seed       # the environments' reset seeds are reset_seed + index
        self._held: int | None = None  # the slot the trainer is learning from
        self._published = False
        obs_dim = int(np.prod(self.observation_space.shape))
        self.layout = PolicyLayout.of(obs_dim, cfg.network.hidden, cfg.network.activation, self.action_space)

        ctx = workers.context()
        n_workers = cfg.trainer.rollout_workers or default_workers(N)
        self.groups = [list(map(int, g)) for g in np.array_split(np.arange(N), n_workers)]
        channel = SharedArrays(ctx, channel_spec(self.layout, obs_dim))
        slots = [SharedArrays(ctx, slot_spec(T, N, obs_dim, self.layout)) for _ in range(SLOTS)]
        status = SharedArrays(ctx, {"status": ((n_workers,), np.int64)})
        self._channel, self._slots, self._status = channel.views(), [s.views() for s in slots], status.views()["status"]
        self._channel["header"][VERSION] = -1
        self._lock = ctx.Lock()
        self._rollouts = [self._rollout_of(slot) for slot in self._slots]
        self.processes, self._free, self._filled, self._errors = [], [], [], []
        for w, env_ids in enumerate(self.groups):
            free, filled = ctx.Semaphore(0), ctx.Semaphore(0)
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=run, daemon=True, name=f"trpo_lab-rollout-{w}",
                               args=(w, env_ids, cfg.env, self.layout, T, seed, channel, self._lock, slots,
                                     status, free, filled, send, os.getpid()))
            proc.start()
            send.close()
            self.processes.append(proc)
            self._free.append(free)
            self._filled.append(workers.Waiter(filled, alive=proc.is_alive))
            self._errors.append(receive)
        try:
            self._wait_all()  # the workers' environments are built: construction is not collection time
        except RolloutWorkerError:
            self.close()
            raise

    def _rollout_of(self, slot: dict[str, np.ndarray]) -> Rollout:
        T, N = slot["rewards"].shape
        return Rollout(obs=slot["obs"], actions=slot["actions"], behaviour_logp=slot["behaviour_logp"],
                       rewards=slot["rewards"], terminated=slot["terminated"],
                       episode_ends=np.zeros((T, N), dtype=bool), versions=slot["versions"])

    # -- the trainer's calls

    def collect(self, agent, version: int) -> Rollout:
        """The next complete batch, for the update from pi_old = `version` (the agent's policy now)."""
        if not self._published:
            self._publish(agent, version)
            for free in self._free:  # both slots are free: the workers start
                for _ in range(SLOTS):
                    free.release()
        elif self._held is not None:
            for free in self._free:  # the trainer is done with the last batch: its slot is free again
                free.release()
        self._wait_all()
        k = self._batches % SLOTS
        self._held, self._batches = k, self._batches + 1
        slot, rollout = self._slots[k], self._rollouts[k]
        np.logical_or(slot["terminated"], slot["truncated"], rollout.episode_ends)
        for t in range(self.T):
            ended = np.flatnonzero(rollout.episode_ends[t])
            finished = self._tracker.add(slot["rewards"][t], ended)  # rewards as the environments gave them
            if finished:
                self.episodes.extend(finished)
        cut = slot["truncated"] & ~slot["terminated"]
        rollout.truncations = [(int(t), int(i), slot["final_obs"][t, i]) for t, i in zip(*np.nonzero(cut))]
        rollout.last_obs = slot["last_obs"]
        rollout.check_finite(slot["last_raw_obs"])
        if agent.obs_norm.enabled:
            obs_dim = slot["raw_obs"].shape[-1]
            agent.obs_norm.rms.update(slot["raw_obs"].reshape(-1, obs_dim))
        rollout.rewards[:] = agent.reward_scaler(rollout.rewards, rollout.episode_ends)
        rollout.behaviour_dist = None
        if (rollout.versions != version).any():
            out = torch.from_numpy(slot["dist_out"].reshape(self.T * self.N, -1))
            log_std = torch.from_numpy(slot["log_std"].reshape(self.T * self.N, -1)) if self.layout.gaussian else None
            rollout.behaviour_dist = agent.policy.params_from_output(out, log_std)
        return rollout

    def policy_updated(self, agent, version: int) -> None:
        """Publish the agent's policy, now version `version`, to the workers."""
        self._publish(agent, version)

    def _publish(self, agent, version: int) -> None:
        channel = self._channel
        actor = agent.policy.numpy_actor()
        norm = agent.obs_norm
        while not self._lock.acquire(timeout=1.0):  # a worker that died holding it is named here
            self._check_alive()
        try:
            self.layout.write(actor, channel["params"])
            channel["norm"][0] = norm.rms.mean.reshape(-1)
            channel["norm"][1] = norm.rms.var.reshape(-1)
            channel["norm_meta"][:] = (norm.rms.count, norm.clip, norm.eps, float(norm.enabled))
            channel["header"][RESET_SEED] = self._reset_seed
            channel["header"][VERSION] = version
        finally:
            self._lock.release()
        self._published = True

    def _wait_all(self) -> None:
        """Wait for every worker's signal (ready, or batch filled); raise for any that died or failed."""
        for w, filled in enumerate(self._filled):
            try:
                filled.wait()
            except EOFError:
                self._check_alive()
                raise RolloutWorkerError(f"{self._name(w)} stopped answering") from None
        for w, status in enumerate(self._status):
            if status != workers.OK:
                message = self._errors[w].recv_bytes().decode() if self._errors[w].poll(5) else "no message"
                raise RolloutWorkerError(f"{self._name(w)} failed: {message}")

    def _check_alive(self) -> None:
        for w, proc in enumerate(self.processes):
            if not proc.is_alive():
                raise RolloutWorkerError(f"{self._name(w)} died (exit code {proc.exitcode})")

    def _name(self, w: int) -> str:
        envs = self.groups[w]
        return (f"rollout worker {w} (pid {self.processes[w].pid}, environment{'s' if len(envs) > 1 else ''} "
                f"{', '.join(map(str, envs))})")

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of collection: the episode window and counts (no environment states)."""
        return {"collection": "async", "episodes": list(self.episodes), "tracker": self._tracker.state_dict(),
                "batches": self._batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after a checkpoint: the environments start new episodes, seeded apart from the first run's."""
        if state.get("collection") != "async":
            raise ValueError("the checkpoint was written by synchronous collection")
        self.episodes.clear()
        self.episodes.extend(state["episodes"])
        self._batches = int(state["batches"])
        self._reset_seed = self.seed + 1_000_003 * self._batches
        self._tracker = _EpisodeTracker(self.N)  # the unfinished episodes are gone

    def close(self) -> None:
        self._channel["header"][STOP] = 1
        for free in self._free:
            free.release()
        for proc in self.processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self._errors:
            pipe.close()
