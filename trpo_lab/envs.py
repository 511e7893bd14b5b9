"""Environments: construction, vectorisation, and running normalisation.

`SyncVecEnv` runs N gymnasium environments in this process; `SubprocVecEnv`
shares them out to worker processes. Both collect a whole rollout at a time,
reset an environment as soon as its episode ends and hand back the final
observation of that episode separately, so the trainer can bootstrap episodes
cut by a time limit with V(s_final).
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
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise EnvError(f"env.id={cfg.id!r} has observation space {env.observation_space}; "
                       "trpo_lab needs a Box (vector) observation")
    if len(env.observation_space.shape) != 1:
        env = gym.wrappers.FlattenObservation(env)  # the networks and the normaliser take vectors
    if not isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise EnvError(f"env.id={cfg.id!r} has action space {env.action_space}; "
                       "trpo_lab handles Box and Discrete")
    return env


@dataclass
class Segment:
    """T steps of N environments as collected, arrays [T, N, ...] (float64 unless said).

    Step t acted on obs[t] and gave rewards[t]; where an episode ended at step
    t (terminated or truncated), final_obs[t] holds its last observation and
    the environment was reset. The vector env fills it in place and overwrites
    it with the next rollout: copy what you keep.
    """

    obs: np.ndarray         # [T, N, obs_dim], the observation each action was chosen for
    actions: np.ndarray     # [T, N, act_dim], as sampled (before clipping); a Discrete action as a float
    logp: np.ndarray        # [T, N], log-probability of a Discrete action (a Gaussian's come with its noise)
    rewards: np.ndarray     # [T, N], as the environment gave them
    terminated: np.ndarray  # bool [T, N], true terminal states (no bootstrapping)
    truncated: np.ndarray   # bool [T, N], cut by a time limit (bootstrap from final_obs)
    final_obs: np.ndarray   # [T, N, obs_dim], valid where terminated or truncated
    next_obs: np.ndarray    # [N, obs_dim], the observation to continue from
    episodes: list[tuple[float, int]] = field(default_factory=list)  # finished (return, length), in step order

    TYPES = {"obs": np.float64, "actions": np.float64, "logp": np.float64, "rewards": np.float64,
             "terminated": np.bool_, "truncated": np.bool_, "final_obs": np.float64, "next_obs": np.float64}

    @staticmethod
    def shapes(T: int, N: int, obs_dim: int, act_dim: int) -> dict[str, tuple[int, ...]]:
        return {"obs": (T, N, obs_dim), "actions": (T, N, act_dim), "logp": (T, N), "rewards": (T, N),
                "terminated": (T, N), "truncated": (T, N), "final_obs": (T, N, obs_dim), "next_obs": (N, obs_dim)}

    @classmethod
    def allocate(cls, T: int, N: int, obs_dim: int, act_dim: int) -> "Segment":
        return cls(**{name: np.zeros(shape, dtype=cls.TYPES[name])
                      for name, shape in cls.shapes(T, N, obs_dim, act_dim).items()})


class _EpisodeTracker:
    def __init__(self, n: int):
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=np.int64)

    def add(self, rewards: np.ndarray, ended: np.ndarray) -> list[tuple[float, int]]:
        """Count a rollout, rewards and ended [T, N]; (return, length) of each episode that
        ended in it, in step order (then environment order)."""
        returns, lengths = self.returns.tolist(), self.lengths.tolist()
        finished = []
        for step_rewards, step_ended in zip(rewards.tolist(), ended.tolist()):
            for i, reward in enumerate(step_rewards):
                returns[i] += reward  # in float64 step by step, as an episode's return is summed
                lengths[i] += 1
                if step_ended[i]:
                    finished.append((returns[i], lengths[i]))
                    returns[i], lengths[i] = 0.0, 0
        self.returns, self.lengths = np.array(returns), np.array(lengths, dtype=np.int64)
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


def _act_in_env(env: gym.Env, j: int, obs: np.ndarray, actor, normalise: "Normalise", noise: np.ndarray,
                segment: Segment) -> None:
    """Act in environment j, column j of `segment`, for all its T steps, from `obs`.

    actor: a NumpyActor; noise [T, ...], this environment's share of
    `actor.noise`. The policy and the normaliser are fixed for the rollout, so
    an environment's steps depend on no other environment's: each runs through
    on its own, in whichever process holds it, with the same numbers. The loop
    is the per-step cost trpo_lab adds to the simulator's: a dozen numpy
    calls on vectors, writing into arrays kept from the last call.
    """
    box = isinstance(env.action_space, gym.spaces.Box)
    if box:
        low, high = env.action_space.low, env.action_space.high
        clipped = np.empty(low.shape)
    x = np.empty(segment.obs.shape[2])  # the observation normalised
    obs_col, actions_col, logp_col = segment.obs[:, j], segment.actions[:, j], segment.logp[:, j]
    rewards, terminated_col, truncated_col = segment.rewards[:, j], segment.terminated[:, j], segment.truncated[:, j]
    final_col = segment.final_obs[:, j]
    act, step, minimum, maximum = actor.act, env.step, np.minimum, np.maximum
    for t in range(obs_col.shape[0]):
        o = obs_col[t]
        o[:] = obs
        action, logp = act(normalise(o, x), noise[t])
        if box:
            actions_col[t] = action
            obs, rewards[t], terminated, truncated, _ = step(maximum(minimum(action, high, out=clipped), low,
                                                                     out=clipped))
        else:
            actions_col[t], logp_col[t] = action, logp
            obs, rewards[t], terminated, truncated, _ = step(action)
        if terminated or truncated:
            terminated_col[t], truncated_col[t] = terminated, truncated
            final_col[t] = obs
            obs, _ = env.reset()
        else:
            terminated_col[t] = truncated_col[t] = False
    segment.next_obs[j] = obs


class SyncVecEnv:
    """N environments run one after another in this process, `steps` steps per rollout.

    `collect` fills a Segment allocated once and returns it: valid until the
    next call (copy what you keep).
    """

    def __init__(self, cfg: EnvConfig, n_envs: int, seed: int, steps: int):
        self.envs = [make_env(cfg) for _ in range(n_envs)]
        self.num_envs, self.seed, self.steps = n_envs, seed, steps
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self._tracker = _EpisodeTracker(n_envs)
        self.segment = Segment.allocate(steps, n_envs, *_dims(self.observation_space, self.action_space))

    def reset(self) -> np.ndarray:
        for i, env in enumerate(self.envs):
            env.action_space.seed(self.seed + i)
            self.segment.next_obs[i] = env.reset(seed=self.seed + i)[0]
        return self.segment.next_obs.copy()

    def collect(self, actor, normalise: "Normalise", noise: np.ndarray, obs: np.ndarray) -> Segment:
        """One rollout of every environment from obs [N, obs_dim], acting with `actor` on
        normalise(observation) and noise [T, N, ...] (`actor.noise`)."""
        self._collect_local(actor, normalise, noise, obs)
        return self._finish()

    def _collect_local(self, actor, normalise: "Normalise", noise: np.ndarray, obs: np.ndarray) -> None:
        for j, env in enumerate(self.envs):  # this process's environments are 0, 1, ...
            _act_in_env(env, j, obs[j], actor, normalise, noise[:, j], self.segment)

    def _finish(self) -> Segment:
        s = self.segment
        s.episodes = self._tracker.add(s.rewards, s.terminated | s.truncated)
        return s

    def get_state(self) -> dict[str, Any]:
        """The environments' states and the unfinished episodes' running returns and lengths."""
        return {"envs": [get_env_state(env) for env in self.envs], "tracker": self._tracker.state_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        for env, env_state in zip(self.envs, state["envs"], strict=True):
            set_env_state(env, env_state)
        self._tracker.load_state_dict(state["tracker"])

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _dims(observation_space: gym.Space, action_space: gym.Space) -> tuple[int, int]:
    """(obs_dim, act_dim) of a Segment; a Discrete action takes one column."""
    act_dim = 1 if isinstance(action_space, gym.spaces.Discrete) else int(np.prod(action_space.shape))
    return int(np.prod(observation_space.shape)), act_dim


# Worker protocol (see trpo_lab/workers.py): the parent writes a command into
# shared memory and releases the worker's `go`; for a rollout it then sends the
# actor, the normaliser, the start observations and the noise of the worker's
# environments on the pipe. The worker carries the command out, writes its
# results into the shared Segment and its status into shared memory, and
# releases `done`. One handover per rollout, not per step: the environments
# run through their T steps without waiting for each other. The pipe also
# carries environment states for exact resume, and error messages.
_COLLECT, _RESET, _GET_STATE, _SET_STATE, _CLOSE = range(5)
_OK, _FAILED = 0, 1


class _SharedArrays:
    """A Segment in shared memory, and control [W, 3] = (command, status, argument) (int64) per worker."""

    def __init__(self, ctx, steps: int, n: int, obs_dim: int, act_dim: int, n_workers: int):
        self.shapes = {**Segment.shapes(steps, n, obs_dim, act_dim), "control": (n_workers, 3)}
        self.types = {**Segment.TYPES, "control": np.int64}
        ctypes = {np.float64: "d", np.bool_: "b", np.int64: "q"}
        self.raw = {name: ctx.RawArray(ctypes[self.types[name]], int(np.prod(shape)))
                    for name, shape in self.shapes.items()}

    def views(self) -> tuple[Segment, np.ndarray]:
        arrays = {name: np.frombuffer(raw, dtype=self.types[name]).reshape(self.shapes[name])
                  for name, raw in self.raw.items()}
        control = arrays.pop("control")
        return Segment(**arrays), control


def _worker(w: int, env_ids: list[int], cfg: EnvConfig, shared: _SharedArrays, go, done,
            remote, parent_remote, parent_pid: int) -> None:
    """Worker w: runs the environments env_ids on command (see the protocol above)."""
    parent_remote.close()
    workers.blas_threads(1)
    segment, control = shared.views()
    control = control[w]
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
        wait_go = workers.Waiter(go, alive=workers.parent_alive(parent_pid))
        while True:
            wait_go.wait()  # EOFError when the parent is gone
            command = int(control[0])
            try:
                if command == _COLLECT:
                    actor, normalise, obs, noise = pickle.loads(remote.recv_bytes())
                    for k, (j, env) in enumerate(zip(env_ids, envs)):
                        _act_in_env(env, j, obs[k], actor, normalise, noise[:, k], segment)
                elif command == _RESET:
                    for j, env in zip(env_ids, envs):
                        env.action_space.seed(int(control[2]) + j)
                        segment.next_obs[j] = env.reset(seed=int(control[2]) + j)[0]
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

    By default one worker per core beyond the first, the parent running a
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
    """N environments run in parallel: a share in this process, the rest in worker processes.

    `collect` hands each worker the rollout's actor, normaliser and noise,
    runs this process's environments, then waits for the workers. The numbers
    are those of `SyncVecEnv` with the same seed (tests/test_vec_env.py).
    """

    def __init__(self, cfg: EnvConfig, n_envs: int, seed: int, steps: int, n_workers: int | None = None):
        groups = _worker_groups(n_envs, n_workers)
        self.envs = [make_env(cfg) for _ in groups[0]]  # fail here, with a clear message, rather than in a worker
        probe = self.envs[0] if self.envs else make_env(cfg)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        if not self.envs:
            probe.close()
        self.num_envs, self.seed, self.steps = n_envs, seed, steps
        self._tracker = _EpisodeTracker(n_envs)
        self._groups = groups
        ctx = workers.context()
        shared = _SharedArrays(ctx, steps, n_envs, *_dims(self.observation_space, self.action_space),
                               len(groups) - 1)
        self.segment, self._control = shared.views()  # this process's environments write into it too
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
        self._control[:, 0] = command
        self._control[:, 2] = argument
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

    def collect(self, actor, normalise: "Normalise", noise: np.ndarray, obs: np.ndarray) -> Segment:
        self._command(_COLLECT)
        try:
            for pipe, env_ids in zip(self.remotes, self._groups[1:]):
                pipe.send_bytes(pickle.dumps((actor, normalise, obs[env_ids], noise[:, env_ids])))
        except (BrokenPipeError, ConnectionError):
            self._wait_all()  # a worker died: this says which
            raise
        self._collect_local(actor, normalise, noise, obs)
        self._wait_all()
        return self._finish()

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
            self.segment.next_obs[i] = env.reset(seed=self.seed + i)[0]
        self._wait_all()
        return self.segment.next_obs.copy()

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


def make_vec_env(cfg: EnvConfig, n_envs: int, seed: int, steps: int, kind: str = "sync") -> SyncVecEnv:
    """`n_envs` environments of `cfg` that collect rollouts of `steps` steps each."""
    return (SubprocVecEnv if kind == "subproc" else SyncVecEnv)(cfg, n_envs, seed, steps)


class RunningMeanStd:
    """Running mean and variance over batches (Chan et al. parallel update), float64."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape)
        self.var = np.ones(shape)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
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


