"""Vector environments: N environments stepped together, in this process or in worker processes.

`SyncVecEnv` steps N gymnasium environments in this process; `SubprocVecEnv`
steps a share of them in worker processes. Both reset an environment as soon as
its episode ends and hand back the final observation of that episode
separately, so the trainer can bootstrap episodes cut by a time limit with
V(s_final). Observations are held as `obs_dtype` says: images as the uint8
they are, everything else as float64.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from trpo_lab import workers
from trpo_lab.config import EnvConfig
from trpo_lab.env_state import get_env_state, set_env_state
from trpo_lab.envs import EnvError, make_env
from trpo_lab.networks import is_image_space


def obs_dtype(space: gym.Space) -> type:
    """How a vector env holds observations of `space`: uint8 for an image (a float64 copy of
    Atari's [4, 84, 84] would be 8 times the memory and copying), float64 otherwise."""
    return np.uint8 if is_image_space(space) else np.float64


def action_spec(n: int, space: gym.Space) -> tuple[tuple[int, ...], type]:
    """(shape, dtype) of the actions of n environments: float64 [n, act_dim] (Box), int64 [n]
    (Discrete) or int64 [n, k] (MultiDiscrete, MultiBinary)."""
    if isinstance(space, gym.spaces.Discrete):
        return (n,), np.int64
    if isinstance(space, gym.spaces.Box):
        return (n, int(np.prod(space.shape))), np.float64
    return (n, int(np.prod(space.shape))), np.int64


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

    def add(self, rewards: np.ndarray, ended) -> list[tuple[float, int]]:
        """Count one step; (return, length) of each episode that ended (the indices in `ended`)."""
        self.returns += rewards
        self.lengths += 1
        if not len(ended):
            return []
        finished = []
        for i in ended:
            finished.append((float(self.returns[i]), int(self.lengths[i])))
            self.returns[i] = 0.0
            self.lengths[i] = 0
        return finished

    def state_dict(self) -> dict[str, Any]:
        return {"returns": self.returns.copy(), "lengths": self.lengths.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns, self.lengths = np.array(state["returns"]), np.array(state["lengths"])


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
        self._obs = np.zeros((n, *shape), dtype=obs_dtype(self.observation_space))
        self._rewards = np.zeros(n)
        self._terminated = np.zeros(n, dtype=bool)
        self._truncated = np.zeros(n, dtype=bool)

    def reset(self) -> np.ndarray:
        obs = []
        for i, env in enumerate(self.envs):
            env.action_space.seed(self.seed + i)
            obs.append(env.reset(seed=self.seed + i)[0])
        return np.asarray(obs, dtype=self._obs.dtype)

    def step(self, actions: np.ndarray) -> StepResult:
        self.step_async(actions)
        return self.step_wait()

    def get_state(self) -> dict[str, Any]:
        """The environments' states and the unfinished episodes' running returns and lengths."""
        return {"envs": [get_env_state(env) for env in self.envs], "tracker": self._tracker.state_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        for env, env_state in zip(self.envs, state["envs"], strict=True):
            set_env_state(env, env_state)
        self._tracker.load_state_dict(state["tracker"])

    def step_async(self, actions: np.ndarray) -> None:
        """Start stepping with `actions`; the caller may work until `step_wait`."""
        self._actions = actions

    def step_wait(self) -> StepResult:
        final_obs: dict[int, np.ndarray] = {}
        self._step_local(final_obs)
        return self._result(final_obs)

    def _step_local(self, final_obs: dict[int, np.ndarray]) -> None:
        """Step this process's environments (self.envs, indices 0, 1, ...) into the step arrays."""
        for i, env in enumerate(self.envs):
            obs, self._rewards[i], terminated, truncated, _ = env.step(self._actions[i])
            if terminated or truncated:
                final_obs[i] = np.asarray(obs, dtype=self._obs.dtype)
                obs, _ = env.reset()
            self._obs[i] = obs
            self._terminated[i], self._truncated[i] = terminated, truncated

    def _result(self, final_obs: dict[int, np.ndarray]) -> StepResult:
        """The step's StepResult; final_obs has an entry for every environment whose episode ended."""
        episodes = self._tracker.add(self._rewards, final_obs)
        return StepResult(self._obs, self._rewards, self._terminated, self._truncated, final_obs, episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()


# Worker protocol (see trpo_lab/workers.py): the parent writes a command, and
# for a step the actions, into shared memory and releases the worker's `go`;
# the worker carries it out, writes its results and status into shared memory
# and releases `done`. Nothing is pickled and no system call is made per step.
# The pipe carries environment states for exact resume, and error messages.
_STEP, _RESET, _GET_STATE, _SET_STATE, _CLOSE = range(5)


def _shared_spec(n: int, observation_space: gym.Space, action_space: gym.Space, n_workers: int) -> dict:
    """What the parent and the workers exchange, in shared memory (workers.SharedArrays).

    Per environment: actions (`action_spec`), obs and final_obs [N, *obs_shape]
    (`obs_dtype`), rewards [N] (float64), terminated and truncated [N] (bool).
    The parent's step arrays are these (its own environments write into them
    too), so a step copies nothing. Per worker: control [W, 3] = (command,
    status, argument) (int64).
    """
    obs = ((n, *observation_space.shape), obs_dtype(observation_space))
    return {"actions": action_spec(n, action_space), "obs": obs, "final_obs": obs, "rewards": ((n,), np.float64),
            "terminated": ((n,), np.bool_), "truncated": ((n,), np.bool_), "control": ((n_workers, 3), np.int64)}


def _worker(w: int, env_ids: list[int], cfg: EnvConfig, shared: workers.SharedArrays, go, done,
            remote, parent_remote, parent_pid: int) -> None:
    """Worker w: steps the environments env_ids on command (see the protocol above)."""
    parent_remote.close()
    workers.blas_threads(1)
    arrays = shared.views()
    actions, obs_out, final_out = arrays["actions"], arrays["obs"], arrays["final_obs"]
    rewards, terminated_out, truncated_out = arrays["rewards"], arrays["terminated"], arrays["truncated"]
    control = arrays["control"][w]
    envs: list[gym.Env] = []
    discrete = False

    def step() -> bool:
        command = int(control[0])
        if command == _STEP:
            for j, env in zip(env_ids, envs):
                obs, reward, terminated, truncated, _ = env.step(int(actions[j]) if discrete else actions[j].copy())
                if terminated or truncated:
                    final_out[j] = obs
                    obs, _ = env.reset()
                obs_out[j] = obs
                rewards[j], terminated_out[j], truncated_out[j] = reward, terminated, truncated
        elif command == _RESET:
            for j, env in zip(env_ids, envs):
                env.action_space.seed(int(control[2]) + j)
                obs_out[j] = env.reset(seed=int(control[2]) + j)[0]
        elif command == _GET_STATE:
            remote.send_bytes(pickle.dumps([get_env_state(env) for env in envs]))
        elif command == _SET_STATE:
            for env, state in zip(envs, pickle.loads(remote.recv_bytes()), strict=True):
                set_env_state(env, state)
        return command != _CLOSE

    def start():
        nonlocal discrete
        envs.extend(make_env(cfg) for _ in env_ids)
        discrete = isinstance(envs[0].action_space, gym.spaces.Discrete)
        return step

    try:
        workers.serve(start, go, done, control, 1, remote, parent_pid)
    finally:
        for env in envs:
            env.close()
        remote.close()


def _worker_groups(n_envs: int, n_workers: int | None) -> list[list[int]]:
    """Environment indices per process: [this process's, worker 0's, ...], contiguous.

    By default one worker per core beyond the first, the parent stepping a
    share itself: on 2 cores, 2 environments are 1 in the parent and 1 in a worker.
    """
    if n_workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n_workers = max(1, min(n_envs, cores) - 1)
    if n_envs == 1:
        return [[], [0]]
    n_workers = min(n_workers, n_envs - 1)
    return [list(map(int, group)) for group in np.array_split(np.arange(n_envs), n_workers + 1)]


class SubprocVecEnv(SyncVecEnv):
    """N environments stepped in parallel: a share in this process, the rest in worker processes.

    `step_async` hands the workers their actions; `step_wait` steps this
    process's environments, then collects the workers' results. The numbers
    are those of `SyncVecEnv` with the same seed (tests/test_vec_env.py).
    """

    def __init__(self, cfg: EnvConfig, n_envs: int, seed: int, n_workers: int | None = None):
        groups = _worker_groups(n_envs, n_workers)
        self.envs = [make_env(cfg) for _ in groups[0]]  # fail here, with a clear message, rather than in a worker
        probe = self.envs[0] if self.envs else make_env(cfg)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        if not self.envs:
            probe.close()
        self.num_envs, self.seed = n_envs, seed
        self._tracker = _EpisodeTracker(n_envs)
        self._groups = groups
        self._remote_from = k = len(groups[0])  # environments [k, N) live in workers
        ctx = workers.context()
        shared = workers.SharedArrays(ctx, _shared_spec(n_envs, self.observation_space, self.action_space,
                                                        len(groups) - 1))
        self._shared = shared.views()
        self._control = self._shared["control"]
        self._command_sent: int | None = None
        # The step arrays are the shared ones: this process's environments write into them too.
        self._obs = self._shared["obs"]
        self._rewards, self._terminated, self._truncated = (self._shared[k] for k in
                                                            ("rewards", "terminated", "truncated"))
        self._remote_actions = self._shared["actions"][k:]
        self.remotes, self.processes, self._go, self._done = [], [], [], []
        for w, env_ids in enumerate(groups[1:]):
            remote, work_remote = ctx.Pipe()
            go, done = ctx.Semaphore(0), ctx.Semaphore(0)
            proc = ctx.Process(target=_worker, daemon=True,
                               args=(w, env_ids, cfg, shared, go, done, work_remote, remote, os.getpid()))
            proc.start()
            work_remote.close()
            self.remotes.append(remote)
            self.processes.append(proc)
            self._go.append(go)
            self._done.append(workers.Waiter(done, alive=proc.is_alive))
        try:
            self._wait_all()  # the workers' environments are built: construction is not stepping time
        except EnvError:
            self.close()
            raise

    def _command(self, command: int, argument: int = 0) -> None:
        if command != _STEP or self._command_sent != _STEP:  # a step repeats the last one: nothing to write
            self._control[:, 0] = command
            self._control[:, 2] = argument
            self._command_sent = command
        for go in self._go:
            go.release()

    def _wait_all(self, received: list[bytes] | None = None) -> None:
        """Wait for every worker to finish the last command; raise EnvError for any that failed or died.

        `received`: what each worker already sent on its pipe for this command
        (a failed worker's message is what it sent).
        """
        for w, (done, proc) in enumerate(zip(self._done, self.processes)):
            try:
                done.wait()
            except EOFError as err:
                raise EnvError(f"the worker process of environments {self._worker_envs(w)} died "
                               f"(exit code {proc.exitcode})") from err
        for w, status in enumerate(self._control[:, 1]):
            if status != workers.OK:
                message = received[w] if received is not None else self.remotes[w].recv_bytes()
                raise EnvError(f"environments {self._worker_envs(w)} failed in their worker: {message.decode()}")

    def _worker_envs(self, w: int) -> str:
        return ", ".join(map(str, self._groups[w + 1]))

    def get_state(self) -> dict[str, Any]:
        self._command(_GET_STATE)
        try:
            payloads = [remote.recv_bytes() for remote in self.remotes]
        except (EOFError, ConnectionError):
            payloads = None  # a worker died: _wait_all says which
        self._wait_all(payloads)
        states = [get_env_state(env) for env in self.envs]
        states += [s for payload in payloads for s in pickle.loads(payload)]
        return {"envs": states, "tracker": self._tracker.state_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        if len(state["envs"]) != self.num_envs:
            raise ValueError(f"the state holds {len(state['envs'])} environments, this vector env {self.num_envs}")
        for env, env_state in zip(self.envs, state["envs"]):
            set_env_state(env, env_state)
        self._command(_SET_STATE)  # first: a worker reads its payload only once it is released
        for pipe, env_ids in zip(self.remotes, self._groups[1:]):
            pipe.send_bytes(pickle.dumps([state["envs"][i] for i in env_ids]))
        self._wait_all()
        self._tracker.load_state_dict(state["tracker"])

    def reset(self) -> np.ndarray:
        self._command(_RESET, self.seed)
        for i, env in enumerate(self.envs):
            env.action_space.seed(self.seed + i)
            self._obs[i] = env.reset(seed=self.seed + i)[0]
        self._wait_all()
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self._remote_actions[:] = np.reshape(actions[self._remote_from:], self._remote_actions.shape)
        self._command(_STEP)

    def step_wait(self) -> StepResult:
        final_obs: dict[int, np.ndarray] = {}
        self._step_local(final_obs)
        self._wait_all()
        for i in range(self._remote_from, self.num_envs):
            if self._terminated[i] or self._truncated[i]:
                final_obs[i] = self._shared["final_obs"][i].copy()
        return self._result(final_obs)

    def close(self) -> None:
        try:
            self._command(_CLOSE)
        except (ValueError, OSError):
            pass
        for proc in self.processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        super().close()


def make_vec_env(cfg: EnvConfig, n_envs: int, seed: int, kind: str = "sync") -> SyncVecEnv:
    return (SubprocVecEnv if kind == "subproc" else SyncVecEnv)(cfg, n_envs, seed)
