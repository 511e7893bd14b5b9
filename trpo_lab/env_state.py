"""An environment's full state, for exact resume: taken (`get_env_state`) and put back (`set_env_state`)."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


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
