"""Checkpoints: one file holding what resuming and evaluating a run need.

`checkpoints/last.pt` (the latest iteration, with the training state that exact
resume needs) and `checkpoints/best.pt` (the policy of the best deterministic
evaluation so far, with its `eval_return`) are replaced atomically, so a run
killed while saving keeps its previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
NAMES = {"last": LAST, "best": BEST}


def checkpoint_path(run_dir: Path, name: str = LAST) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / name


def save_checkpoint(run_dir: Path, state: dict[str, Any], name: str = LAST) -> Path:
    path = checkpoint_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path, name: str = LAST) -> dict[str, Any]:
    path = checkpoint_path(run_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
