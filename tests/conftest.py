"""Shared test helpers: run the CLI in a subprocess against this checkout's code."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# OpenBLAS picks its kernels by CPU (Haswell's on AVX2, SkylakeX's on AVX-512), and their float32
# products round differently: the runs recorded in tests/data (made with the Haswell kernels)
# differ from the SkylakeX ones in the 8th digit of the first critic loss. Naming the kernels before
# numpy loads OpenBLAS gives every x86-64 machine the same numbers; child processes inherit it.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

import pytest
import torch

from trpo_lab.trpo import mean_kl

REPO = Path(__file__).resolve().parents[1]

# Keep wandb quiet and local in every test, whatever the developer's machine says.
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["WANDB_MODE"] = os.environ.get("WANDB_MODE", "offline")

# The Ctrl-C tests send SIGINT to the runs and sweepers they start. A shell that starts the suite
# as a background job (`cmd &` without job control) sets SIGINT to ignored, every child inherits
# that, and Python then raises no KeyboardInterrupt. A handler here is reset to the default in
# every child at exec, so the children see Ctrl-C as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


def explicit_kl_hessian(policy, obs):
    """Hessian of the mean KL at theta_old by double back-propagation, [P, P]."""
    with torch.no_grad():
        old = tuple(p.detach() for p in policy.dist_params(obs))
    params = list(policy.parameters())
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(mean_kl(policy, obs, old), params,
                                                                  create_graph=True)])
    rows = []
    for i in range(grad.numel()):
        row = torch.autograd.grad(grad[i], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(r if r is not None else torch.zeros_like(p)).reshape(-1)
                               for r, p in zip(row, params)]))
    return torch.stack(rows)
