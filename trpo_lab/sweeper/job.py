"""The job's side of a sweep, for any Hydra app: report intermediate values, be pruned, record values.

    from trpo_lab.sweeper.job import current_trial

    trial = current_trial()              # None outside a trpo_optuna sweep
    for step in range(100):
        loss = train_one_epoch()
        if trial is not None and trial.report(loss, step):
            raise optuna.TrialPruned()   # or return: the sweeper marks the trial PRUNED either way
    return loss                          # the trial's value

The sweeper tells each job its trial through the environment variable
TRPO_OPTUNA_TRIAL, set per job with `hydra.job.env_set` (so the app's config
needs no key for it, and every launcher passes it on): storage URL, study
name, trial number and id, seed index and seeds per trial, as JSON. The job reopens that trial in the storage, so
reports and pruning decisions work across processes and machines.

With K seeds per trial (K jobs, one per seed), each job writes its value under
`evals/<step>/seed<i>`; the job that completes the set reports the mean of the
K seeds at `step`, so the pruner compares seed means with seed means. A
decision to prune is written on the trial (`prune_requested`) and stops every
seed of it at its next report.
"""
from __future__ import annotations

import json
import logging
import math
import os
import warnings
from typing import Any, Mapping, Optional

import optuna
from hydra.utils import instantiate

from trpo_lab.sweeper.storage import open_storage

log = logging.getLogger(__name__)

PRUNER_ATTR = "pruner"           # study user attr: the pruner's Hydra config
PRUNE_REQUESTED = "prune_requested"  # trial user attr: some seed decided to prune

# What a job learns from the sweeper, as JSON: storage, study, number, id, seed_index, seeds.
ENV = "TRPO_OPTUNA_TRIAL"
FIELDS = ("storage", "study", "number", "id", "seed_index", "seeds")


def seed_attr(seed_index: int) -> str:
    """Trial user attr holding what seed `seed_index`'s job recorded."""
    return f"seed{seed_index}"


def job_env(storage: str, study: str, number: int, trial_id: int, seed_index: int, seeds: int) -> dict[str, str]:
    """The environment variable the sweeper sets for one job (read back by current_trial)."""
    return {ENV: json.dumps(dict(zip(FIELDS, (storage, study, number, trial_id, seed_index, seeds))))}


_current: dict[str, "JobTrial"] = {}


def current_trial() -> Optional["JobTrial"]:
    """This job's trial, or None when the job is not part of a trpo_optuna sweep."""
    text = os.environ.get(ENV)
    if not text:
        return None
    if text not in _current:
        try:
            fields = json.loads(text)
            args = [fields[k] for k in FIELDS]
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"{ENV}={text!r} is not what the trpo_optuna sweeper sets") from None
        _current.clear()
        _current[text] = JobTrial(*args)
    return _current[text]


class JobTrial:
    """One job's handle on its trial: `report` intermediate values (and be told to stop), `record` values."""

    def __init__(self, storage: str, study: str, number: int, trial_id: int, seed_index: int, seeds: int):
        self.number, self.seed_index, self.seeds, self._id = number, seed_index, seeds, trial_id
        self.storage = open_storage(storage)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study_obj = optuna.load_study(study_name=study, storage=self.storage,
                                      sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner())
        pruner_cfg = study_obj.user_attrs.get(PRUNER_ATTR)
        if pruner_cfg:
            study_obj.pruner = instantiate(pruner_cfg)
        self.multi_objective = len(study_obj.directions) > 1
        self.trial = optuna.trial.Trial(study_obj, trial_id)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.storage.get_trial(self._id).params)

    def report(self, value: float, step: int) -> bool:
        """Report `value` at `step` (an epoch, env steps: any increasing int); True means stop now (pruned).

        A NaN is not reported (the job's final value fails the trial instead). A
        multi-objective study never prunes (Optuna cannot).
        """
        tid, k = self._id, self.seeds
        try:
            if self.multi_objective:
                return False
            if k == 1:
                reported = self._report(value, step)
            else:
                self.storage.set_trial_user_attr(tid, f"evals/{step}/seed{self.seed_index}", value)
                attrs = self.storage.get_trial(tid).user_attrs
                values = [attrs.get(f"evals/{step}/seed{j}") for j in range(k)]
                reported = all(v is not None for v in values) and self._report(sum(values) / k, step)
            if self.storage.get_trial(tid).user_attrs.get(PRUNE_REQUESTED):
                log.info("trial %s: another seed asked to prune; stopping", self.number)
                return True
            if reported and self.trial.should_prune():
                self.storage.set_trial_user_attr(tid, PRUNE_REQUESTED, True)
                log.info("trial %s pruned at step %d (value %.4g)", self.number, step, value)
                return True
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %s was already finished by the sweeper; stopping", self.number)
            return True
        return False

    def _report(self, value: float, step: int) -> bool:
        if not math.isfinite(value):
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step another seed already reported is ignored
            self.trial.report(value, step)
        return True

    def record(self, values: Mapping[str, Any]) -> None:
        """Store named values of this seed's job on the trial; `hydra.sweeper.objectives` picks from them."""
        self.storage.set_trial_user_attr(self._id, seed_attr(self.seed_index), dict(values))
