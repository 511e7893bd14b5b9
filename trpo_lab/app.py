"""The Hydra task function's body: typed config -> validated -> trained -> objective.

In a single run, the endings a user can cause end with one line on stderr:
a bad value or unknown env (exit 2), a diverged run (exit 1), Ctrl-C or SIGTERM
(exit 130); summary.json records the last three. Inside a multirun they are
raised instead, so the sweeper records that job and goes on.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from trpo_lab.config import ConfigError, to_config, validate
from trpo_lab.envs import EnvError
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
    and in a single run the config too, so a bad one leaves no directory behind."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        sweep = config.hydra.runtime.choices.get("sweep")
        if sweep:  # without -m Hydra would train the defaults once, silently
            _fail(f"error: sweep={sweep} is a sweep, which needs -m (--multirun): "
                  f"python -m trpo_lab -m sweep={sweep} ...", 2)
        try:
            validate(to_config(config))
        except (ConfigError, EnvError) as err:
            _fail(f"error: {err}", 2)
        _check_output_dir("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_output_dir("hydra.sweep.dir", config.hydra.sweep.dir)


def _trial_reporter():
    """The job's link to its Optuna trial; None outside a trpo_optuna sweep (optuna not imported)."""
    if "TRPO_OPTUNA_TRIAL" not in os.environ:
        return None
    from trpo_lab.sweeper.job import current_trial

    return current_trial()


def run(dict_cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _in_multirun()
    try:
        cfg = to_config(dict_cfg)
        validate(cfg)
    except (ConfigError, EnvError) as err:
        if multirun:
            raise
        _fail(f"error: {err}", 2)
    _interrupt_on_sigterm()
    reporter = _trial_reporter()
    try:
        on_eval = (lambda env_steps, eval_return: reporter.report(eval_return, env_steps)) if reporter else None
        summary = train(cfg, run_dir, on_eval=on_eval)
    except ConfigError as err:  # trainer.resume: no checkpoint there, or one of another config
        if multirun:
            raise
        _fail(f"error: {err}", 2)
    except (EnvError, DivergedError, OSError) as err:
        if multirun:
            raise
        _fail(f"failed: {err}; outputs in {run_dir}", 1)
    except KeyboardInterrupt:
        if multirun:
            raise
        _fail(f"interrupted; outputs in {run_dir}", 130)
    if reporter is not None:
        from trpo_lab.sweep_check import summary_values

        reporter.record({**summary_values(summary), "run_dir": str(run_dir)})
    print(f"trpo_lab: {summary['status']}: eval return {summary['eval_return']:.2f}, "
          f"{summary['steps_per_s']:.0f} steps/s; outputs in {run_dir}")
    return float(summary["objective"])
