"""Shared test helpers: run the CLI in a subprocess against this checkout's code."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Keep wandb quiet and local in every test, whatever the developer's machine says.
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["WANDB_MODE"] = os.environ.get("WANDB_MODE", "offline")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("HYDRA_FULL_ERROR", None)  # the user's view: Hydra's short error messages
    return env


def run_cli(*overrides: str, cwd: Path, timeout: float = 300, module: str = "trpo_lab"
            ) -> subprocess.CompletedProcess:
    """`python -m trpo_lab OVERRIDES...` in `cwd`; returns the completed process (text mode)."""
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture
def fast_overrides() -> list[str]:
    """A CartPole run of a few seconds with wandb off."""
    return ["env=cartpole", "trainer.total_steps=2048", "trainer.steps_per_iter=512",
            "trainer.eval_episodes=2", "logger=none"]


def small_actor(venv):
    """A seeded random policy's NumpyActor for `venv`, and a normalisation with made-up statistics."""
    import numpy as np
    import torch

    from trpo_lab.envs import Normalise
    from trpo_lab.policies import make_policy

    torch.manual_seed(0)
    obs_dim = int(np.prod(venv.observation_space.shape))
    policy = make_policy(obs_dim, venv.action_space, [8], "tanh", 0.0, True)
    return policy.numpy_actor(), Normalise(np.linspace(-0.5, 0.5, obs_dim), np.linspace(0.5, 2.0, obs_dim), 10.0)


def segment_copy(segment) -> dict:
    """A collected Segment's arrays and episodes, copied out of the vector env's buffers (final_obs
    zero where no episode ended: what is left there is stale)."""
    import dataclasses

    out = {f.name: (list(getattr(segment, f.name)) if f.name == "episodes" else getattr(segment, f.name).copy())
           for f in dataclasses.fields(segment)}
    out["final_obs"][~(out["terminated"] | out["truncated"])] = 0.0  # valid only where an episode ended
    return out
