"""Exact resume: environment state round trips, and a killed run that continues bit for bit."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env, read_jsonl
from trpo_lab.config import EnvConfig
from trpo_lab.envs import make_vec_env


def _roll(venv, actions):
    out = []
    for a in actions:
        step = venv.step(a)
        out.append((step.obs.copy(), step.rewards.copy(), step.terminated.copy(), step.truncated.copy(),
                    list(step.episodes)))
    return out


@pytest.mark.parametrize("env_id,kind", [("Hopper-v5", "sync"), ("CartPole-v1", "sync"),
                                         ("Hopper-v5", "subproc")])
def test_vec_env_state_round_trip(env_id, kind):
    """A second vec env given the first one's state mid-episode steps exactly like the first."""
    cfg = EnvConfig(id=env_id, max_episode_steps=30)  # short limit: truncations inside the window
    a, b = make_vec_env(cfg, 2, seed=3, kind=kind), make_vec_env(cfg, 2, seed=99, kind=kind)
    try:
        a.reset()
        b.reset()
        rng = np.random.default_rng(0)
        sample = (lambda: rng.uniform(-1, 1, (2, 3))) if env_id.startswith("Hopper") else \
            (lambda: rng.integers(0, 2, 2))
        _roll(a, [sample() for _ in range(17)])  # mid-episode: 17 of 30 steps
        b.set_state(a.get_state())
        actions = [sample() for _ in range(80)]  # crosses time limits and (Hopper) falls
        for (o1, r1, t1, tr1, e1), (o2, r2, t2, tr2, e2) in zip(_roll(a, actions), _roll(b, actions)):
            np.testing.assert_array_equal(o1, o2)
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(t1, t2)
            np.testing.assert_array_equal(tr1, tr2)
            assert e1 == e2
    finally:
        a.close()
        b.close()
