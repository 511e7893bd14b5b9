"""Environments: construction, vectorisation, and running normalisation.

`SyncVecEnv` steps N gymnasium environments in this process; `SubprocVecEnv`
steps each in a worker process. Both reset an environment as soon as its
episode ends and hand back the final observation of that episode separately,
so the trainer can bootstrap episodes cut by a time limit with V(s_final).
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
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        env.close()
        kind = "image observations" if isinstance(space, gym.spaces.Box) and len(space.shape) >= 2 \
            else "observation space"
        raise EnvError(f"env.id={cfg.id!r} has {kind} {space}; trpo_lab's MLP policies need a "
                       "flat vector observation (a one-dimensional Box), and pixel policies do not exist yet")
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


_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic)


def get_env_state(env: gym.Env) -> dict[str, Any]:
    """Everything that decides an environment's future, for exact resume.

    Gymnasium's own pickling does not do this: MuJoCo environments pickle as
    their constructor arguments (EzPickle), losing the simulator state. So we
    take, for every wrapper layer, its plain attributes (the TimeLimit's step
    counter, OrderEnforcing's reset flag, a classic-control task's `state`),
    the environment's random generator, and for MuJoCo tasks the full
    integration state (`mj_getState(..., mjSTATE_INTEGRATION)`: time, qpos,
    qvel, act, warm start, controls and applied forces).
    """
    layers = []
    layer = env
    while True:
        layers.append({k: (v.copy() if isinstance(v, np.ndarray) else v)
                       for k, v in vars(layer).items() if isinstance(v, _PLAIN)})
        if not hasattr(layer, "env"):
            break
        layer = layer.env
    base = env.unwrapped
    state: dict[str, Any] = {"layers": layers}
    rng = getattr(base, "_np_random", None)
    if rng is not None:
        state["np_random"] = rng.bit_generator.state
        state["np_random_seed"] = getattr(base, "_np_random_seed", None)
    if hasattr(base, "model") and hasattr(base, "data"):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(base.model, spec))
        mujoco.mj_getState(base.model, base.data, physics, spec)
        state["mujoco"] = physics
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put `env` (built from the same config) back into a state from `get_env_state`."""
    layer = env
    for attrs in state["layers"]:
        for k, v in attrs.items():
            setattr(layer, k, v.copy() if isinstance(v, np.ndarray) else v)
        if not hasattr(layer, "env"):
            break
        layer = layer.env
    base = env.unwrapped
    if "np_random" in state:
        rng = np.random.default_rng()
        rng.bit_generator.state = state["np_random"]
        base._np_random = rng
        base._np_random_seed = state["np_random_seed"]
    if "mujoco" in state:
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(base.model, base.data, state["mujoco"], spec)
        mujoco.mj_forward(base.model, base.data)  # derived quantities (positions of bodies, contacts)
        mujoco.mj_setState(base.model, base.data, state["mujoco"], spec)  # in case forward touched any


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
                final_obs[i] = np.asarray(obs, dtype=np.float64)
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
_OK, _FAILED = 0, 1


class _SharedArrays:
    """What the parent and the workers exchange, in shared memory.

    Per environment: actions [N, act_dim] (float64; a Discrete action is
    stored as a float), obs and final_obs [N, obs_dim] (float64), rewards [N]
    (float64), terminated and truncated [N] (bool). The parent's step arrays
    are these (its own environments write into them too), so a step copies
    nothing. Per worker: control [W, 3] = (command, status, argument) (int64).
    """

    TYPES = {"actions": ("d", np.float64), "obs": ("d", np.float64), "final_obs": ("d", np.float64),
             "rewards": ("d", np.float64), "terminated": ("b", np.bool_), "truncated": ("b", np.bool_),
             "control": ("q", np.int64)}

    def __init__(self, ctx, n: int, obs_dim: int, act_dim: int, n_workers: int):
        self.shapes = {"actions": (n, act_dim), "obs": (n, obs_dim), "final_obs": (n, obs_dim),
                       "rewards": (n,), "terminated": (n,), "truncated": (n,), "control": (n_workers, 3)}
        self.raw = {name: ctx.RawArray(self.TYPES[name][0], int(np.prod(shape)))
                    for name, shape in self.shapes.items()}

    def views(self) -> dict[str, np.ndarray]:
        return {name: np.frombuffer(raw, dtype=self.TYPES[name][1]).reshape(self.shapes[name])
                for name, raw in self.raw.items()}


def _worker(w: int, env_ids: list[int], cfg: EnvConfig, shared: _SharedArrays, go, done,
            remote, parent_remote, parent_pid: int) -> None:
    """Worker w: steps the environments env_ids on command (see the protocol above)."""
    parent_remote.close()
    workers.blas_threads(1)
    arrays = shared.views()
    actions, obs_out, final_out = arrays["actions"], arrays["obs"], arrays["final_obs"]
    rewards, terminated_out, truncated_out = arrays["rewards"], arrays["terminated"], arrays["truncated"]
    control = arrays["control"][w]
    envs: list[gym.Env] = []
    try:
        try:
            envs = [make_env(cfg) for _ in env_ids]
            control[1] = _OK
        except Exception as err:
            control[1] = _FAILED
            remote.send_bytes(workers.describe(err))
            return
        finally:
            done.release()  # ready (or failed): the parent waits for this before its first command
        discrete = isinstance(envs[0].action_space, gym.spaces.Discrete)
        wait_go = workers.Waiter(go, alive=workers.parent_alive(parent_pid))
        while True:
            wait_go.wait()  # EOFError when the parent is gone
            command = int(control[0])
            try:
                if command == _STEP:
                    for j, env in zip(env_ids, envs):
                        obs, reward, terminated, truncated, _ = env.step(
                            int(actions[j, 0]) if discrete else actions[j].copy())
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
                elif command == _CLOSE:
                    control[1] = _OK
                    done.release()
                    break
                control[1] = _OK
            except Exception as err:  # reported to the parent, which raises it
                control[1] = _FAILED
                remote.send_bytes(workers.describe(err))
            done.release()
    except (KeyboardInterrupt, EOFError):
        pass
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
        act_dim = 1 if isinstance(self.action_space, gym.spaces.Discrete) else int(np.prod(self.action_space.shape))
        shared = _SharedArrays(ctx, n_envs, int(np.prod(self.observation_space.shape)), act_dim, len(groups) - 1)
        self._shared = shared.views()
        self._control = self._shared["control"]
        self._command_sent: int | None = None
        # The step arrays are the shared ones: this process's environments write into them too.
        self._obs = self._shared["obs"].reshape(n_envs, *self.observation_space.shape)
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
            if status != _OK:
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
                final_obs[i] = self._shared["final_obs"][i].reshape(self.observation_space.shape).copy()
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
        if not self.enabled:
            np.copyto(out, obs)
            return out
        if obs.ndim != 2:
            obs = obs.reshape(obs.shape[0], self._d)
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
