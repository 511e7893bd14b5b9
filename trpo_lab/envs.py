"""Building an environment trpo_lab can train on (`make_env`), or saying in one line why not.

The rest of the environment side lives by concern: vectorised stepping in
vec_env.py, environment state for exact resume in env_state.py, observation and
reward normalisation in normalisation.py.
"""
from __future__ import annotations

import gymnasium as gym

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
