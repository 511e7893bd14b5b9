"""trpo_lab's check of a sweep job's config, run by trpo_optuna before any job (hydra.sweeper.check_config).

The sweeper composes a job's config at the search space's bounds and calls
`check_job_config` on it, so a bound outside what trpo_lab accepts, or an
objective that summary.json does not have, stops the sweep before it trains.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from trpo_lab import metrics as M
from trpo_lab.config import to_config, validate

NUMERIC_FIELDS = tuple(f for f in M.SUMMARY_FIELDS if f not in (M.Summary.ENV_ID, M.Summary.STATUS))


def check_job_config(cfg: DictConfig) -> None:
    """Raise ValueError (ConfigError) naming the key when `cfg` is not a valid trpo_lab job."""
    objectives = OmegaConf.select(cfg, "hydra.sweeper.objectives")
    for o in objectives or ():
        if o not in NUMERIC_FIELDS:
            raise ValueError(f"hydra.sweeper.objectives: {o!r} is not a summary.json number; "
                             f"choose from {NUMERIC_FIELDS}")
    validate(to_config(cfg))


def summary_values(summary: dict) -> dict:
    """What a trpo_lab job records on its trial: summary.json's numbers (hydra.sweeper.objectives picks)."""
    return {k: summary[k] for k in NUMERIC_FIELDS}
