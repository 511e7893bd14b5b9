"""An environment's full state, for exact resume: taken (`get_env_state`) and put back (`set_env_state`)."""
from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np


_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic)


def _capture(v: Any) -> Any:
    """A copy of a wrapper attribute worth keeping, or _SKIP: plain values, and lists or deques
    of arrays (FrameStackObservation's frames, AtariPreprocessing's frame buffers) as tagged tuples."""
    if isinstance(v, _PLAIN):
        return v.copy() if isinstance(v, np.ndarray) else v
    if isinstance(v, (list, deque)) and len(v) and all(isinstance(x, np.ndarray) for x in v):
        return ("deque" if isinstance(v, deque) else "list", getattr(v, "maxlen", None), [x.copy() for x in v])
    return _SKIP


def _restore(v: Any) -> Any:
    if isinstance(v, tuple) and len(v) == 3 and v[0] in ("deque", "list"):
        items = [x.copy() for x in v[2]]
        return deque(items, maxlen=v[1]) if v[0] == "deque" else items
    return v.copy() if isinstance(v, np.ndarray) else v


_SKIP = object()


def get_env_state(env: gym.Env) -> dict[str, Any]:
    """Everything that decides an environment's future, for exact resume.

    Gymnasium's own pickling does not do this: MuJoCo environments pickle as
    their constructor arguments (EzPickle), losing the simulator state. So we
    take, for every wrapper layer, its plain attributes (the TimeLimit's step
    counter, OrderEnforcing's reset flag, a classic-control task's `state`),
    the environment's random generator, and for MuJoCo tasks the full
    integration state (`mj_getState(..., mjSTATE_INTEGRATION)`: time, qpos,
    qvel, act, warm start, controls and applied forces), and for Atari tasks the
    emulator's state with its random generator (ALE's cloneState), and the frame
    stack and frame buffers of the Atari wrappers.
    """
    layers = []
    layer = env
    while True:
        captured = {k: _capture(v) for k, v in vars(layer).items()}
        layers.append({k: v for k, v in captured.items() if v is not _SKIP})
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
    if hasattr(base, "ale"):  # Atari: the emulator, its RNG included, as bytes
        state["ale"] = np.frombuffer(base.ale.cloneState(include_rng=True).serialize(), np.uint8).copy()
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put `env` (built from the same config) back into a state from `get_env_state`."""
    layer = env
    for attrs in state["layers"]:
        for k, v in attrs.items():
            setattr(layer, k, _restore(v))
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
    if "ale" in state:
        import ale_py

        base.ale.restoreState(ale_py.ALEState(state["ale"].tobytes()))
