"""Puts the sweeper's config group on every Hydra app's search path.

With trpo_lab installed, any app can select `hydra/sweeper=trpo_optuna` (and
`hydra/sweeper/sampler=...`, `hydra/sweeper/pruner=...`) without adding a
search path of its own: Hydra discovers this plugin under hydra_plugins and
appends the package's `conf/` after the app's own config directory, so an app
may still shadow any of these files (trpo_lab does, for its defaults).
"""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class TrpoOptunaSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="trpo_optuna_sweeper", path="pkg://hydra_plugins.trpo_optuna_sweeper.conf")
