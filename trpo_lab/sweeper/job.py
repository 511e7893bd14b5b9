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
needs no key for it, and every launcher passes it on): storage URL (password
masked, secrets.py), study name, trial number and id, seed index, seeds per
trial and the sweeper's owner id, as JSON. The job reopens that trial in the
storage, so reports and pruning decisions work across processes and machines.

The pruner reaches the job as data: the study's `pruner` user attribute holds a
name and numeric settings, checked against PRUNERS before anything is built
(anyone who can write the storage could otherwise make every job call any
function). A job whose sweeper runs on this host watches it: when the sweeper
process is gone (killed, even by kill -9), the job stops within seconds
(SIGTERM to itself, then a hard exit), since no one would tell its result.

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
import signal
import socket
import threading
import warnings
from typing import Any, Mapping, Optional

import optuna

from trpo_lab.sweeper.liveness import owner_dead
from trpo_lab.sweeper.storage import TrialStore, job_storage_url, open_storage

log = logging.getLogger(__name__)

PRUNER_ATTR = "pruner"           # study user attr: {"name": ..., "settings": {...}} (pruner_spec)
PRUNE_REQUESTED = "prune_requested"  # trial user attr: some seed decided to prune

# What a job learns from the sweeper, as JSON: storage, study, number, id, seed_index, seeds, sweeper.
ENV = "TRPO_OPTUNA_TRIAL"
FIELDS = ("storage", "study", "number", "id", "seed_index", "seeds", "sweeper")
WATCH_INTERVAL = 1.0  # seconds between the job's looks at its sweeper
STOP_GRACE = 10.0     # seconds the job has after its SIGTERM before it exits hard

# The pruners a study may name, each with the settings it may give: numbers (an
# int or float), None, or "auto" where Optuna takes it. Nothing else is built.
_RESOURCE = ("auto",)
PRUNERS: dict[str, dict[str, tuple]] = {
    "NopPruner": {},
    "MedianPruner": {"n_startup_trials": (), "n_warmup_steps": (), "interval_steps": (), "n_min_trials": ()},
    "PercentilePruner": {"percentile": (), "n_startup_trials": (), "n_warmup_steps": (), "interval_steps": (),
                         "n_min_trials": ()},
    "SuccessiveHalvingPruner": {"min_resource": _RESOURCE, "reduction_factor": (),
                                "min_early_stopping_rate": (), "bootstrap_count": ()},
    "HyperbandPruner": {"min_resource": (), "max_resource": _RESOURCE, "reduction_factor": (),
                        "bootstrap_count": ()},
    "ThresholdPruner": {"lower": (), "upper": (), "n_warmup_steps": (), "interval_steps": ()},
    "WilcoxonPruner": {"p_threshold": (), "n_startup_steps": ()},
}


class PrunerError(ValueError):
    """A pruner that is not in PRUNERS, or a setting it may not have."""


