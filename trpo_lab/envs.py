"""Building an environment trpo_lab can train on (`make_env`), or saying in one line why not.

The rest of the environment side lives by concern: vectorised stepping in
vec_env.py, environment state for exact resume in env_state.py, observation and
reward normalisation in normalisation.py.
"""
from __future__ import annotations

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
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        env.close()
        kind = "image observations" if isinstance(space, gym.spaces.Box) and len(space.shape) >= 2 \
            else "observation space"
        raise EnvError(f"env.id={cfg.id!r} has {kind} {space}; trpo_lab's MLP policies need a "
                       "flat vector observation (a one-dimensional Box), and pixel policies do not exist yet")
    if not isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        env.close()
        raise EnvError(f"env.id={cfg.id!r} has action space {env.action_space}; "
                       "trpo_lab handles Box and Discrete")
    return CheckedEnv(env, cfg.id)


# An exception raised inside an environment's reset or step carries this attribute ("reset" or
# "step"), so that the command line reports it in one line (app.py) rather than as a trpo_lab bug.
ENV_CALL = "trpo_lab_env_call"


def raised_by_env(err: BaseException) -> str | None:
    """"reset" or "step" when `err` was raised inside an environment's own code; else None."""
    return getattr(err, ENV_CALL, None)


class CheckedEnv(gym.Wrapper):
    """Says plainly what an environment does wrong at run time: an observation whose shape is
    not the one its observation_space declares (a scalar where a vector belongs, say) is an
    EnvError naming it, instead of a numpy broadcasting traceback deep in the rollout; an
    exception raised inside `reset` or `step` goes on unchanged (a worker process reports it
    as it is), marked with ENV_CALL."""

    def __init__(self, env: gym.Env, env_id: str):
        super().__init__(env)
        self.env_id = env_id

    def _checked(self, obs, where: str):
        shape = getattr(obs, "shape", None)
        if shape is None:
            shape = np.shape(obs)
        if tuple(shape) != self.observation_space.shape:
            raise EnvError(f"env.id={self.env_id!r} returned an observation of shape {tuple(shape)} from {where}; "
                           f"its observation_space declares {self.observation_space.shape}")
        return obs

    def reset(self, **kwargs):
        try:
            obs, info = self.env.reset(**kwargs)
        except Exception as err:
            setattr(err, ENV_CALL, "reset")
            raise
        return self._checked(obs, "reset"), info

    def step(self, action):
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as err:
            setattr(err, ENV_CALL, "step")
            raise
        return self._checked(obs, "step"), reward, terminated, truncated, info
