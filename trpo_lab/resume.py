"""Exact resume: what a checkpoint holds beyond the agent, and how a run picks it up again.

A checkpoint is written at an iteration boundary. Beside the agent (policy,
critic, optimiser, observation normaliser, reward scaler with its running
returns) it holds everything else that decides the rest of the run:

    the numpy Generator that samples actions, the torch Generator that shuffles
    value minibatches, torch's global RNG, every environment's state mid-episode
    (simulator, TimeLimit counter, the env's own RNG; see env_state.get_env_state),
    the unfinished episodes' running returns, the observation to act on next,
    the window of finished episodes behind rollout/ep_return_mean, and the
    trainer's counters.

So a resumed run's metrics rows from the checkpoint on equal the rows of a run
that was never stopped (wall-clock fields aside).

When a run resumes (`trainer.resume`):
    auto   (default) resume if the run directory already holds a checkpoint,
           else start fresh. "The same command" therefore means the same run
           directory: fix it with hydra.run.dir=... (Hydra's default is
           time-stamped, so a plain rerun starts a new run).
    never  start fresh; an existing metrics.jsonl in the run directory is replaced.
    PATH   continue the run in directory PATH, in that directory, with the
           config stored in its checkpoint (this command's other settings are
           ignored, with a warning).

One run at a time writes in a run directory (`claim`): the same command
started twice with a fixed hydra.run.dir (a job requeued while the first is
still running) would otherwise interleave two runs' metrics and checkpoints.
The command line takes that lock (`hold`) before Hydra writes `.hydra/`, so a
refused run leaves the live run's record as it was.

A checkpoint that does not load (checkpoint.py) falls back to the one before it
with a warning, or ends the run in one line naming the file. A garbled row of
metrics.jsonl is dropped on resume with a warning naming its line.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from trpo_lab import metrics as M
from trpo_lab.checkpoint import checkpoint_path, has_checkpoint, load_checkpoint
from trpo_lab.config import RESUME_MAY_CHANGE, Config, ConfigError, flat_config, is_under

log = logging.getLogger(__name__)

AUTO, NEVER = "auto", "never"


LOCK_FILE = ".trpo_lab.lock"


class RunDirInUse(OSError):
    """Another live run (in another process, or in this one) is training in the run directory."""


_HELD: dict[Path, int] = {}  # run directories locked ahead by `hold`: resolved path -> the locked descriptor
_CLAIMED: set[Path] = set()  # those of them a run is using now (in `claim`)


def _lock(run_dir: Path) -> int:
    """Create `run_dir` if need be and take the exclusive flock on run_dir/.trpo_lab.lock; its descriptor."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirInUse(f"{run_dir} is in use by another trpo_lab run (pid {owner}); wait for it to end, "
                          "or give this one another hydra.run.dir") from None
    except OSError as err:  # a file system without locks (Lustre mounted noflock, some NFS): run unguarded
        log.warning("cannot lock %s (%s); nothing stops a second run from writing there too",
                    run_dir / LOCK_FILE, err.strerror or err)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold(run_dir: Path) -> None:
    """Lock `run_dir` now, for the run this process is about to start there (`claim` takes it over).

    The command line calls this before Hydra writes the run's `.hydra/` (app.OutputDirCheck),
    so a run refused by the lock changes nothing in the directory. The lock lasts until the
    process exits. Raises RunDirInUse as `claim` does; holding a directory twice does nothing.
    """
    if Path(run_dir).resolve() in _HELD:
        return
    fd = _lock(run_dir)
    _HELD[Path(run_dir).resolve()] = fd