class Normalise:
    """obs -> (obs - mean) / std, clipped to [-clip, clip], with statistics fixed when it was made.

    What the policy sees during one rollout and afterwards, in the update: it
    travels to the environment workers with the actor. Without statistics
    (normalisation off), a float64 copy.
    """

    def __init__(self, mean: np.ndarray | None, std: np.ndarray | None, clip: float):
        self.mean, self.std, self.clip = mean, std, clip

    def __call__(self, obs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """obs [..., d] normalised into `out` (float64, a new array if None): four numpy calls,
        out given positionally (keyword parsing costs a share of a call on arrays this small)."""
        if out is None:
            out = np.empty(np.shape(obs))
        if self.mean is None:
            np.copyto(out, obs)
            return out
        np.subtract(obs, self.mean, out)
        np.divide(out, self.std, out)
        np.minimum(out, self.clip, out=out)  # (np.minimum and np.maximum take out by keyword only)
        np.maximum(out, -self.clip, out=out)
        return out


class ObsNormalizer:
    """(obs - running mean) / running std, clipped; part of the policy's state.

    The statistics change once per rollout, after it (`update` with all its
    observations), so the behaviour policy is one fixed function for a whole
    rollout, as it is for the update that follows.
    """

    def __init__(self, shape: tuple[int, ...], enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(shape)
        self.enabled, self.clip, self.eps = enabled, clip, eps

    def frozen(self) -> Normalise:
        """The normalisation with the statistics as they are now."""
        if not self.enabled:
            return Normalise(None, None, self.clip)
        return Normalise(self.rms.mean.reshape(-1).copy(), np.sqrt(self.rms.var + self.eps).reshape(-1), self.clip)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.frozen()(obs)

    def update(self, obs: np.ndarray) -> None:
        """Add observations [..., d] to the running statistics."""
        if self.enabled:
            self.rms.update(obs.reshape(-1, self.rms.mean.size))

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
