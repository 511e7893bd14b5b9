"""The trpo_optuna sweeper, for any Hydra app (`hydra/sweeper=trpo_optuna`; usage in docs/sweeps.md).

    search_space.py  hydra.sweeper.params grammar -> Optuna distributions
    core.py          the sweeper: study, scheduling loop, telling results
    job.py           the job's side, a public API: report values, be pruned, record values;
                     the pruner built from data (PRUNERS), the watch on the sweeper
    liveness.py      who owns a running trial, whether it is alive, the budget lock
    storage.py       journal file or RDB URL, opened alike by sweeper and jobs; every call into
                     Optuna's storage layer (TrialStore)
    journal.py       the journal file: its lock, a torn last line cut, a garbled line named and repaired
    secrets.py       a storage URL's password masked wherever it is shown or written
    __main__.py      python -m trpo_lab.sweeper repair JOURNAL
    results.py       best_params.yaml, best_overrides.txt, pareto_front.yaml, trials.csv

Hydra instantiates it through hydra_plugins/trpo_optuna_sweeper (plugins must
live in that namespace), whose search_path.py puts the config group
(hydra_plugins/trpo_optuna_sweeper/conf/) on every app's search path.
"""
