"""The Hydra task function's body: typed config -> validated -> trained -> objective.

Errors a user can cause (a bad value, an unknown env) end a single run with one
line on stderr and exit code 2. Inside a multirun they are raised instead, so
the sweeper records that job as failed and goes on.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from trpo_lab.config import ConfigError, to_config, validate
from trpo_lab.envs import EnvError
from trpo_lab.trainer import train


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _trial_reporter(cfg):
    """The job's link to its Optuna trial; None outside a trpo_optuna sweep (optuna not imported)."""
    if cfg.trial.study is None:
        return None
    from trpo_lab.sweeper.job import open_trial

    return open_trial(cfg.trial)


def run(dict_cfg: DictConfig) -> float:
    try:
        cfg = to_config(dict_cfg)
        validate(cfg)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        reporter = _trial_reporter(cfg)
        summary = train(cfg, run_dir, on_eval=reporter.on_eval if reporter else None)
        if reporter is not None:
            reporter.record(summary, run_dir)
    except (ConfigError, EnvError) as err:
        if _in_multirun():
            raise
        print(f"trpo_lab: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"trpo_lab: {summary['status']}: eval return {summary['eval_return']:.2f}, "
          f"{summary['steps_per_s']:.0f} steps/s; outputs in {run_dir}")
    return float(summary["objective"])
