"""Tier 2: each default is written once, in trpo_lab/config.py's dataclasses.

The YAML options of the groups that mirror a dataclass (and the experiment
presets) hold only what they change; the default options compose to the
dataclass defaults exactly. Sweep files are left out: a sweep pins the settings
its study relies on, so that a later change of a default does not change the
trials of a study being resumed.
"""
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from trpo_lab.config import Config, flat_config, register_configs

CONF = Path(__file__).resolve().parents[1] / "trpo_lab" / "conf"
MIRRORED = ("env", "network", "trpo", "trainer", "logger")


def _defaults() -> dict:
    return flat_config(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False))


def _compose(*overrides: str):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def _written(path: Path) -> dict:
    """The dotted keys that a group option or preset file sets (its defaults list aside)."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    data.pop("defaults", None)
    prefix = "" if "@package _global_" in text else path.parent.name + "."
    return {prefix + k: v for k, v in flat_config(data).items()}


def _files():
    return [p for g in (*MIRRORED, "experiment") for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize("path", _files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_yaml_option_does_not_restate_a_dataclass_default(path):
    defaults = _defaults()
    restated = {k: v for k, v in _written(path).items() if k in defaults and defaults[k] == v}
    assert not restated, (f"{path.relative_to(CONF)} restates the defaults {restated}, which trpo_lab/config.py "
                          "already holds: delete them from the YAML")


def test_the_default_options_compose_to_the_dataclass_defaults():
    composed = flat_config(OmegaConf.to_container(_compose(), resolve=False))
    composed.pop("hydra", None)
    defaults = _defaults()
    assert defaults.pop("env.id") == "???" and composed.pop("env.id") == "Walker2d-v5"
    assert composed == defaults
