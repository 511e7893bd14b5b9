"""The trpo_optuna sweeper: Optuna ask-and-tell over Hydra launchers, one job per (trial, seed).

It serves any Hydra app (`hydra/sweeper=trpo_optuna`, docs/sweeps.md): a trial's
value is the task function's return value (a number, or one per direction), or
named values the job records on its trial (`objectives`, trpo_lab's summary).
What is particular to an app is a setting: the config check run before any job
(`check_config`), the seed key of `seeds_per_trial` (`seed_key`) and the wandb
node that groups a study's runs (`wandb_node`). Jobs find their trial through
environment variables set with `hydra.job.env_set` (job.py), so the app's
config needs no key for it.

The loop keeps `n_jobs` slots busy: whenever a job ends (done, pruned or
failed) the next one starts, asking the study for a new trial when no seed of
an open trial is waiting. Hydra launchers take a batch and return when all of
it is done, so each job is its own single-job `launcher.launch` call, made from
a thread per running job (the basic launcher runs jobs in this process, so it
gets one slot and no threads).

Everything needed to resume lives in the study: trials and their states, the
job numbers each trial used (`job_seed<i>` user attrs), each seed's summary.
Rerunning the same command reopens the study, fails and re-queues the trials a
dead sweeper left running, and continues the job numbers.

Several sweepers may run one study at once (one per machine, say): each stamps
its trials with its owner id and a heartbeat (liveness.py), fails and re-queues
only stale trials, asks for a trial only under the study's budget lock while
finished + live running trials < n_trials (so the total is exact), and numbers
jobs from trial numbers (job = base + trial number * stride + seed), so output
folders never collide.
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import io
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from trpo_lab.sweeper.job import PRUNE_REQUESTED, PRUNER_ATTR, PrunerError, job_env, pruner_spec, seed_attr
from trpo_lab.sweeper.journal import JournalCorrupt
from trpo_lab.sweeper.liveness import HEARTBEAT, OWNER, BudgetLock, Heartbeat, owner_id, stale_reason
from trpo_lab.sweeper.results import counts_toward_budget, value_names, write_results
from trpo_lab.sweeper.search_space import SearchSpace, override_value, parse_search_space
from trpo_lab.sweeper.secrets import STORAGE_ENV, has_secret, mask_text, mask_url
from trpo_lab.sweeper.storage import StorageError, TrialStore, default_storage_url, open_storage

log = logging.getLogger(__name__)

FAIL_REASON = "fail_reason"
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"
JOB_ATTR = "job_seed{}"
JOB_BASE, JOB_STRIDE = "job_base", "job_stride"  # study user attrs: job number = base + number * stride + seed


class SeedStatus:
    """How one seed of a trial ended, as the sweeper records it (any Hydra app's job, not only trpo_lab's)."""

    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"
CARRIED = "carried_seeds"  # a retry's user attr: {seed: outcome} of the seeds its interrupted trial finished
ENQUEUED = "enqueued"  # a trial's user attr: it ran a point of hydra.sweeper.enqueue
FIXED_ATTR = "fixed_settings"  # study user attr: {key: value} of the plain overrides every job got
STUDY_MARK = ".trpo_optuna_study"  # in the sweep dir: the study whose results files the dir holds


class SweepError(RuntimeError):
    """A sweep that cannot start or must stop; the message says why and what to change."""


@dataclass
class _OpenTrial:
    trial: optuna.trial.Trial
    trial_id: int  # the storage's id of the trial (Optuna's public API has only the number)
    overrides: list[str]
    pending: deque = field(default_factory=deque)  # seed indices not started yet
    running: int = 0
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> outcome
    doomed: Optional[str] = None  # "pruned"/"failed" once a seed says so: skip the rest


class TrpoOptunaSweeperImpl:
    def __init__(self, *, study_name: Optional[str] = None, storage: Optional[str] = None, n_trials: int = 20,
                 n_jobs: Optional[int] = None, direction: Any = "minimize", objectives: Any = None,
                 sampler: Any = None, pruner: Any = None, params: Any = None, search_space: Any = None,
                 custom_search_space: Optional[str] = None, enqueue: Any = None, seeds_per_trial: int = 1,
                 seed_key: Optional[str] = None, check_config: Optional[str] = None,
                 wandb_node: Optional[str] = None, max_failure_rate: float = 0.0,
                 heartbeat_interval: float = 10.0, grace_period: float = 60.0) -> None:
        self.study_name = str(study_name) if study_name is not None else None
        self.storage_url = storage
        self.n_trials = int(n_trials)
        self.n_jobs = n_jobs
        self.directions = [_direction(d) for d in (
            direction if isinstance(direction, (list, tuple, ListConfig)) else [direction])]
        self.objectives = None if objectives is None else (
            [objectives] if isinstance(objectives, str) else [str(o) for o in objectives])
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.params = _plain(params)
        self.search_space = _plain(search_space)
        self.custom_search_space = custom_search_space
        self.enqueue = _plain(enqueue) or []
        self.seeds_per_trial = int(seeds_per_trial)
        self.seed_key = seed_key
        self.check_config = check_config
        self.wandb_node = wandb_node
        self.max_failure_rate = float(max_failure_rate)
        self.heartbeat_interval = float(heartbeat_interval)
        self.grace_period = float(grace_period)
        self.owner = owner_id()
        self.pruner: dict[str, Any] = {}  # pruner_spec of pruner, from _check_settings
        self.heartbeat: Optional[Heartbeat] = None
        self.budget_lock: Optional[BudgetLock] = None
        self.job_base, self.job_stride = 0, 1
        self._seen_trials = 0  # trials in the study after this sweeper's last ask
        self.store: Optional[TrialStore] = None  # the study's trials by storage id, from _open_study
        self.config: Optional[DictConfig] = None
        self.launcher = None
        self.hydra_context: Optional[HydraContext] = None
        self._extend: Optional[Any] = None  # the custom_search_space function
        self._last_failure: Optional[tuple[int, Any]] = None  # (trial number, the job's exception or message)

    @classmethod
    def settings(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    @classmethod
    def check_names(cls, given: Any) -> None:
        """SweepError naming the closest setting for each key of `given` that is not one."""
        known = cls.settings() + ["_target_", "_recursive_"]
        for key in given:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
                hint = f"did you mean {' or '.join('hydra.sweeper.' + c for c in close)}? " if close else ""
                raise SweepError(f"hydra.sweeper.{key} is not a setting of trpo_optuna; {hint}the settings are "
                                 f"{', '.join(cls.settings())}")

    # ---- Hydra's Sweeper interface -------------------------------------------------------
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[optuna.trial.FrozenTrial]:
        assert self.config is not None and self.launcher is not None
        if self.study_name is None:
            self.study_name = str(self.config.hydra.job.name)
        self._check_settings()
        if self.custom_search_space:
            try:
                self._extend = get_method(self.custom_search_space)
            except Exception as err:
                raise SweepError(f"hydra.sweeper.custom_search_space={self.custom_search_space}: "
                                 f"{' '.join(str(err).split())}") from None
        space = parse_search_space(self.params, arguments, search_space=self.search_space,
                                   allow_empty=self._extend is not None)
        parser = OverridesParser.create()
        base_args = [a for a in arguments if not parser.parse_overrides([a])[0].is_sweep_override()]
        base_args += [f"{k}={v}" for k, v in space.fixed.items()]
        self._check_composes(space, base_args)
        points = self._points_to_enqueue(space)

        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage_url = self.storage_url or default_storage_url(sweep_dir)
        self._keep_secret(storage_url)
        self._claim_dir(sweep_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = self._open_study(storage_url, arguments, base_args, space)
            self.budget_lock = BudgetLock(storage_url, self.study_name)
            with self.budget_lock():
                self._fail_stale(study)
                for point in points:  # once: a point some trial already has, in any state, is not queued again
                    study.enqueue_trial(point, user_attrs={ENQUEUED: True}, skip_if_exists=True)
            self.heartbeat = Heartbeat(TrialStore(open_storage(storage_url), self.study_name),
                                       self.heartbeat_interval).start()
        except (StorageError, JournalCorrupt) as err:
            raise SweepError(str(err)) from None
        try:
            return self._run(study, storage_url, space, base_args, sweep_dir)
        except (StorageError, JournalCorrupt) as err:
            raise SweepError(str(err)) from None
        finally:
            self.heartbeat.stop()

    def _keep_secret(self, url: str) -> None:
        """Keep the storage URL's password in this process: masked in the config every job composes
        (its .hydra files, multirun.yaml) and in sys.argv (wandb records it); the jobs' processes get
        the real URL in STORAGE_ENV (storage.job_storage_url)."""
        if not has_secret(url):
            return
        os.environ[STORAGE_ENV] = url
        masked = mask_url(url)
        hydra = self.config.hydra
        with open_dict(hydra), read_write(hydra):
            hydra.sweeper.storage = masked
            kept = [mask_text(o, url) for o in hydra.overrides.hydra
                    if not o.lstrip("+~").startswith("hydra.sweeper.storage=")]
            # As an override, so the masked URL also replaces one a config file gave.
            hydra.overrides.hydra = kept + [f"hydra.sweeper.storage={override_value(masked)}"]
            hydra.overrides.task = [mask_text(o, url) for o in hydra.overrides.task]
        sys.argv[:] = [mask_text(a, url) for a in sys.argv]

    # ---- checks before any job runs ------------------------------------------------------
    def _check_settings(self) -> None:
        if self.n_trials < 1:
            raise SweepError(f"hydra.sweeper.n_trials={self.n_trials} must be >= 1")
        if self.seeds_per_trial < 1:
            raise SweepError(f"hydra.sweeper.seeds_per_trial={self.seeds_per_trial} must be >= 1")
        if self.seeds_per_trial > 1 and not self.seed_key:
            raise SweepError(f"hydra.sweeper.seeds_per_trial={self.seeds_per_trial} needs hydra.sweeper.seed_key: "
                             "the job config's seed (for example seed_key=seed), set to base + 0, 1, ... per job")
        if not 0 < self.heartbeat_interval < self.grace_period:
            raise SweepError(f"hydra.sweeper.heartbeat_interval={self.heartbeat_interval:g} must be above 0 and "
                             f"below hydra.sweeper.grace_period={self.grace_period:g}")
        if not 0 <= self.max_failure_rate <= 1:
            raise SweepError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate} must be in [0, 1]")
        for d in self.directions:
            if d not in ("maximize", "minimize"):
                raise SweepError(f"hydra.sweeper.direction: {d!r} must be maximize or minimize")
        if self.objectives is not None and len(self.directions) != len(self.objectives):
            raise SweepError(f"hydra.sweeper.direction has {len(self.directions)} entries but "
                             f"hydra.sweeper.objectives has {len(self.objectives)}: give one direction per objective")
        try:
            self.pruner = pruner_spec(_plain(self.pruner_cfg))
        except PrunerError as err:
            raise SweepError(f"hydra.sweeper.pruner: {err}") from None
        if len(self.directions) > 1 and self.pruner["name"] != "NopPruner":
            log.info("a multi-objective study: Optuna cannot prune it, so no job is pruned")

    def _check_composes(self, space: SearchSpace, base_args: list[str]) -> None:
        """Compose one job's config at the space's bounds, so a typo fails before any job runs."""
        assert self.hydra_context is not None
        check = None
        if self.check_config:
            try:
                check = get_method(self.check_config)
            except Exception as err:
                raise SweepError(f"hydra.sweeper.check_config={self.check_config}: "
                                 f"{' '.join(str(err).split())}") from None
        for end in (0, -1):
            sample = [f"{k}={override_value(_bound(d, end))}" for k, d in space.distributions.items()]
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, base_args + sample)
            except Exception as err:
                raise SweepError(f"a trial's config does not compose: {_compose_message(err)}") from None
            if check is None:
                continue
            try:
                check(cfg)
            except ValueError as err:
                raise SweepError(f"the search space reaches an invalid config ({' '.join(sample)}): {err}") from None

    def _claim_dir(self, sweep_dir: Path) -> None:
        """One study per sweep dir: a second would overwrite the first one's trials.csv and results."""
        mark = sweep_dir / STUDY_MARK
        name = mark.read_text().strip() if mark.exists() else self.study_name
        if name != self.study_name:
            raise SweepError(f"{sweep_dir} holds the results of study {name!r}; study {self.study_name!r} would "
                             "overwrite its trials.csv: give it its own hydra.sweep.dir")
        mark.write_text(self.study_name + "\n")

    # ---- the study -----------------------------------------------------------------------
    def _open_study(self, storage_url: str, arguments: list[str], base_args: list[str],
                    space: SearchSpace) -> optuna.Study:
        shown = mask_url(storage_url)
        if storage_url.startswith("sqlite"):
            log.warning("SQLite storage is not safe for parallel jobs (Optuna FAQ); prefer the default journal file")
        storage = open_storage(storage_url)
        try:
            study = optuna.create_study(study_name=self.study_name, storage=storage,
                                        directions=self.directions, load_if_exists=True)
        except ValueError as err:
            raise SweepError(mask_text(f"cannot open study {self.study_name!r} in {shown}: {err}",
                                       storage_url)) from None
        self.store = TrialStore(storage, self.study_name)
        # A seeded sampler restarted on resume would propose the first run's points again:
        # offset its seed by the trials the study already holds (still repeatable).
        self._seen_trials = len(study.get_trials(deepcopy=False))
        study.sampler = self._sampler(space, seed_offset=self._seen_trials)
        if [d.name.lower() for d in study.directions] != self.directions:
            raise SweepError(f"study {self.study_name!r} in {shown} was created with directions "
                             f"{[d.name.lower() for d in study.directions]}, not {self.directions}; "
                             "pick another hydra.sweeper.study_name")
        self._check_fixed(study, shown, base_args)
        old_args = study.user_attrs.get("arguments")
        if old_args is not None and sorted(old_args) != sorted(arguments):
            log.warning("resuming study %r, started with other overrides (%s); now: %s",
                        self.study_name, " ".join(old_args), " ".join(arguments))
        study.set_user_attr("arguments", list(arguments))
        study.set_user_attr("objectives", value_names(self.objectives, len(self.directions)))
        study.set_user_attr("seeds_per_trial", self.seeds_per_trial)
        study.set_user_attr(PRUNER_ATTR, self.pruner)  # data, not a config to instantiate (job.py)
        self._job_numbering(study)
        log.info("study %r in %s: %d trials so far", self.study_name, shown, len(study.trials))
        return study

    def _points_to_enqueue(self, space: SearchSpace) -> list[dict[str, Any]]:
        """hydra.sweeper.enqueue checked against the search space: points (e.g. published settings, to
        warm-start the search) to run first. A point may name some of the parameters; the sampler
        proposes the rest."""
        if not isinstance(self.enqueue, list) or not all(isinstance(p, dict) for p in self.enqueue):
            raise SweepError("hydra.sweeper.enqueue must be a list of points, each {parameter: value}")
        points = []
        for i, point in enumerate(self.enqueue):
            for name, value in point.items():
                dist = space.distributions.get(name)
                if dist is None:
                    close = difflib.get_close_matches(name, list(space.distributions), n=1, cutoff=0.6)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    raise SweepError(f"hydra.sweeper.enqueue[{i}]: {name} is not a searched parameter{hint}; "
                                     f"the searched ones are {', '.join(space.distributions)}")
                if not _contains(dist, value):
                    raise SweepError(f"hydra.sweeper.enqueue[{i}]: {name}={value!r} is outside its search "
                                     f"space {dist}; widen the range with a sweep override on the command "
                                     f"line (e.g. '{name}=interval(low, high)'), or drop the point")
            points.append(point)
        return points

    def _check_fixed(self, study: optuna.Study, storage_url: str, base_args: list[str]) -> None:
        """Refuse to resume a study whose finished trials ran with other fixed settings: they would not compare."""
        now = dict(a.split("=", 1) for a in base_args if "=" in a)
        before = study.user_attrs.get(FIXED_ATTR)
        finished = any(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
        if before is not None and before != now and finished:
            diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            shown = ", ".join(f"{k}: {before.get(k, '(unset)')} then, {now.get(k, '(unset)')} now" for k in diff)
            raise SweepError(f"study {self.study_name!r} in {storage_url} ran its trials with other fixed settings "
                             f"({shown}); their values would not compare with this run's. Rerun with the same "
                             "settings to resume, or start a new study: another hydra.sweeper.study_name "
                             "(and hydra.sweep.dir)")
        study.set_user_attr(FIXED_ATTR, now)

    def _job_numbering(self, study: optuna.Study) -> None:
        """Job numbers from trial numbers, so sweepers running at once never share an output folder."""
        attrs = study.user_attrs
        if JOB_STRIDE not in attrs:
            trials = study.get_trials(deepcopy=False)
            used = [v for t in trials for k, v in t.user_attrs.items() if k.startswith("job_seed")]
            # A study numbered by an older sweeper: start above its highest job.
            base = max(0, max(used) + 1 - len(trials) * self.seeds_per_trial) if used else 0
            study.set_user_attr(JOB_BASE, base)
            study.set_user_attr(JOB_STRIDE, self.seeds_per_trial)
            attrs = study.user_attrs
        self.job_base, self.job_stride = int(attrs[JOB_BASE]), int(attrs[JOB_STRIDE])
        if self.seeds_per_trial > self.job_stride:
            raise SweepError(f"study {self.study_name!r} was started with hydra.sweeper.seeds_per_trial="
                             f"{self.job_stride}, which fixes its job numbering; keep it at most that, or pick "
                             "another hydra.sweeper.study_name")

    def _job_number(self, number: int, seed: int) -> int:
        return self.job_base + number * self.job_stride + seed

    def _reseedable(self) -> bool:
        """A seeded sampler whose seed is not part of a sequence (QMC's seed fixes its sequence)."""
        cfg = self.sampler_cfg or {"seed": 0}
        return cfg.get("seed") is not None and not str(cfg.get("_target_", "")).endswith("QMCSampler")

    def _sampler(self, space: SearchSpace, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
        cfg = self.sampler_cfg
        if cfg is None:
            cfg = {"_target_": "optuna.samplers.TPESampler", "seed": 0}
        cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        if cfg.get("seed") is not None:
            cfg["seed"] = int(cfg["seed"]) + seed_offset
        cfg.pop("_partial_", None)  # the plugin's grid preset is partial; the search space is filled in here
        if cfg.get("_target_", "").endswith("GridSampler") and not cfg.get("search_space"):
            cfg["search_space"] = _grid(space)
        try:
            return instantiate(cfg)
        except Exception as err:
            cause = err.__cause__ if isinstance(err.__cause__, ValueError) else err
            raise SweepError(f"hydra.sweeper.sampler: cannot build {cfg.get('_target_')}: "
                             f"{' '.join(str(cause).split())}") from None

    def _fail_stale(self, study: optuna.Study) -> int:
        """Fail and re-queue RUNNING trials whose sweeper is gone (liveness.py); the number of live ones left."""
        live = 0
        now = time.time()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            why = stale_reason(t, self.grace_period, self.owner, now)
            if why is None:
                live += 1
            else:
                _fail_interrupted(study, self.store, t.number, self.store.trial_id(t.number), t.params,
                                  f"stale: {why}", self._recorded_seeds(t))
        return live

    def _recorded_seeds(self, t: optuna.trial.FrozenTrial) -> dict[str, dict[str, Any]]:
        """{seed: outcome} of the seeds of a stale trial whose jobs finished and recorded their values
        (hydra.sweeper.objectives) before their sweeper died: its retry keeps them instead of re-running."""
        if self.objectives is None or t.user_attrs.get(PRUNE_REQUESTED):
            return {}  # a returned value dies with the sweeper that was told it
        out = {}
        for seed in range(self.seeds_per_trial):
            values, error = _recorded_values(t.user_attrs.get(seed_attr(seed)), self.objectives)
            job = t.user_attrs.get(JOB_ATTR.format(seed))
            if not error and job is not None and all(math.isfinite(v) for v in values):
                out[str(seed)] = {"status": SeedStatus.COMPLETED, "values": values, "job": job}
        return out

    def _release_own(self, study: optuna.Study, open_trials: dict[int, "_OpenTrial"], why: str) -> None:
        """Fail this sweeper's open trials as interrupted and re-queue them (other sweepers' are theirs)."""
        for ot in list(open_trials.values()):
            done = {str(k): v for k, v in ot.results.items() if v["status"] == SeedStatus.COMPLETED}
            _fail_interrupted(study, self.store, ot.trial.number, ot.trial_id, ot.trial.params, why, done)
            self.heartbeat.remove(ot.trial_id)

    def _ask(self, study: optuna.Study, space: SearchSpace, n_trials: int
             ) -> tuple[Optional[optuna.trial.Trial], Optional[int], int]:
        """A new trial if the study has room, under the budget lock: (trial or None, its storage id,
        others' live trials).

        Room: finished trials (interrupted ones excepted) + live RUNNING trials of every
        sweeper < n_trials. Holding the lock while counting and asking makes the total exact.
        """
        assert self.budget_lock is not None and self.heartbeat is not None
        with self.budget_lock(), _sigint_deferred():
            live = self._fail_stale(study)
            trials = study.get_trials(deepcopy=False)
            mine = self.heartbeat.ids()
            others = sum(t.state == TrialState.RUNNING and self.store.trial_id(t.number) not in mine for t in trials)
            used = sum(counts_toward_budget(t) for t in trials) + live
            if used >= n_trials:
                return None, None, others
            n = len(trials)
            if n != self._seen_trials and self._reseedable():
                # Another sweeper asked since our last ask: a seeded sampler would propose the
                # points that sweeper just got. Re-seed it from the study's size (still repeatable).
                study.sampler = self._sampler(space, seed_offset=n)
            trial = study.ask(space.distributions)
            self._seen_trials = n if trial.number < n else n + 1  # a re-queued trial adds none
            trial_id = self.store.trial_id(trial.number)
            self.store.set_attr(trial_id, OWNER, self.owner)
            self.store.set_attr(trial_id, HEARTBEAT, time.time())
            self.heartbeat.add(trial_id)
            return trial, trial_id, others

    # ---- the scheduling loop -------------------------------------------------------------
    def _slots(self) -> tuple[int, bool]:
        """(parallel jobs, whether to use threads): the basic launcher runs jobs here, one at a time."""
        basic = isinstance(self.launcher, _launcher_class("basic"))
        n = self.n_jobs
        if n is None:
            n = int(self.config.hydra.launcher.get("n_jobs", 1) or 1)
            if n < 0:
                n = os.cpu_count() or 1
        if basic and n > 1:
            log.warning("the basic launcher runs one job at a time; use hydra/launcher=joblib for n_jobs=%d", n)
        return (1, False) if basic else (max(1, int(n)), True)

    def _start_ray_once(self) -> None:
        """Initialise Ray here when Hydra's Ray launcher runs the jobs.

        That launcher calls ray.init in `launch` unless Ray is running; jobs launched
        from two threads at once both call it, and the second fails ("Perhaps you
        called ray.init twice by accident?"), failing its trial.
        """
        if not isinstance(self.launcher, _launcher_class("ray")) or getattr(self.launcher, "ray_cfg", None) is None:
            return
        import ray

        if not ray.is_initialized():
            init = OmegaConf.to_container(self.launcher.ray_cfg.init, resolve=True) or {}
            init.setdefault("object_store_memory", 78_643_200)  # the launcher's own default, for a local Ray
            ray.init(**init)

    def _run(self, study: optuna.Study, storage_url: str, space: SearchSpace, base_args: list[str],
             sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
        slots, threaded = self._slots()
        if threaded:
            self._start_ray_once()
        n_trials = self.n_trials
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            grid = math.prod(len(v) for v in _grid(space).values())
            if grid < n_trials:
                log.info("the grid has %d points: running %d trials, not n_trials=%d", grid, grid, n_trials)
                n_trials = grid
        trials = study.get_trials(deepcopy=False)
        finished = sum(counts_toward_budget(t) for t in trials)
        log.info("%d of %d trials finished; %d parallel jobs, %d seed(s) per trial; sweeper %s",
                 finished, n_trials, slots, self.seeds_per_trial, self.owner)
        poll = min(5.0, self.heartbeat_interval)

        done: queue.Queue = queue.Queue()
        open_trials: dict[int, _OpenTrial] = {}
        waiting: deque = deque()  # (trial number, seed index)
        running, stop_reason = 0, None
        base_seed = int(OmegaConf.select(self.config, self.seed_key, default=0) or 0) if self.seed_key else 0
        wandb = OmegaConf.select(self.config, self.wandb_node) if self.wandb_node else None
        tags = list(wandb.get("tags") or []) if isinstance(wandb, DictConfig) and "tags" in wandb else None
        try:
            while True:
                others = 0
                while running < slots and stop_reason is None:
                    if not waiting:
                        trial, trial_id, others = self._ask(study, space, n_trials)
                        if trial is None:
                            break
                        try:
                            if self._extend is not None:
                                self._extend(self.config, trial)
                        except Exception as err:  # the user's function: this trial fails, the sweep goes on
                            self._record_failure(trial.number, err)
                            self.store.set_attr(trial_id, FAIL_REASON, f"custom_search_space: {err}")
                            _tell_study(study, trial.number, state=TrialState.FAIL)
                            self.heartbeat.remove(trial_id)
                            stop_reason = stop_reason or self._too_many_failures(study, n_trials)
                            continue
                        overrides = [f"{k}={override_value(v)}" for k, v in trial.params.items()]
                        ot = _OpenTrial(trial, trial_id, overrides)
                        open_trials[trial.number] = ot
                        self._take_carried(ot)
                        waiting.extend((trial.number, i) for i in range(self.seeds_per_trial) if i not in ot.results)
                        if not any(n == trial.number for n, _ in waiting):  # every seed was carried over
                            self._tell(study, ot)
                            del open_trials[trial.number]
                            self.heartbeat.remove(trial_id)
                            continue
                    number, seed = waiting.popleft()
                    ot = open_trials.get(number)
                    if ot is None or ot.doomed:  # a sibling seed was pruned or failed: skip this one
                        continue
                    job_num = self._job_number(number, seed)
                    try:
                        self.store.set_attr(ot.trial_id, JOB_ATTR.format(seed), job_num)
                    except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale by another sweeper
                        log.warning("trial %d was finished elsewhere; not starting its seed %d", number, seed)
                        ot.doomed = SeedStatus.FAILED
                        if ot.running == 0:
                            del open_trials[number]
                            self.heartbeat.remove(ot.trial_id)
                        continue
                    job = base_args + ot.overrides + self._trial_overrides(
                        storage_url, ot, seed, base_seed, tags)
                    ot.running += 1
                    running += 1
                    log.info("trial %d seed %d -> job %d: %s", number, seed, job_num, " ".join(ot.overrides))
                    if threaded:
                        threading.Thread(target=self._launch, args=(number, seed, job, job_num, done),
                                         daemon=True, name=f"job{job_num}").start()
                    else:
                        self._launch(number, seed, job, job_num, done)
                if running == 0:
                    if stop_reason is not None or others == 0:
                        break
                    # The budget is held by other sweepers' running trials: wait until they end
                    # or go stale (then this sweeper re-runs them), so no trial is left behind.
                    log.info("waiting for %d trial(s) of other sweepers", others)
                    time.sleep(poll)
                    continue
                item = _get(done, timeout=poll)
                if item is None:
                    continue  # look again for room (other sweepers' trials may have ended or gone stale)
                number, seed, outcome = item
                running -= 1
                ot = open_trials[number]
                ot.running -= 1
                ot.results[seed] = self._seed_outcome(ot.trial_id, seed, outcome)
                if ot.results[seed]["status"] in (SeedStatus.PRUNED, SeedStatus.FAILED) and not ot.doomed:
                    ot.doomed = ot.results[seed]["status"]
                if ot.results[seed]["status"] == SeedStatus.FAILED:
                    self._record_failure(number, ot.results[seed].get("exception") or ot.results[seed]["error"])
                if ot.running == 0 and (ot.doomed or len(ot.results) == self.seeds_per_trial):
                    self._tell(study, ot)
                    del open_trials[number]
                    self.heartbeat.remove(ot.trial_id)
                    stop_reason = stop_reason or self._too_many_failures(study, n_trials)
        except KeyboardInterrupt:
            log.warning("interrupted: marking %d running trial(s) as interrupted; rerun the command to resume",
                        len(open_trials))
            self._release_own(study, open_trials, "interrupted (Ctrl-C)")
            write_results(study, sweep_dir, self.objectives)
            raise SystemExit(130) from None  # Ctrl-C's usual exit status, without a traceback
        self._release_own(study, open_trials, "the sweep stopped before all its seeds ran")
        write_results(study, sweep_dir, self.objectives)
        if stop_reason:
            self._print_last_failure()
            raise SweepError(f"sweep stopped: {stop_reason}; see {sweep_dir / 'trials.csv'}")
        return study.get_trials(deepcopy=False)

    def _too_many_failures(self, study: optuna.Study, n_trials: int) -> Optional[str]:
        """Why the sweep must stop: more than max_failure_rate x n_trials counted failures; else None."""
        failures = sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        if failures > self.max_failure_rate * n_trials:
            why = (f"{failures} of {n_trials} trials failed, above "
                   f"hydra.sweeper.max_failure_rate={self.max_failure_rate}")
            log.error("stopping the sweep: %s", why)
            return why
        return None

    def _record_failure(self, number: int, error: Any) -> None:
        self._last_failure = (number, error)

    def _print_last_failure(self) -> None:
        """The failing job's own error on stderr, traceback included where the launcher kept it."""
        if self._last_failure is None:
            return
        number, error = self._last_failure
        print(f"trpo_optuna: trial {number} failed with:", file=sys.stderr)
        if isinstance(error, BaseException):
            print("".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip(),
                  file=sys.stderr)
        else:
            print(error, file=sys.stderr)

    def _take_carried(self, ot: _OpenTrial) -> None:
        """A retry of an interrupted trial keeps the seeds that trial finished (and their job numbers)."""
        carried = ot.trial.user_attrs.get(CARRIED) or {}
        for seed, outcome in carried.items():
            ot.results[int(seed)] = outcome
            if outcome.get("job") is not None:
                self.store.set_attr(ot.trial_id, JOB_ATTR.format(seed), outcome["job"])
        if carried:
            log.info("trial %d keeps seed(s) %s of the trial it retries", ot.trial.number, sorted(carried))

    def _trial_overrides(self, storage_url: str, ot: _OpenTrial, seed: int, base_seed: int,
                         tags: Optional[list[str]]) -> list[str]:
        """What ties a job to its trial: environment variables for job.py, the seed, the wandb grouping."""
        trial = ot.trial
        env = job_env(mask_url(storage_url), self.study_name, trial.number, ot.trial_id, seed,
                      self.seeds_per_trial, self.owner)
        out = [f"++hydra.job.env_set.{k}={override_value(v)}" for k, v in env.items()]
        if self.seed_key:
            out.append(f"{self.seed_key}={base_seed + seed}")
        if tags is not None:
            out += [f"{self.wandb_node}.group={override_value(self.study_name)}",
                    f"{self.wandb_node}.tags=" + override_value(tags + [f"trial-{trial.number}", f"seed-{seed}"])]
        return out

    def _launch(self, number: int, seed: int, job: list[str], job_num: int, done: queue.Queue) -> None:
        try:
            (ret,) = self.launcher.launch([job], initial_job_idx=job_num)
            done.put((number, seed, ret))
        except BaseException as err:  # the launcher itself broke: this job failed, the sweep goes on
            if isinstance(err, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                raise  # Ctrl-C during an in-process (basic launcher) job: the sweep stops and resumes later
            done.put((number, seed, err))

    def _seed_outcome(self, trial_id: int, seed: int, outcome: Any) -> dict[str, Any]:
        """{"status": completed/pruned/failed, "values": [...], "error": ...} of one seed's job."""
        if isinstance(outcome, BaseException):
            first = str(outcome).strip().splitlines()[0] if str(outcome).strip() else ""
            return {"status": SeedStatus.FAILED, "launcher": True,
                    "error": f"launcher error: {type(outcome).__name__}: {first}"}
        assert isinstance(outcome, JobReturn)
        attrs = self.store.get(trial_id).user_attrs
        if outcome.status != JobStatus.COMPLETED:
            err = _job_error(outcome)
            if isinstance(err, optuna.TrialPruned):  # the job stopped itself the Optuna way
                return {"status": SeedStatus.PRUNED}
            return {"status": SeedStatus.FAILED, "error": f"{type(err).__name__}: {err}", "exception": err}
        if attrs.get(PRUNE_REQUESTED):  # the job was told to stop (job.py) and returned
            return {"status": SeedStatus.PRUNED}
        if self.objectives is None:
            values, error = _returned_values(outcome.return_value, len(self.directions))
        else:
            values, error = _recorded_values(attrs.get(seed_attr(seed)), self.objectives)
        if error:
            return {"status": SeedStatus.FAILED, "error": error}
        bad = [n for n, v in zip(value_names(self.objectives, len(values)), values) if not math.isfinite(v)]
        if bad:
            return {"status": SeedStatus.FAILED, "error": f"seed {seed}: {', '.join(bad)} is not finite ({values})"}
        return {"status": SeedStatus.COMPLETED, "values": values, "job": self._job_number(self.store.get(
            trial_id).number, seed)}

    def _tell(self, study: optuna.Study, ot: _OpenTrial) -> Optional[TrialState]:
        try:
            return self._tell_outcome(study, ot)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            if not self.store.get(ot.trial_id).state.is_finished():
                raise
            log.warning("trial %d was already finished elsewhere (failed as stale?); its runs' outputs stay "
                        "in their folders", ot.trial.number)
            return None

    def _tell_outcome(self, study: optuna.Study, ot: _OpenTrial) -> TrialState:
        tid, number = ot.trial_id, ot.trial.number
        results = [ot.results[s] for s in sorted(ot.results)]
        errors = [r["error"] for r in results if r["status"] == SeedStatus.FAILED]
        if errors and all(r.get("launcher") for r in results if r["status"] == SeedStatus.FAILED) \
                and ot.trial.user_attrs.get(RETRY_OF) is None:
            # The launcher lost the job (a killed worker or node; joblib then loses every job of
            # its pool): not the trial's fault, so it is re-run once, like an interrupted one.
            _fail_interrupted(study, self.store, number, tid, ot.trial.params, "; ".join(errors))
            return TrialState.FAIL
        if errors:
            self.store.set_attr(tid, FAIL_REASON, "; ".join(errors))
            _tell_study(study, number, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", number, "; ".join(errors))
            return TrialState.FAIL
        if any(r["status"] == SeedStatus.PRUNED for r in results):
            _tell_study(study, number, state=TrialState.PRUNED)
            log.info("trial %d pruned", number)
            return TrialState.PRUNED
        per_seed = [r["values"] for r in results]
        means = [sum(v[j] for v in per_seed) / len(per_seed) for j in range(len(self.directions))]
        names = value_names(self.objectives, len(self.directions))
        self.store.set_attr(tid, "seed_values", {o: [v[j] for v in per_seed]
                                                             for j, o in enumerate(names)})
        _tell_study(study, number, means)
        log.info("trial %d: %s", number, ", ".join(f"{o}={m:.4g}" for o, m in zip(names, means)))
        return TrialState.COMPLETE


def _job_error(ret: JobReturn) -> BaseException:
    """The exception a failed job raised: JobReturn.return_value re-raises it (public API), after
    writing "Error executing job with overrides" to stderr, which the sweeper reports its own way."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            value = ret.return_value
    except BaseException as err:
        return err
    return RuntimeError(f"the job ended {ret.status.name} and returned {value!r}")


def _tell_study(study: optuna.Study, number: int, values: Optional[Sequence[float]] = None,
                state: Optional[TrialState] = None) -> None:
    """study.tell, tolerating GridSampler's `study.stop()` once its grid is used up.

    Optuna stores the trial's state before that call raises (outside `optimize`
    it may not be called): a RuntimeError after which the trial is finished is
    that one; the sweeper stops by itself when n_trials is reached.
    """
    try:
        study.tell(number, values, state=state)
    except RuntimeError:
        if not study.get_trials(deepcopy=False)[number].state.is_finished():
            raise


def _get(done: queue.Queue, timeout: float) -> Any:
    """A finished job, or None after `timeout` s; waits in short slices, so Ctrl-C reaches this thread promptly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return done.get(timeout=0.5)
        except queue.Empty:
            continue
    return None


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while a trial is asked and stamped, so no trial is left without an owner."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt


def _fail_interrupted(study: optuna.Study, store: TrialStore, number: int, trial_id: int,
                      params: dict, why: str, carried: Optional[dict[str, Any]] = None) -> None:
    if store.get(trial_id).state != TrialState.RUNNING:
        return  # told just before the interruption: it stands as it is
    try:
        store.set_attr(trial_id, INTERRUPTED, True)
        store.set_attr(trial_id, FAIL_REASON, why)
        _tell_study(study, number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
        return  # finished meanwhile: nothing to re-queue
    attrs: dict[str, Any] = {RETRY_OF: number}
    if carried:  # seeds that finished: the retry keeps them, and their evaluations for the pruner
        attrs[CARRIED] = {k: {n: v for n, v in o.items() if n != "exception"} for k, o in carried.items()}
        old = store.get(trial_id).user_attrs
        attrs.update({k: v for k, v in old.items()
                      if any(k == seed_attr(int(s)) or k.endswith(f"/seed{s}") for s in carried)})
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    log.warning("trial %d: %s; re-queued with the same parameters%s", number, why,
                f", keeping finished seed(s) {sorted(int(s) for s in carried)}" if carried else "")


def _launcher_class(which: str) -> tuple[type, ...]:
    """Hydra's basic launcher or the Ray launcher plugin's class, for isinstance; () when not installed.

    Hydra exports BasicLauncher only from hydra._internal (no public path); the
    Ray launcher is an optional plugin.
    """
    try:
        if which == "basic":
            from hydra._internal.core_plugins.basic_launcher import BasicLauncher
            return (BasicLauncher,)
        from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
        return (RayLauncher,)
    except ImportError:
        return ()


def _contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def _bound(dist: optuna.distributions.BaseDistribution, end: int) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return dist.choices[end]
    return dist.low if end == 0 else dist.high


def _grid(space: SearchSpace) -> dict[str, list[Any]]:
    """GridSampler's search space: choice values, and range values below the stop (as Hydra's plugin)."""
    missing = [k for k in space.distributions if k not in space.grid]
    if missing:
        raise SweepError(f"the grid sampler needs choice(...) or range(...) for {', '.join(missing)}, "
                         "not an interval")
    return {k: list(space.grid[k]) for k in space.distributions}


def _direction(d: Any) -> str:
    """'minimize', 'maximize', or the plugin's Direction enum (Direction.minimize)."""
    return str(getattr(d, "name", d)).rsplit(".", 1)[-1].lower()


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def _returned_values(ret: Any, n: int) -> tuple[list[float], Optional[str]]:
    """The task function's return value as the trial's values: a number, or a sequence of n numbers."""
    if n == 1:
        try:
            return [float(ret)], None
        except (TypeError, ValueError):
            return [], (f"the task function returned {ret!r}: a single-objective study needs a number "
                        "(or set hydra.sweeper.objectives to values the job records)")
    try:
        values = [float(v) for v in ret]
    except (TypeError, ValueError):
        return [], f"the task function returned {ret!r}: {n} directions need a sequence of {n} numbers"
    if len(values) != n:
        return [], f"the task function returned {len(values)} values for {n} directions"
    return values, None


def _recorded_values(record: Optional[dict], names: Sequence[str]) -> tuple[list[float], Optional[str]]:
    """hydra.sweeper.objectives read from what the job recorded on its trial (job.py's record)."""
    if record is None:
        return [], (f"the job recorded no values on its trial, and hydra.sweeper.objectives={list(names)} "
                    "reads them from there (current_trial().record({...})); set objectives=null to use the "
                    "task function's return value")
    missing = [o for o in names if o not in record]
    if missing:
        return [], f"the job recorded {sorted(record)}, not {', '.join(missing)} (hydra.sweeper.objectives)"
    try:
        return [float(record[o]) for o in names], None
    except (TypeError, ValueError):
        return [], f"the job recorded non-numbers for hydra.sweeper.objectives: {[record[o] for o in names]}"


def _compose_message(err: BaseException) -> str:
    """Hydra's composition error, except that a key the config lacks names the closest ones.

    Hydra advises `+key=...` for it, which adds the typo instead of fixing it. In an
    untyped node (plain YAML) a new key may be meant: the + stays as a second choice.
    """
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = err.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and isinstance(cause.parent_node, DictConfig) \
            and cause.full_key:
        full_key = str(cause.full_key)
        prefix, _, key = full_key.rpartition(".")
        known = [str(k) for k in cause.parent_node.keys() if prefix or k != "hydra"]
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        free_form = OmegaConf.get_type(cause.parent_node) is dict
        if close or not free_form:
            hint = f"did you mean {' or '.join((prefix + '.' if prefix else '') + c for c in close)}? " if close else ""
            where = f"in {prefix}" if prefix else "at the top level"
            new = f" (a new key is added with a leading +: +{full_key}=...)" if free_form else ""
            return f"{full_key} is not a setting; {hint}the settings {where} are {', '.join(known)}{new}"
    return " ".join(str(err).split())


def motpe_removed(*args: Any, **kwargs: Any) -> None:
    """hydra/sweeper/sampler=motpe: the plugin's preset, for a sampler Optuna no longer has."""
    raise ValueError("the motpe sampler was removed in Optuna 4.0; choose hydra/sweeper/sampler=tpe, "
                     "whose TPESampler handles several objectives since then")
