"""Pong collection steps/s with trainer.vec_env=sync against subproc, side by side.

    pip install -e '.[atari]'
    python benchmarks/bench_vec_env.py --envs 8 --steps 4096 --repeats 3

Both collect with the same untrained Nature CNN policy (acting through torch,
one thread) on ALE/Pong-v5 as env=pong builds it ([4, 84, 84] uint8 frame
stacks), `trainer.vec_env` the only difference; `env.step` alone, with random
actions, is timed the same way. Kinds alternate within a repeat; the medians
over repeats are printed. Environment construction, the first reset and (for
collection) the first batch are outside the timing.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from trpo_lab.collection import SyncCollector
from trpo_lab.config import Config, EnvConfig
from trpo_lab.trainer import build_agent

PONG = EnvConfig(id="ALE/Pong-v5", kwargs={"frameskip": 1, "repeat_action_probability": 0.0}, preprocess="atari")


def collection_rate(kind: str, n_envs: int, steps: int) -> float:
    """Environment steps/s of SyncCollector.collect: the policy acting and the environments stepping."""
    cfg = Config(env=PONG)
    cfg.trainer.vec_env, cfg.trainer.n_envs = kind, n_envs
    T = steps // n_envs
    collector = SyncCollector(cfg, T, n_envs, seed=0)
    try:
        agent = build_agent(cfg, collector.observation_space, collector.action_space)
        collector.collect(agent, 0)  # the first batch resets the environments and warms torch up
        start = time.perf_counter()
        collector.collect(agent, 0)
        return T * n_envs / (time.perf_counter() - start)
    finally:
        collector.close()


def stepping_rate(kind: str, n_envs: int, steps: int) -> float:
    """Environment steps/s of the vector env alone, with random actions."""
    from trpo_lab.vec_env import make_vec_env

    venv = make_vec_env(PONG, n_envs, seed=0, kind=kind)
    try:
        venv.reset()
        actions = np.random.default_rng(0).integers(0, venv.action_space.n, (steps // n_envs, n_envs))
        start = time.perf_counter()
        for a in actions:
            venv.step(a)
        return actions.size / (time.perf_counter() - start)
    finally:
        venv.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4096, help="environment steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for what, measure in (("collection", collection_rate), ("env.step", stepping_rate)):
            for kind in ("sync", "subproc"):
                rates.setdefault((what, kind), []).append(measure(kind, args.envs, args.steps))
    print(f"Pong, {args.envs} envs, {args.steps} steps, median of {args.repeats}:")
    for what in ("collection", "env.step"):
        sync, subproc = (float(np.median(rates[what, kind])) for kind in ("sync", "subproc"))
        print(f"  {what:10s}  sync {sync:7.0f} steps/s   subproc {subproc:7.0f} steps/s   "
              f"subproc / sync {subproc / sync:.2f}")


if __name__ == "__main__":
    main()
