"""The job's side of a sweep: report evaluations to its trial, let the pruner stop it.

The sweeper tells each job its trial through the `trial` config node (storage
URL, study name, trial id, seed index). The job reopens that trial in the
storage, so reports and pruning decisions work across processes and machines.

With K seeds per trial (K jobs, one per seed), each job writes its evaluation
under `evals/<env_steps>/seed<i>`; the job that completes the set reports the
mean of the K seeds at step `env_steps`, so the pruner compares seed means with
seed means. A pruning decision is written on the trial (`prune_requested`) and
stops every seed of it at its next evaluation.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.utils import instantiate

from trpo_lab import metrics as M
from trpo_lab.config import TrialConfig
from trpo_lab.sweeper.storage import open_storage

log = logging.getLogger(__name__)

PRUNER_ATTR = "pruner"           # study user attr: the pruner's Hydra config
PRUNE_REQUESTED = "prune_requested"  # trial user attr: some seed decided to prune


def seed_attr(seed_index: int) -> str:
    """Trial user attr holding the numeric summary of seed `seed_index`'s run."""
    return f"seed{seed_index}"


def open_trial(tc: TrialConfig) -> Optional["TrialReporter"]:
    """The reporter for this job's trial, or None when the job is not part of a sweep."""
    if tc.study is None:
        return None
    if tc.storage is None or tc.id is None:
        raise ValueError("trial.study is set but trial.storage or trial.id is missing")
    return TrialReporter(tc)


class TrialReporter:
    def __init__(self, tc: TrialConfig):
        self.tc = tc
        self.storage = open_storage(tc.storage)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=tc.study, storage=self.storage,
                                  sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner())
        pruner_cfg = study.user_attrs.get(PRUNER_ATTR)
        if pruner_cfg:
            study.pruner = instantiate(pruner_cfg)
        self.multi_objective = len(study.directions) > 1
        self.trial = optuna.trial.Trial(study, tc.id)

    def on_eval(self, env_steps: int, eval_return: float) -> bool:
        """The trainer's evaluation hook: report, and return True to stop this run as pruned."""
        tid, k = self.tc.id, self.tc.seeds
        try:
            if self.multi_objective:  # Optuna cannot prune multi-objective studies
                return False
            if k == 1:
                reported = self._report(eval_return, env_steps)
            else:
                self.storage.set_trial_user_attr(tid, f"evals/{env_steps}/seed{self.tc.seed_index}", eval_return)
                attrs = self.storage.get_trial(tid).user_attrs
                values = [attrs.get(f"evals/{env_steps}/seed{j}") for j in range(k)]
                reported = all(v is not None for v in values) and self._report(
                    sum(values) / k, env_steps)
            if self.storage.get_trial(tid).user_attrs.get(PRUNE_REQUESTED):
                log.info("trial %s: another seed asked to prune; stopping", self.tc.number)
                return True
            if reported and self.trial.should_prune():
                self.storage.set_trial_user_attr(tid, PRUNE_REQUESTED, True)
                log.info("trial %s pruned at %d env steps (eval return %.2f)", self.tc.number, env_steps,
                         eval_return)
                return True
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %s was already finished by the sweeper; stopping", self.tc.number)
            return True
        return False

    def _report(self, value: float, step: int) -> bool:
        if not math.isfinite(value):
            return False  # a NaN evaluation ends as a failed trial, not as a pruning signal
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step another seed already reported is ignored
            self.trial.report(value, step)
        return True

    def record(self, summary: dict[str, Any], run_dir: Path) -> None:
        """Store this seed's numeric summary on the trial, for the sweeper to aggregate."""
        record: dict[str, Any] = {k: summary[k] for k in M.SUMMARY_FIELDS if k != "env_id"}
        record["run_dir"] = str(run_dir)
        self.storage.set_trial_user_attr(self.tc.id, seed_attr(self.tc.seed_index), record)
