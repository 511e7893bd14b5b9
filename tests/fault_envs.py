"""Environments that misbehave at run time or have spaces trpo_lab refuses, importable by job
processes as `env.id=fault_envs:<Id>` (tests dir on PYTHONPATH); and a pickle that runs code.

    WrongShapeObs-v0   declares a (2,) observation, returns a (3,) one from the 3rd step on
    ScalarObs-v0       declares a (1,) observation, returns a bare float from step
    RaiseInStep-v0     raises RuntimeError inside step on the 3rd step
    MultiDiscreteAct-v0, MultiBinaryAct-v0, DictObs-v0   spaces trpo_lab does not handle (yet)
"""
import gymnasium as gym
import numpy as np


class _Plain(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(self.observation_space.shape, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(self.observation_space.shape, dtype=np.float32), 1.0, False, self.t >= 20, {}


class WrongShapeObs(_Plain):
    def step(self, action):
        obs, *rest = super().step(action)
        return (np.zeros(3, dtype=np.float32) if self.t >= 3 else obs), *rest


class ScalarObs(_Plain):
    observation_space = gym.spaces.Box(-1, 1, (1,))

    def step(self, action):
        _, *rest = super().step(action)
        return 0.5, *rest


class RaiseInStep(_Plain):
    def step(self, action):
        if self.t == 2:
            raise RuntimeError("the simulator lost its licence server")
        return super().step(action)


class MultiDiscreteAct(_Plain):
    action_space = gym.spaces.MultiDiscrete([2, 3])


class MultiBinaryAct(_Plain):
    action_space = gym.spaces.MultiBinary(2)


class DictObs(_Plain):
    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))})

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return {"x": np.zeros(2, dtype=np.float32)}, {}


class RunsCode:
    """Unpickling this creates the file `marker`: what a crafted checkpoint could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


for _cls in (WrongShapeObs, ScalarObs, RaiseInStep, MultiDiscreteAct, MultiBinaryAct, DictObs):
    _id = f"{_cls.__name__}-v0"
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls)
