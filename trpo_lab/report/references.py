"""Published TRPO scores the report draws as reference lines, and the per-task scale its
cross-task aggregates normalise by. docs/reports.md ("Reference scores") lists them too.

MuJoCo: the final return of TRPO after 1M environment steps on the -v3 task of
the same name (trpo_lab runs -v5, gymnasium 1.x: expect differences of a few
percent); mean +- std over the source's seeds. Atari: the TRPO paper's scores
(Schulman et al. 2015, Table 1) after its own budget, about 500 iterations of
100k steps, far more than a CPU run here reaches. The sources measure
differently (best vs final, deterministic vs stochastic evaluation), which the
`note` says; `budget` says after how much training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

STEPS = 1_000_000


@dataclass(frozen=True)
class Source:
    name: str
    note: str
    url: str
    budget: str = "1M steps, -v3"


TIANSHOU = Source("tianshou", "10 seeds, best average return",
                  "https://github.com/thu-ml/tianshou/tree/master/examples/mujoco")
SB3_CONTRIB = Source("sb3-contrib", "3 seeds", "https://sb3-contrib.readthedocs.io/en/master/modules/trpo.html")
RL_ZOO3 = Source("rl-zoo3", "1 agent", "https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md")
BASELINES = Source("OpenAI baselines", "no spread published", "https://github.com/openai/baselines")
PAPER_SINGLE = Source("paper, single path", "Schulman et al. 2015, Table 1", "https://arxiv.org/abs/1502.05477",
                      budget="~500 iterations x 100k steps")
PAPER_VINE = Source("paper, vine", "Schulman et al. 2015, Table 1", "https://arxiv.org/abs/1502.05477",
                    budget="~500 iterations x 100k steps")

# task (env id without its version) -> [(source, mean, std or None)]
PUBLISHED: dict[str, list[tuple[Source, float, Optional[float]]]] = {
    "Hopper": [(TIANSHOU, 2046, 1038), (SB3_CONTRIB, 3372, 215), (RL_ZOO3, 3618, 357), (BASELINES, 1913, None)],
    "Walker2d": [(TIANSHOU, 3827, 783), (SB3_CONTRIB, 4502, 234), (RL_ZOO3, 4933, 1453), (BASELINES, 2343, None)],
    "HalfCheetah": [(TIANSHOU, 4471, 805), (SB3_CONTRIB, 1803, 46), (RL_ZOO3, 1785, 69), (BASELINES, 1290, None)],
    "Ant": [(TIANSHOU, 2867, 708), (SB3_CONTRIB, 3554, 591), (RL_ZOO3, 4982, 664)],
    "Swimmer": [(TIANSHOU, 41, 20), (SB3_CONTRIB, 359, 2), (RL_ZOO3, 366, 2), (BASELINES, 95, None)],
    "Humanoid": [(TIANSHOU, 810, 126)],
    "InvertedDoublePendulum": [(TIANSHOU, 8435, 1073), (BASELINES, 6732, None)],
    # The paper's seven games (ALE/<Game>-v5 here; the paper ran the ALE of 2015).
    "ALE/BeamRider": [(PAPER_SINGLE, 1425.2, None), (PAPER_VINE, 859.5, None)],
    "ALE/Breakout": [(PAPER_SINGLE, 10.8, None), (PAPER_VINE, 34.2, None)],
    "ALE/Enduro": [(PAPER_SINGLE, 534.6, None), (PAPER_VINE, 430.8, None)],
    "ALE/Pong": [(PAPER_SINGLE, 20.9, None), (PAPER_VINE, 20.9, None)],
    "ALE/Qbert": [(PAPER_SINGLE, 1973.5, None), (PAPER_VINE, 7732.5, None)],
    "ALE/Seaquest": [(PAPER_SINGLE, 1908.6, None), (PAPER_VINE, 788.4, None)],
    "ALE/SpaceInvaders": [(PAPER_SINGLE, 568.4, None), (PAPER_VINE, 450.2, None)],
}

# Tasks whose best return is fixed by their definition (gymnasium's docs): +1 per step up to the time limit.
MAXIMUM: dict[str, float] = {"CartPole": 500.0, "InvertedPendulum": 1000.0}


def task(env_id: str) -> str:
    """'Hopper-v5' -> 'Hopper' (a namespace such as 'ALE/' kept)."""
    return env_id.rsplit("-v", 1)[0]


def published(env_id: str) -> list[tuple[Source, float, Optional[float]]]:
    return PUBLISHED.get(task(env_id), [])


def normaliser(env_id: str) -> tuple[Optional[float], str]:
    """(scale, what it is) that a task's returns are divided by for cross-task aggregates:
    the task's maximum where it has one, else the best published TRPO mean; None without either."""
    name = task(env_id)
    if name in MAXIMUM:
        return MAXIMUM[name], f"the task's maximum return {MAXIMUM[name]:g}"
    scores = published(env_id)
    if scores:
        source, value, _ = max(scores, key=lambda s: s[1])
        return float(value), f"the best published TRPO score ({value:g}, {source.name}, {source.budget})"
    return None, ""