@contextmanager
def claim(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` (created if need be) for this process while the block runs.

    An exclusive flock on run_dir/.trpo_lab.lock, which holds the owner's pid.
    The kernel drops it when its process exits, killed or not, so a dead run
    never leaves the directory locked. Raises RunDirInUse while another
    run holds it, in another process or in this one. On a file system that has no locks the run
    goes on unguarded, with a warning. (Worker processes start from the forkserver, so none
    of them inherits the lock.) A directory locked ahead by `hold` is taken over, and stays locked.
    """
    key = Path(run_dir).resolve()
    if key in _HELD:
        if key in _CLAIMED:
            raise RunDirInUse(f"{run_dir} is in use by another trpo_lab run (pid {os.getpid()}); wait for it "
                              "to end, or give this one another hydra.run.dir")
        _CLAIMED.add(key)
        try:
            yield
        finally:
            _CLAIMED.discard(key)
        return
    fd = _lock(run_dir)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def resumes_from_path(mode: str | None) -> bool:
    """True when trainer.resume names a run directory (not auto, never or null)."""
    return mode not in (None, AUTO, NEVER)


def _command_keys() -> set[str] | None:
    """Keys this command set on its command line (Hydra's task overrides); None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    except Exception:
        return None


def _given(key: str, command: set[str] | None) -> bool:
    """Whether the command set `key`, itself or through its group (`env=hopper` sets env.id)."""
    return command is None or any(key == c or key.startswith(c + ".") or key.startswith(c + "/")
                                  for c in command)


def resolve(cfg: Config, run_dir: Path) -> tuple[Config, Path, dict[str, Any] | None]:
    """(config, run directory, checkpoint or None) of the run `cfg` asks for in `run_dir`."""
    mode = cfg.trainer.resume
    if mode in (None, NEVER):
        return cfg, run_dir, None
    if mode == AUTO:
        if not has_checkpoint(run_dir):
            return cfg, run_dir, None
        source = Path(run_dir)
    else:
        source = Path(mode).expanduser()
        if not has_checkpoint(source):
            raise ConfigError(f"trainer.resume={mode!r} is invalid: no checkpoint at {checkpoint_path(source)}")
    checkpoint = load_checkpoint(source)
    if "training" not in checkpoint:
        raise ConfigError(f"trainer.resume={mode!r}: the checkpoint in {source} predates exact resume "
                          "(no training state); it can be evaluated but not resumed")
    stored = _stored_config(checkpoint["config"], cfg, keep_command=(mode == AUTO))
    # auto: the same command again, so any other difference is a mistake; a path: the
    # stored run's own settings win over whatever this command says.
    may_change = RESUME_MAY_CHANGE["auto" if mode == AUTO else "path"]
    differ = [k for k in _diff(flat_config(stored), flat_config(cfg)) if not is_under(k, may_change)]
    if differ and mode == AUTO:
        raise ConfigError(
            f"trainer.resume=auto: {run_dir} holds a checkpoint of a different config "
            f"({', '.join(f'{k}: {flat_config(stored)[k]!r} -> {flat_config(cfg).get(k)!r}' for k in differ[:5])}); "
            "use another hydra.run.dir, or trainer.resume=never to start over")
    command = _command_keys()
    ignored = [k for k in differ if _given(k, command)]  # defaults the user never typed are no news
    if ignored:
        log.warning("resuming %s with its own config; ignoring this command's %s", source, ", ".join(ignored))
    log.info("resuming %s from iteration %d (%d env steps)", source, checkpoint["iteration"],
             checkpoint["env_steps"])
    return stored, source, checkpoint


def _stored_config(stored: dict[str, Any], current: Config, keep_command: bool) -> Config:
    """The checkpoint's config with trainer.resume and trainer.progress from the current
    command and, when `keep_command` (auto: the same command again), the other keys in
    RESUME_MAY_CHANGE["auto"] too."""
    from omegaconf import OmegaConf

    from trpo_lab.config import to_config

    merged = to_config(OmegaConf.create(stored))
    merged.trainer.progress = current.trainer.progress
    merged.trainer.resume = current.trainer.resume
    if keep_command:
        merged.trainer.total_steps = current.trainer.total_steps
        merged.logger = current.logger
    return merged


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def capture(collector, generator: torch.Generator, counters: dict[str, float]) -> dict[str, Any]:
    """The training state outside the agent, at an iteration boundary: the collector's
    (environments, the observation to act on next, the action-sampling generator,
    the episode window, the lagged behaviour policies; collection.py), the torch
    generators, and the trainer's counters."""
    return {
        **collector.state_dict(),
        "torch_generator": generator.get_state(),
        "torch_global_rng": torch.get_rng_state(),
        "counters": dict(counters),
    }


def restore(state: dict[str, Any], collector, generator: torch.Generator) -> None:
    """Put the state from `capture` back. (The counters are read by the trainer before its logger starts.)"""
    collector.load_state_dict(state)
    generator.set_state(state["torch_generator"])
    torch.set_rng_state(state["torch_global_rng"])


def truncate_metrics(run_dir: Path, last_iteration: int) -> int:
    """Drop metrics.jsonl rows after `last_iteration` (written after the checkpoint) and any
    half-written line a kill left behind; returns how many rows were dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not a JSON row (a write cut short, or the file was edited); dropped it",
                        path, number)
            dropped += 1
            continue
        if isinstance(row, dict) and row.get(M.ITERATION, 0) <= last_iteration:
            kept.append(line)
        else:
            dropped += 1
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    if dropped:
        log.info("dropped %d metrics rows written after the checkpoint", dropped)
    return dropped


def start_fresh(run_dir: Path) -> None:
    """A fresh run in a directory that has metrics from an earlier one replaces them."""
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        path.unlink()
