"""The `trpo_optuna` sweeper as Hydra sees it: a thin shell over trpo_lab.sweeper.core.

Hydra imports every module under hydra_plugins at start-up, even for single
runs, so this one imports Optuna only when a sweep is actually built. Its
config group comes from search_path.py, for any Hydra app.
"""
import sys
from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


def _fail(err: Exception) -> None:
    """The user's to fix: one line on stderr, no traceback."""
    print(f"trpo_optuna: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


class TrpoOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from trpo_lab.sweeper.core import SweepError, TrpoOptunaSweeperImpl

        try:  # a misspelt setting (n_trails) names the closest one instead of a TypeError
            TrpoOptunaSweeperImpl.check_names(settings)
            self._impl = TrpoOptunaSweeperImpl(**settings)
        except (SweepError, ValueError, TypeError) as err:
            _fail(err)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from trpo_lab.sweeper.core import SweepError
        from trpo_lab.sweeper.search_space import SearchSpaceError

        try:
            return self._impl.sweep(arguments)
        except (SweepError, SearchSpaceError) as err:
            _fail(err)
