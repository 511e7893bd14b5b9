"""Building an environment trpo_lab can train on (`make_env`), or saying in one line why not.

What trpo_lab takes (README, "Supported spaces and networks"):
    observations  a vector Box; an image (uint8 Box H x W, H x W x C or C x H x W,
                  for network nature_cnn); a Dict of vectors, Discrete, MultiBinary,
                  MultiDiscrete or Dicts of them, flattened into one vector
                  (gymnasium's FlattenObservation: Discrete one-hot)
    actions       Box, Discrete (starting at 0), MultiDiscrete (one-dimensional, starting at 0),
                  MultiBinary (one-dimensional)
`env.preprocess=atari` adds gymnasium's Atari wrappers (`atari_wrappers`).

The rest of the environment side lives by concern: vectorised stepping in
vec_env.py, environment state for exact resume in env_state.py, observation and
reward normalisation in normalisation.py.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from trpo_lab.config import EnvConfig
from trpo_lab.networks import is_image_space


class EnvError(RuntimeError):
    """The environment cannot be used by trpo_lab (space type, construction failure)."""


def register_ale(env_id: str) -> None:
    """Make gymnasium know the `ALE/...` ids (ale-py registers them when imported)."""
    if not env_id.startswith("ALE/"):
        return
    try:
        import ale_py
    except ImportError as err:
        raise EnvError(f"env.id={env_id!r} needs ale-py: pip install 'trpo_lab[atari]' ({err})") from None
    gym.register_envs(ale_py)


def atari_wrappers(env: gym.Env, training: bool) -> gym.Env:
    """The usual DQN preprocessing (Mnih et al. 2015) as gymnasium ships it: up to 30 no-op
    starts, frame skip 4 (max over the last two frames), 84x84 grey, a lost life ends the episode
    in training only (evaluation plays whole games), then the last 4 frames stacked: [4, 84, 84] uint8."""
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=training,
                             grayscale_obs=True, scale_obs=False)
    return FrameStackObservation(env, 4)


def one_line(space: gym.Space) -> str:
    """A space as text on one line (a multi-dimensional MultiDiscrete prints its array over several)."""
    return " ".join(str(space).split())


def _flattenable(space: gym.Space) -> str | None:
    """None if FlattenObservation gives a vector trpo_lab can use, else what is in the way."""
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            problem = _flattenable(sub)
            if problem:
                return f"{key!r}: {problem}"
        return None
    if is_image_space(space):
        return f"an image {space} (images inside a Dict are not supported; use an image-only env)"
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiBinary, gym.spaces.MultiDiscrete)):
        return None
    return f"{type(space).__name__} {space} (only Box, Discrete, MultiBinary, MultiDiscrete and Dict can be flattened)"


def _action_problem(space: gym.Space) -> str | None:
    if isinstance(space, gym.spaces.Discrete):
        return None if space.start == 0 else "a Discrete with start != 0"
    if isinstance(space, gym.spaces.Box):
        return None
    if isinstance(space, gym.spaces.MultiDiscrete):
        if len(space.shape) != 1:
            return "a multi-dimensional MultiDiscrete (only one-dimensional nvec)"
        if np.any(space.start != 0):
            return "a MultiDiscrete with start != 0"
        return None
    if isinstance(space, gym.spaces.MultiBinary):
        return None if len(space.shape) == 1 else "a multi-dimensional MultiBinary (only MultiBinary(n))"
    return f"a {type(space).__name__}"


def make_env(cfg: EnvConfig, training: bool = True) -> gym.Env:
    """The environment `cfg` names, with its wrappers; `training` False for evaluation (with
    env.preprocess=atari: a lost life does not end the episode)."""
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    register_ale(cfg.id)
    try:
        env = gym.make(cfg.id, **kwargs)
        if cfg.preprocess == "atari":
            env = atari_wrappers(env, training)
    except Exception as err:
        raise EnvError(f"could not build env.id={cfg.id!r}: {err}") from err
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):
        problem = _flattenable(space)
        if problem:
            env.close()
            raise EnvError(f"env.id={cfg.id!r} has a Dict observation trpo_lab cannot flatten: {problem}")
        env = gym.wrappers.FlattenObservation(env)
        space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and (len(space.shape) == 1 or is_image_space(space))):
        env.close()
        if isinstance(space, gym.spaces.Box) and len(space.shape) >= 2:
            kind = f"image observations {one_line(space)} that are not uint8 (H x W, H x W x C or C x H x W) images"
        elif isinstance(space, gym.spaces.Tuple):
            kind = f"a Tuple observation space {one_line(space)} (Tuple spaces are not supported; a Dict is)"
        else:
            kind = f"observation space {one_line(space)}"
        raise EnvError(f"env.id={cfg.id!r} has {kind}; trpo_lab takes a vector (a one-dimensional Box), "
                       "a uint8 image or a Dict of vectors")
    problem = _action_problem(env.action_space)
    if problem:
        env.close()
        raise EnvError(f"env.id={cfg.id!r} has action space {one_line(env.action_space)}, {problem}; "
                       "trpo_lab handles Box, Discrete, MultiDiscrete and MultiBinary")
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
