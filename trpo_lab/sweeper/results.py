"""What a sweep leaves in its directory: the best parameters, a table of trials, the Pareto front.

    optimization_results.yaml  as Hydra's Optuna plugin writes it: name, best_params and best_value,
                         or the Pareto `solutions` (params, values) of a multi-objective study
    best_params.yaml     best trial: number, values, params, and `overrides` to pass back
    best_overrides.txt   the same overrides on one line: python -m trpo_lab $(cat best_overrides.txt)
    pareto_front.yaml    multi-objective studies: every Pareto-optimal trial
    trials.csv           one row per trial: number, state, values, params, jobs, failure reason

Written at the end of a sweep and again on resume; also from the command line:

    python -m trpo_lab.sweeper.results <storage URL> <study name> <output dir>
"""
from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from trpo_lab.sweeper.search_space import override_value

log = logging.getLogger(__name__)


def value_names(objectives: Optional[Sequence[str]], n: int) -> list[str]:
    """Names of a trial's values: the objectives, or `value` (`value0`, `value1`, ...) for return values."""
    if objectives is not None:
        return list(objectives)
    return ["value"] if n == 1 else [f"value{i}" for i in range(n)]


def counts_toward_budget(t: FrozenTrial) -> bool:
    """Finished trials count toward n_trials; ones failed by an interruption were re-queued instead."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and not t.user_attrs.get("interrupted", False)


def overrides_of(t: FrozenTrial) -> list[str]:
    return [f"{k}={override_value(v)}" for k, v in t.params.items()]


def _entry(t: FrozenTrial, objectives: Sequence[str]) -> dict[str, Any]:
    return {
        "trial": t.number,
        "values": dict(zip(objectives, t.values)),
        "seed_values": t.user_attrs.get("seed_values"),
        "params": dict(t.params),
        "overrides": overrides_of(t),
    }


def write_results(study: optuna.Study, out_dir: Path, objectives: Optional[Sequence[str]]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    objectives = value_names(objectives, len(study.directions))
    trials = study.get_trials(deepcopy=False)
    _write_table(trials, out_dir / "trials.csv", objectives)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        log.warning("study %r has no completed trial yet; see %s", study.study_name, out_dir / "trials.csv")
        return
    _write_optimization_results(study, out_dir / "optimization_results.yaml")
    if len(study.directions) == 1:
        best = study.best_trial
        doc = {"study": study.study_name, **_entry(best, objectives)}
        (out_dir / "best_params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        (out_dir / "best_overrides.txt").write_text(" ".join(overrides_of(best)) + "\n")
        log.info("best trial %d: %s; overrides: %s", best.number,
                 ", ".join(f"{o}={v:.4g}" for o, v in zip(objectives, best.values)), " ".join(overrides_of(best)))
    else:
        front = [_entry(t, objectives) for t in study.best_trials]
        doc = {"study": study.study_name, "directions": [d.name.lower() for d in study.directions],
               "pareto_front": front}
        (out_dir / "pareto_front.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        log.info("Pareto front: trials %s", [e["trial"] for e in front])
    log.info("sweep results in %s", out_dir)


def _write_optimization_results(study: optuna.Study, path: Path) -> None:
    """The file Hydra's Optuna plugin leaves, same keys, so scripts that read it keep working."""
    if len(study.directions) == 1:
        best = study.best_trial
        doc = {"name": "optuna", "best_params": dict(best.params), "best_value": best.value}
    else:
        doc = {"name": "optuna", "solutions": [{"params": dict(t.params), "values": list(t.values)}
                                               for t in study.best_trials]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _write_table(trials: Sequence[FrozenTrial], path: Path, objectives: Sequence[str]) -> None:
    param_names = sorted({k for t in trials for k in t.params})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", *objectives, *param_names, "duration_s", "jobs", "reason"])
        for t in trials:
            values = list(t.values) if t.values is not None else [""] * len(objectives)
            duration = t.duration.total_seconds() if t.duration is not None else ""
            jobs = " ".join(str(v) for k, v in sorted(t.user_attrs.items()) if k.startswith("job_seed"))
            reason = t.user_attrs.get("fail_reason", "")
            if t.user_attrs.get("retry_of") is not None:
                reason = (reason + f" (retry of trial {t.user_attrs['retry_of']})").strip()
            w.writerow([t.number, t.state.name, *values, *[t.params.get(p, "") for p in param_names],
                        duration, jobs, reason])


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    from trpo_lab.sweeper.storage import open_storage

    url, name, out = argv
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    objectives = study.user_attrs.get("objectives")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_results(study, Path(out), objectives)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
