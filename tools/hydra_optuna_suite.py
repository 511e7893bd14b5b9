"""Run Hydra's Optuna plugin's own test suite against trpo_optuna (docs/sweeps.md, "coming from hydra-optuna-sweeper").

    git clone --depth 1 -b 1.3_branch https://github.com/facebookresearch/hydra /tmp/hydra
    python tools/hydra_optuna_suite.py /tmp/hydra/plugins/hydra_optuna_sweeper

The plugin's source distribution on PyPI (hydra-optuna-sweeper 1.2.0) holds
neither its tests nor its example apps, so the suite comes from the repository's
1.3 branch (the one for hydra-core 1.3). The plugin itself is not installed: its
tests and examples are copied to a temporary directory, where

- the sweeper's name changes: `hydra/sweeper: optuna` -> `trpo_optuna` in the
  example and test configs, `hydra/sweeper=optuna` -> `trpo_optuna` in the tests;
- the suite's imports of the plugin's own modules (`_impl`, `config`,
  `optuna_sweeper`) resolve to a small conftest.py that maps each name the
  tests use onto trpo_optuna's public equivalent;
- the distribution classes Optuna deprecated in 3.0 (IntUniformDistribution,
  ...), which the tests expect, stand for the classes that replaced them
  (IntDistribution, FloatDistribution), which trpo_optuna builds.

Extra arguments go to pytest (for example `-k grid`). Exit status: pytest's.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ADAPTER = '''
"""Written by trpo_lab's tools/hydra_optuna_suite.py: the plugin's module names, mapped onto trpo_optuna."""
import enum
import sys
import types

import optuna.distributions as D
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.trpo_optuna_sweeper.trpo_optuna_sweeper import TrpoOptunaSweeper
from trpo_lab.sweeper import search_space as S

# The classes Optuna 3 deprecated, as the ones that replaced them.
D.IntUniformDistribution = lambda low, high, step=1: D.IntDistribution(low, high, step=step)
D.IntLogUniformDistribution = lambda low, high: D.IntDistribution(low, high, log=True)
D.UniformDistribution = lambda low, high: D.FloatDistribution(low, high)
D.LogUniformDistribution = lambda low, high: D.FloatDistribution(low, high, log=True)
D.DiscreteUniformDistribution = lambda low, high, q: D.FloatDistribution(low, high, step=q)


def from_config(config):
    return S.distribution_from_config("key", config)


def from_override(override):
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    return S.parse_search_space({}, [override.input_line]).distributions[override.get_key_element()]


def params_from_overrides(arguments):
    space = S.parse_search_space(dict(a.split("=", 1) for a in arguments), allow_empty=True)
    return space.distributions, space.fixed


class SpaceOnly:
    """The part of the plugin's sweeper class the suite calls: reading params and search_space."""

    def __init__(self, sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
                 search_space, custom_search_space, params):
        self.params, self.search_space = params, search_space

    def _process_searchspace_config(self):
        S.parse_search_space(self.params, (), search_space=self.search_space, allow_empty=True)


def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


base = "hydra_plugins.hydra_optuna_sweeper"
impl = module(base + "._impl", create_optuna_distribution_from_config=from_config,
              create_optuna_distribution_from_override=from_override,
              create_params_from_overrides=params_from_overrides, OptunaSweeperImpl=SpaceOnly)
config = module(base + ".config", Direction=enum.Enum("Direction", "minimize maximize"))
shell = module(base + ".optuna_sweeper", OptunaSweeper=TrpoOptunaSweeper)
module(base, __path__=[], _impl=impl, config=config, optuna_sweeper=shell)
'''


def rename(path: Path, pattern: str, replacement: str) -> int:
    text = path.read_text()
    new, n = re.subn(pattern, replacement, text)
    path.write_text(new)
    return n


def main(argv: list[str]) -> int:
    if not argv or not (Path(argv[0]) / "tests" / "test_optuna_sweeper_plugin.py").exists():
        print(__doc__, file=sys.stderr)
        return 2
    plugin, pytest_args = Path(argv[0]), argv[1:]
    root = Path(tempfile.mkdtemp(prefix="trpo_optuna_upstream_"))
    shutil.copytree(plugin / "example", root / "example")
    shutil.copytree(plugin / "tests", root / "tests")
    (root / "setup.py").write_text("")  # hydra.test_utils' chdir_plugin_root looks for it
    renamed = sum(rename(p, r"hydra/sweeper: optuna\b", "hydra/sweeper: trpo_optuna") for p in root.rglob("*.yaml"))
    renamed += sum(rename(p, r"hydra/sweeper=optuna\b", "hydra/sweeper=trpo_optuna") for p in root.rglob("*.py"))
    (root / "tests" / "conftest.py").write_text(ADAPTER)
    print(f"suite copied to {root}; sweeper name changed in {renamed} places", flush=True)
    cmd = [sys.executable, "-m", "pytest", "tests", "-p", "no:cacheprovider", "-q", "-rfE", *pytest_args]
    return subprocess.run(cmd, cwd=root, env=dict(os.environ)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
