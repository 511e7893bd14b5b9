"""Tiny tasks for the action and observation spaces beyond Box and Discrete, importable as
`env.id=toy_envs:<Id>` (tests dir on the path). Each episode is 10 steps; each step shows a
random context and pays for actions that match it, so a random policy earns about half of
the most there is and a learned one nearly all of it.

    ToyMultiDiscrete-v0  obs: one-hot contexts c_1, c_2 in {0,1,2} (6 numbers); MultiDiscrete([3, 3]);
                         reward: how many a_j == c_j (random 2/3 a step, best 2)
    ToyMultiBinary-v0    obs: 4 signs +-1; MultiBinary(4); reward: how many a_i == [obs_i > 0]
                         (random 2 a step, best 4)
    ToyDict-v0           obs: Dict(flag: Discrete(2), noise: Box(2), nested: Dict(x: Box(1)));
                         Discrete(2); reward 1 when a == flag (random 1/2, best 1)
    ToyPixel-v0          obs: a 36x36x1 uint8 image, black with a white 6x6 square in the left or
                         right half; Discrete(2); reward 1 when a names the half (random 1/2, best 1)
    ToyTuple-v0          obs: a Tuple space (unsupported: the error test)
"""
import gymnasium as gym
import numpy as np

LENGTH = 10


class _Toy(gym.Env):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self._obs(), {}

    def step(self, action):
        reward = float(self._reward(action))
        self.t += 1
        self._draw()
        return self._obs(), reward, False, self.t >= LENGTH, {}


class ToyMultiDiscrete(_Toy):
    observation_space = gym.spaces.Box(0, 1, (6,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 3])

    def _draw(self):
        self.c = self.np_random.integers(0, 3, 2)

    def _obs(self):
        obs = np.zeros(6, np.float32)
        obs[self.c[0]] = obs[3 + self.c[1]] = 1.0
        return obs

    def _reward(self, action):
        return int(np.sum(np.asarray(action) == self.c))


class ToyMultiBinary(_Toy):
    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.MultiBinary(4)

    def _draw(self):
        self.s = self.np_random.integers(0, 2, 4)

    def _obs(self):
        return (2.0 * self.s - 1.0).astype(np.float32)

    def _reward(self, action):
        return int(np.sum(np.asarray(action) == self.s))


class ToyDict(_Toy):
    observation_space = gym.spaces.Dict({
        "flag": gym.spaces.Discrete(2), "noise": gym.spaces.Box(-1, 1, (2,), np.float32),
        "nested": gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (1,), np.float32)})})
    action_space = gym.spaces.Discrete(2)

    def _draw(self):
        self.flag = int(self.np_random.integers(0, 2))

    def _obs(self):
        return {"flag": self.flag, "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32),
                "nested": {"x": self.np_random.uniform(-1, 1, 1).astype(np.float32)}}

    def _reward(self, action):
        return int(action) == self.flag


class ToyPixel(_Toy):
    observation_space = gym.spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def _draw(self):
        self.side = int(self.np_random.integers(0, 2))
        self.row = int(self.np_random.integers(0, 30))

    def _obs(self):
        img = np.zeros((36, 36, 1), np.uint8)
        col = 4 if self.side == 0 else 26
        img[self.row:self.row + 6, col:col + 6] = 255
        return img

    def _reward(self, action):
        return int(action) == self.side


class ToyTuple(_Toy):
    observation_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (2,))))
    action_space = gym.spaces.Discrete(2)

    def _draw(self):
        pass

    def _obs(self):
        return (0, np.zeros(2, np.float32))

    def _reward(self, action):
        return 0


for _name in ("ToyMultiDiscrete", "ToyMultiBinary", "ToyDict", "ToyPixel", "ToyTuple"):
    if f"{_name}-v0" not in gym.registry:
        gym.register(f"{_name}-v0", entry_point=f"{__name__}:{_name}")
