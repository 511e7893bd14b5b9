"""Environments that go wrong, importable by job processes as `env.id=nan_env:<Id>` (tests dir on PYTHONPATH).

    NaNReward-v0   a NaN reward on the 50th step of every episode
    InfObs-v0      an infinite observation on the 50th step
    CrashOdd-v0    raises RuntimeError on the 5th step when reset with an odd seed
    CrashOnBuild-v0  CrashOnBuild-v0(build_pid=P) builds in process P only
    ImageObs-v0    8x8 RGB image observations, episodes cut by a time limit after 5 steps
"""
import os

import gymnasium as gym
import numpy as np


class _Faulty(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Discrete(2)
    nan_reward = False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        bad = self.t == 50
        obs = np.full(2, np.inf if bad and not self.nan_reward else 0.0, dtype=np.float32)
        reward = float("nan") if bad and self.nan_reward else 1.0
        return obs, reward, False, self.t >= 100, {}


class NaNReward(_Faulty):
    nan_reward = True


class InfObs(_Faulty):
    nan_reward = False


class CrashOdd(_Faulty):
    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.crashes = seed % 2 == 1
        return super().reset(seed=seed)

    def step(self, action):
        if self.crashes and self.t == 4:
            raise RuntimeError("crash on step 5 of the env seeded odd")
        return super().step(action)


class CrashOnBuild(_Faulty):
    def __init__(self, build_pid: int):
        if os.getpid() != build_pid:
            raise RuntimeError(f"CrashOnBuild: built in process {os.getpid()}, not {build_pid}")


class ImageObs(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), dtype=np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((8, 8, 3), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full((8, 8, 3), self.t, dtype=np.uint8), 1.0, False, self.t >= 5, {}


for _id, _cls in (("NaNReward-v0", NaNReward), ("InfObs-v0", InfObs), ("CrashOdd-v0", CrashOdd),
                  ("CrashOnBuild-v0", CrashOnBuild), ("ImageObs-v0", ImageObs)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls)
