"""Environments that go wrong, importable by job processes as `env.id=nan_env:<Id>` (tests dir on PYTHONPATH).

    NaNReward-v0   a NaN reward on the 50th step of every episode
    InfObs-v0      an infinite observation on the 50th step
"""
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


for _id, _cls in (("NaNReward-v0", NaNReward), ("InfObs-v0", InfObs)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls)
