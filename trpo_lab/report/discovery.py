"""Finding runs and studies: run directories, multiruns, Optuna storages, and why an input was skipped.

A run directory holds `metrics.jsonl`, `summary.json` and `.hydra/config.yaml`
(any one of them makes it one). Its settings are its flat config minus the
bookkeeping keys (config.BOOKKEEPING: the seed, where and how it ran, which
sweep trial it was), which do not change what a run computes.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from trpo_lab import metrics as M
from trpo_lab.config import flat_config, is_bookkeeping
from trpo_lab.sweeper.secrets import mask_text, mask_url



@dataclass
class Run:
    path: Path
    env_id: str
    settings: dict[str, Any]       # flat config minus bookkeeping keys and env.id
    seed: Optional[int]
    status: str                    # summary.json's, or M.Status.UNFINISHED without one
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def final_return(self) -> float:
        """The final deterministic evaluation's mean return (summary.json), nan without one."""
        value = self.summary.get(M.Summary.EVAL_RETURN)
        return float(value) if value is not None else float("nan")

    @property
    def final_steps(self) -> float:
        value = self.summary.get(M.Summary.ENV_STEPS)
        return float(value) if value is not None else float(self.rows[-1][M.ENV_STEPS])

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(env steps, values) of metric `key`; evaluation series end with the final
        evaluation from summary.json (the trainer does not log it as a row)."""
        pts = [(r[M.ENV_STEPS], r[key]) for r in self.rows if r.get(key) is not None]
        final = self.summary.get(M.Summary.EVAL_RETURN)
        if key == M.EVAL_RETURN and final is not None and self.summary.get(M.Summary.ENV_STEPS) is not None \
                and (not pts or pts[-1][0] < self.summary[M.Summary.ENV_STEPS]):
            pts.append((self.summary[M.Summary.ENV_STEPS], final))
        if not pts:
            return np.zeros(0), np.zeros(0)
        x, y = zip(*pts)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


@dataclass
class Inputs:
    runs: list[Run] = field(default_factory=list)
    studies: list[Any] = field(default_factory=list)      # optuna.Study
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line half-written when the run was killed
        if isinstance(row, dict) and M.ENV_STEPS in row:
            rows.append(row)
    return rows


def _is_run_dir(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "summary.json").is_file() \
        or (path / ".hydra" / "config.yaml").is_file()


def load_run(path: Path) -> Run:
    """One run directory; raises ValueError saying why it cannot be used."""
    from omegaconf import OmegaConf

    summary: dict[str, Any] = {}
    if (path / "summary.json").is_file():
        summary = json.loads((path / "summary.json").read_text())
    config_file = path / ".hydra" / "config.yaml"
    flat: dict[str, Any] = {}
    if config_file.is_file():
        flat = flat_config(OmegaConf.to_container(OmegaConf.load(config_file), resolve=False))
    rows = _read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    if not rows:
        why = f" ({summary[M.Summary.STATUS]}: {summary.get(M.Summary.ERROR, 'no error recorded')})" if summary else ""
        raise ValueError(f"no metrics rows{why}")
    env_id = flat.get("env.id") or summary.get(M.Summary.ENV_ID)
    if not env_id:
        raise ValueError("no .hydra/config.yaml and no summary.json: cannot tell the environment")
    settings = {k: v for k, v in flat.items() if not is_bookkeeping(k) and k != "env.id"}
    seed = flat.get("trainer.seed")
    return Run(path, env_id, settings, seed, summary.get(M.Summary.STATUS, M.Status.UNFINISHED), rows, summary)


def _study_url(path: Path) -> Optional[str]:
    """'journal:<path>' or an SQLite URL if `path` holds an Optuna storage, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"SQLite format 3\x00"):
        return f"sqlite:///{path.resolve()}"
    first = head.split(b"\n", 1)[0]
    try:
        if "op_code" in json.loads(first):
            return f"journal:{path.resolve()}"
    except (ValueError, TypeError):
        pass
    return None


def load_studies(url: str) -> list[Any]:
    """Every study in a storage ('journal:<file>' or an RDB URL), opened as the sweeper opens it
    (a garbled journal line is named, with its repair command; a password is masked in errors)."""
    import optuna

    from trpo_lab.sweeper.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage=storage)
    return [optuna.load_study(study_name=name, storage=storage) for name in names]


def collect_inputs(paths: list[str]) -> Inputs:
    inputs = Inputs()
    seen: set[Path] = set()

    def add_study(url: str, label: str) -> None:
        try:
            studies = load_studies(url)
        except Exception as err:
            inputs.skipped.append((mask_url(label), mask_text(
                f"could not read the study storage: {type(err).__name__}: {err}", url)))
            return
        if not studies:
            inputs.skipped.append((mask_url(label), "the storage holds no study"))
        inputs.studies.extend(studies)

    def add_run(path: Path) -> None:
        if path.resolve() in seen:
            return
        seen.add(path.resolve())
        try:
            inputs.runs.append(load_run(path))
        except Exception as err:
            inputs.skipped.append((str(path), f"run directory not usable: {err}"))

    for arg in paths:
        path = Path(arg)
        if "://" in arg:
            add_study(arg, arg)
        elif not path.exists():
            inputs.skipped.append((arg, "does not exist"))
        elif path.is_file():
            url = _study_url(path)
            if url is None:
                inputs.skipped.append((arg, "a file that is not an Optuna journal or SQLite storage"))
            else:
                add_study(url, arg)
        elif _is_run_dir(path):
            add_run(path)
        else:
            found = False
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in ("wandb", "checkpoints", ".hydra", "__pycache__")
                                 and not d.endswith("_files"))
                here = Path(root)
                if here != path and _is_run_dir(here):
                    add_run(here)
                    found = True
                    dirs[:] = []
                    continue
                for name in sorted(files):
                    if name in ("metrics.jsonl", "summary.json") or name.endswith((".yaml", ".html", ".png")):
                        continue
                    url = _study_url(here / name)
                    if url is not None:
                        add_study(url, str(here / name))
                        found = True
            if not found:
                inputs.skipped.append((arg, "no run directories (metrics.jsonl / .hydra) or study storage inside"))
    return inputs