def pruner_spec(cfg: Any) -> dict[str, Any]:
    """{"name", "settings"} of a pruner given as Hydra config ({_target_: optuna.pruners.X, ...}) or as a spec.

    PrunerError, one line, for anything PRUNERS does not allow.
    """
    if cfg is None:
        return {"name": "NopPruner", "settings": {}}
    if not isinstance(cfg, Mapping):
        raise PrunerError(f"the pruner {cfg!r} is not a mapping")
    cfg = dict(cfg)
    if "_target_" in cfg:
        target = str(cfg.pop("_target_"))
        name = target[len("optuna.pruners."):] if target.startswith("optuna.pruners.") else target
        settings = {k: v for k, v in cfg.items() if not k.startswith("_")}
    else:
        name, settings = cfg.get("name"), cfg.get("settings") or {}
        target = str(name)
    if not isinstance(name, str) or name not in PRUNERS:
        raise PrunerError(f"pruner {target!r} is not one trpo_optuna builds; allowed: "
                          f"{', '.join('optuna.pruners.' + n for n in PRUNERS)}")
    if not isinstance(settings, Mapping):
        raise PrunerError(f"pruner {name}: settings {settings!r} are not a mapping")
    allowed = PRUNERS[name]
    for key, value in settings.items():
        if key not in allowed:
            raise PrunerError(f"pruner {name} has no setting {key!r} trpo_optuna passes; allowed: "
                              f"{', '.join(allowed) or 'none'}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number or value is None or value in allowed[key]):
            raise PrunerError(f"pruner {name}: {key}={value!r} must be a number"
                              + (f" or {' or '.join(map(repr, allowed[key]))}" if allowed[key] else ""))
    return {"name": name, "settings": dict(settings)}


def build_pruner(spec: Any) -> optuna.pruners.BasePruner:
    """The Optuna pruner that `spec` (pruner_spec's form, or a Hydra config) names, checked first."""
    checked = pruner_spec(spec)
    return getattr(optuna.pruners, checked["name"])(**checked["settings"])


def seed_attr(seed_index: int) -> str:
    """Trial user attr holding what seed `seed_index`'s job recorded."""
    return f"seed{seed_index}"


def job_env(storage: str, study: str, number: int, trial_id: int, seed_index: int, seeds: int,
            sweeper: Optional[str] = None) -> dict[str, str]:
    """The environment variable the sweeper sets for one job (read back by current_trial).

    `storage` is written into the job's .hydra files: pass it masked (secrets.mask_url).
    """
    return {ENV: json.dumps(dict(zip(FIELDS, (storage, study, number, trial_id, seed_index, seeds, sweeper))))}


_current: dict[str, "JobTrial"] = {}


def current_trial() -> Optional["JobTrial"]:
    """This job's trial, or None when the job is not part of a trpo_optuna sweep."""
    text = os.environ.get(ENV)
    if not text:
        return None
    if text not in _current:
        try:
            fields = json.loads(text)
            args = [fields[k] for k in FIELDS[:-1]] + [fields.get("sweeper")]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RuntimeError(f"{ENV}={text!r} is not what the trpo_optuna sweeper sets") from None
        _current.clear()
        _current[text] = JobTrial(*args)
    return _current[text]


class JobTrial:
    """One job's handle on its trial: `report` intermediate values (and be told to stop), `record` values."""

    def __init__(self, storage: str, study: str, number: int, trial_id: int, seed_index: int, seeds: int,
                 sweeper: Optional[str] = None):
        self.number, self.seed_index, self.seeds, self._id = number, seed_index, seeds, trial_id
        self.storage = open_storage(job_storage_url(storage))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study_obj = optuna.load_study(study_name=study, storage=self.storage,
                                      sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner())
        study_obj.pruner = build_pruner(study_obj.user_attrs.get(PRUNER_ATTR))
        self.multi_objective = len(study_obj.directions) > 1
        self.store = TrialStore(self.storage, study)
        self.trial = TrialStore.live_trial(study_obj, trial_id)
        if sweeper:
            watch_sweeper(sweeper)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.store.get(self._id).params)

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
                self.store.set_attr(tid, f"evals/{step}/seed{self.seed_index}", value)
                attrs = self.store.get(tid).user_attrs
                values = [attrs.get(f"evals/{step}/seed{j}") for j in range(k)]
                reported = all(v is not None for v in values) and self._report(sum(values) / k, step)
            if self.store.get(tid).user_attrs.get(PRUNE_REQUESTED):
                log.info("trial %s: another seed asked to prune; stopping", self.number)
                return True
            if reported and self.trial.should_prune():
                self.store.set_attr(tid, PRUNE_REQUESTED, True)
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
        self.store.set_attr(self._id, seed_attr(self.seed_index), dict(values))


_watching: set[str] = set()


def watch_sweeper(owner: str) -> None:
    """Stop this process soon after the sweeper `owner` (liveness.owner_id) ends; nothing when it is this
    process (the basic launcher) or on another host (there its heartbeat tells, liveness.py)."""
    try:
        host, pid, _ = owner.rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return
    if host != socket.gethostname() or pid_n == os.getpid() or owner in _watching:
        return
    _watching.add(owner)

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(WATCH_INTERVAL):
            if owner_dead(owner):
                break
        log.error("the sweeper %s is gone: stopping this job, whose result it would not tell", owner)
        os.kill(os.getpid(), signal.SIGTERM)
        stop.wait(STOP_GRACE)
        os._exit(143)  # SIGTERM did not end the job (a handler that carries on): end it

    threading.Thread(target=loop, daemon=True, name="sweeper-watch").start()
