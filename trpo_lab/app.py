"""The Hydra task function's body: typed config -> validated -> trained -> objective.

In a single run, the endings a user can cause end with one line on stderr:
a bad value or unknown env (exit 2), a diverged run or an environment that
cannot be built (exit 1), Ctrl-C or SIGTERM (exit 130, with the command that
continues the run); summary.json records every one that left a run directory. Inside a multirun they are
raised instead, so the sweeper records that job and goes on.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from trpo_lab import metrics as M, resume
from trpo_lab.checkpoint import CheckpointError, checkpoint_path, has_checkpoint
from trpo_lab.config import ConfigError, to_config, validate
from trpo_lab.envs import EnvError, raised_by_env
from trpo_lab.loggers import failed_summary, write_json_atomic
from trpo_lab.resume import RunDirInUse
from trpo_lab.trainer import DivergedError, train


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _interrupt_on_sigterm() -> None:
    """Let SIGTERM (kill, a scheduler's time limit) end the run like Ctrl-C: summary written, wandb closed."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _fail(message: str, code: int) -> None:
    print(f"trpo_lab: {message}", file=sys.stderr)
    sys.exit(code)


def _check_output_dir(key: str, path: str) -> None:
    """Exit with one line when `path` cannot become a writable directory; creates nothing."""
    target = Path(path).absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        _fail(f"error: {key}={path}: {existing} exists and is not a directory", 2)
    if not os.access(existing, os.W_OK | os.X_OK):
        _fail(f"error: {key}={path}: {existing} is not writable", 2)


class OutputDirCheck(Callback):
    """Checks the output directory before Hydra creates it (its own failure is a traceback),
    and in a single run the config too, so a bad one leaves no directory behind.

    It also takes the run directory's lock (resume.hold) before Hydra writes `.hydra/` there,
    so a second run in a directory that a live run holds is refused having changed nothing.

    `trainer.resume=RUN_DIR` continues that run in RUN_DIR: the run directory
    becomes RUN_DIR, and Hydra writes no second `.hydra/` there (the run's own
    one says how it was started), so no empty time-stamped folder appears.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        sweep = config.hydra.runtime.choices.get("sweep")
        if sweep:  # without -m Hydra would train the defaults once, silently
            _fail(f"error: sweep={sweep} is a sweep, which needs -m (--multirun): "
                  f"python -m trpo_lab -m sweep={sweep} ...", 2)
        try:
            cfg = to_config(config)
            validate(cfg)
        except (ConfigError, EnvError) as err:
            _fail(f"error: {err}", 2)
        if resume.resumes_from_path(cfg.trainer.resume):
            source = Path(cfg.trainer.resume).expanduser().absolute()
            if not has_checkpoint(source):
                _fail(f"error: trainer.resume={cfg.trainer.resume!r} is invalid: no checkpoint at "
                      f"{checkpoint_path(source)}", 2)
            with open_dict(config.hydra), read_write(config.hydra):
                config.hydra.run.dir = str(source)
                config.hydra.output_subdir = None
        _check_output_dir("hydra.run.dir", config.hydra.run.dir)
        # Lock the run directory now: Hydra writes .hydra/ (config, overrides) into it before
        # the task runs, and a run refused by the lock must leave the live run's record alone.
        try:
            resume.hold(Path(config.hydra.run.dir))
        except RunDirInUse as err:
            _fail(f"failed: {err}", 1)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = str(config.hydra.sweep.dir)
        _check_output_dir("hydra.sweep.dir", sweep_dir)
        # Each job composes its own config, where hydra.sweep.dir would resolve again with the
        # job's own env (conf/config.yaml names the folder after the task): fix it to this one.
        with open_dict(config.hydra), read_write(config.hydra):
            config.hydra.sweep.dir = sweep_dir
            config.hydra.overrides.hydra.append("hydra.sweep.dir='{}'".format(sweep_dir.replace("'", "\\'")))


def _trial_reporter():
    """The job's link to its Optuna trial; None outside a trpo_optuna sweep (optuna not imported)."""
    if "TRPO_OPTUNA_TRIAL" not in os.environ:
        return None
    from trpo_lab.sweeper.job import current_trial

    return current_trial()


def _record_failure(run_dir: Path, env_id: str, err: BaseException, started: float) -> None:
    """Give a run that failed before training wrote its summary (a bad config in a multirun,
    an environment that cannot be built) a summary.json saying so, as every run directory has."""
    summary = run_dir / "summary.json"
    if run_dir.is_dir() and not (summary.is_file() and summary.stat().st_mtime >= started):
        write_json_atomic(summary, failed_summary(env_id, f"{type(err).__name__}: {err}"))


def _resume_hint(run_dir: Path) -> str:
    """How to continue an interrupted run: the exact command, or why there is nothing to continue."""
    if has_checkpoint(run_dir):
        return f"; continue it with: python -m trpo_lab trainer.resume={shlex.quote(str(run_dir.absolute()))}"
    return "; it stopped before its first checkpoint, so there is nothing to resume"


def run(dict_cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _in_multirun()
    started = time.time() - 1.0  # file times are coarser than the clock on some file systems
    env_id = str(OmegaConf.select(dict_cfg, "env.id", default="?", throw_on_missing=False))
    try:
        cfg = to_config(dict_cfg)
        if multirun:  # a single run's config was validated by OutputDirCheck, before its directory was made
            validate(cfg)
    except (ConfigError, EnvError) as err:
        _record_failure(run_dir, env_id, err, started)
        if multirun:
            raise
        _fail(f"error: {err}", 2)
    _interrupt_on_sigterm()
    reporter = _trial_reporter()
    try:
        on_eval = (lambda env_steps, eval_return: reporter.report(eval_return, env_steps)) if reporter else None
        summary = train(cfg, run_dir, on_eval=on_eval)
    except ConfigError as err:  # trainer.resume: no checkpoint there, or one of another config
        _record_failure(run_dir, env_id, err, started)
        if multirun:
            raise
        _fail(f"error: {err}", 2)
    except RunDirInUse as err:  # another run owns the directory and its summary: touch nothing
        if multirun:
            raise
        _fail(f"failed: {err}", 1)
    except (EnvError, DivergedError, CheckpointError, OSError) as err:
        _record_failure(run_dir, env_id, err, started)
        if multirun:
            raise
        _fail(f"failed: {err}; outputs in {run_dir}", 1)
    except KeyboardInterrupt:
        if multirun:
            raise
        _fail(f"interrupted; outputs in {run_dir}{_resume_hint(run_dir)}", 130)
    except Exception as err:  # the environment's own code raised (envs.CheckedEnv marks it): one line
        call = raised_by_env(err)
        if call is None:
            raise
        message = f"env.id={env_id!r} raised inside {call}: {type(err).__name__}: {err}"
        _record_failure(run_dir, env_id, err, started)
        if multirun:
            raise EnvError(message) from err
        _fail(f"failed: {' '.join(message.split())}; outputs in {run_dir}", 1)
    if reporter is not None:
        from trpo_lab.sweep_check import summary_values

        reporter.record({**summary_values(summary), "run_dir": str(run_dir)})
    print(f"trpo_lab: {summary[M.Summary.STATUS]}: eval return {summary[M.Summary.EVAL_RETURN]:.2f}, "
          f"{summary[M.Summary.STEPS_PER_S]:.0f} steps/s; outputs in {run_dir}")
    return float(summary[M.Summary.OBJECTIVE])
