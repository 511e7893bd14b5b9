"""The `trpo_optuna` sweeper as Hydra sees it: a thin shell over trpo_lab.sweeper.core.

Hydra imports every module under hydra_plugins at start-up, even for single
runs, so this one imports Optuna only when a sweep is actually built.
"""
import sys
from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class TrpoOptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from trpo_lab.sweeper.core import TrpoOptunaSweeperImpl

        self._impl = TrpoOptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from trpo_lab.sweeper.core import SweepError
        from trpo_lab.sweeper.search_space import SearchSpaceError

        try:
            return self._impl.sweep(arguments)
        except (SweepError, SearchSpaceError) as err:  # the user's to fix: one line, no traceback
            print(f"trpo_optuna: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
