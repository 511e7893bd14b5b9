"""The sweeper's search-space grammar, and the errors a bad space gives before any job runs."""
from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from conftest import REPO, run_cli
from trpo_lab.sweeper.search_space import SearchSpaceError, override_value, parse_search_space


def test_each_form_maps_to_its_distribution():
    space = parse_search_space({
        "a": "interval(0.1, 1)",
        "b": "int(interval(1, 10))",
        "c": "tag(log, interval(1e-4, 1e-1))",
        "d": "range(16, 64, 16)",
        "e": "choice(tanh, relu)",
        "f": "range(0.1, 0.5, 0.1)",
        "g": 0.99,
        "h": "mlp64",
    })
    d = space.distributions
    assert d["a"] == FloatDistribution(0.1, 1.0)
    assert d["b"] == IntDistribution(1, 10)
    assert d["c"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["d"] == IntDistribution(16, 64, step=16)  # Hydra's Optuna plugin: the stop value is searched
    assert d["e"] == CategoricalDistribution(("tanh", "relu"))
    assert isinstance(d["f"], FloatDistribution) and d["f"].low == 0.1 and d["f"].high == pytest.approx(0.5)
    assert space.fixed == {"g": "0.99", "h": "mlp64"}


def test_command_line_sweeps_join_and_win():
    space = parse_search_space({"a": "interval(0, 1)"}, ["a=choice(1,2)", "b=range(1,4)", "c=5"])
    assert space.distributions["a"] == CategoricalDistribution((1, 2))
    assert space.distributions["b"] == IntDistribution(1, 4)
    assert "c" not in space.distributions and "c" not in space.fixed  # plain overrides reach jobs as they are
    pinned = parse_search_space({"a": "interval(0, 1)", "b": "interval(0, 1)", "d": 3}, ["a=0.5", "d=4"])
    assert set(pinned.distributions) == {"b"} and pinned.fixed == {}  # a=0.5, d=4 reach jobs as written


@pytest.mark.parametrize("line, expected", [
    ("k=range(1,3)", IntDistribution(1, 3)),                       # the plugin's meaning, not Hydra's 1, 2
    ("k=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
    ("k=range(0, 10, 3)", IntDistribution(0, 9, step=3)),            # the last step at or below the stop
    ("k=shuffle(range(1,4))", CategoricalDistribution((1, 2, 3))),   # Hydra's values, in order
    ("k=shuffle(choice(a,b))", CategoricalDistribution(("a", "b"))),
    ("k=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("k=interval(1, 5)", FloatDistribution(1, 5)),
])
def test_range_and_shuffle_mean_what_they_mean_in_hydras_optuna_plugin(line, expected):
    assert parse_search_space({}, [line]).distributions["k"] == expected


def test_the_grid_takes_hydras_range_values_below_the_stop():
    space = parse_search_space({"x": "choice(-1, 1)", "y": "range(-1.0, 1.0, step=1)", "z": "interval(0, 1)"})
    assert space.grid == {"x": [-1, 1], "y": [-1.0, 0.0]}  # an interval has no grid


def test_the_plugins_deprecated_search_space_form_still_reads():
    with pytest.warns(UserWarning, match="deprecated"):
        space = parse_search_space(None, search_space={"x": {"type": "float", "low": -5.5, "high": 5.5, "step": 0.5},
                                                       "n": {"type": "int", "low": 1, "high": 100, "log": True},
                                                       "c": {"type": "categorical", "choices": [1, 2]}})
    assert space.distributions == {"x": FloatDistribution(-5.5, 5.5, step=0.5),
                                   "n": IntDistribution(1, 100, log=True), "c": CategoricalDistribution((1, 2))}
    with pytest.warns(UserWarning, match="Both"):
        both = parse_search_space({"x": "choice(1, 2)"}, search_space={"x": {"type": "float", "low": 0, "high": 1}})
    assert both.distributions["x"] == CategoricalDistribution((1, 2))  # params wins


@pytest.mark.parametrize("params, words", [
    ({}, "search space is empty"),
    ({"x": 1}, "search space is empty"),
    ({"trpo.delta": "interval(0.1"}, "trpo.delta: cannot parse"),
    ({"trpo.delta": "tag(log, interval(0, 1))"}, "lower bound > 0"),
    ({"trpo.delta": "interval(2, 1)"}, "must be below"),
    ({"trpo.cg_iters": "range(5, 5)"}, "is empty"),
    ({"trpo.cg_iters": "tag(log, range(1, 9, 2))"}, "step other than 1"),
])
def test_bad_spaces_name_the_key(params, words):
    with pytest.raises(SearchSpaceError, match=words):
        parse_search_space(params)


@pytest.mark.parametrize("value", [0.0123, 7, True, None, "mlp64", "1e-3", "it's", "a b", "CartPole-v1",
                                   ["trial-3", "my tag", "x,y"]])
def test_override_values_parse_back_unchanged(value):
    (override,) = OverridesParser.create().parse_overrides([f"k={override_value(value)}"])
    assert override.value() == value


def test_empty_space_fails_before_any_job(tmp_path, fast_overrides):
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *fast_overrides, f"hydra.sweep.dir={tmp_path / 's'}",
                cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "search space is empty" in r.stderr
    assert not any((tmp_path / "s").glob("*/summary.json"))


def test_typo_in_space_fails_before_any_job(tmp_path, fast_overrides):
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *fast_overrides, "trpo.deltaa=interval(0.001,0.05)",
                f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "deltaa" in r.stderr and "does not compose" in r.stderr
    assert not any((tmp_path / "s").glob("*/summary.json"))


def test_space_reaching_invalid_values_fails_before_any_job(tmp_path, fast_overrides):
    r = run_cli("-m", "hydra/sweeper=trpo_optuna", *fast_overrides, "trpo.gae_lambda=interval(0.9,1.5)",
                f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "trpo.gae_lambda" in r.stderr and "invalid config" in r.stderr
    assert not any((tmp_path / "s").glob("*/summary.json"))


@pytest.mark.parametrize("name", ["trust_region", "value_batch", "multi_objective"])
def test_every_sweep_file_composes_and_parses(name):
    from hydra import compose, initialize_config_dir

    from conftest import REPO
    from trpo_lab.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "trpo_lab" / "conf"), version_base=None):
        cfg = compose("config", overrides=[f"sweep={name}", "env=hopper"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("TrpoOptunaSweeper")
    assert sweeper.study_name == f"{name}-Hopper-v5"
    assert str(cfg.hydra.sweep.dir).endswith(sweeper.study_name)  # stable, so a rerun resumes
    space = parse_search_space(sweeper.params)
    assert len(space.distributions) >= 3
    directions = [sweeper.direction] if isinstance(sweeper.direction, str) else list(sweeper.direction)
    assert len(directions) == len(sweeper.objectives)
    if name == "trust_region":
        assert set(space.distributions) == {"trpo.delta", "trpo.cg_iters", "trpo.cg_damping", "trpo.gae_lambda"}
    if name == "multi_objective":
        assert len(directions) == 2 and sweeper.pruner._target_.endswith("NopPruner")


PLUGIN_CONF = REPO / "hydra_plugins" / "trpo_optuna_sweeper" / "conf" / "hydra" / "sweeper"


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "grid", "qmc", "gp", "nsgaii"])
def test_every_sampler_option_builds_and_samples(sampler):
    import optuna
    from omegaconf import OmegaConf

    from trpo_lab.sweeper.core import TrpoOptunaSweeperImpl

    if sampler == "cmaes":
        pytest.importorskip("cmaes")  # an optional extra: pip install trpo_lab[samplers]
    if sampler in ("qmc", "gp"):
        pytest.importorskip("scipy")
    cfg = OmegaConf.load(PLUGIN_CONF / "sampler" / f"{sampler}.yaml")
    params = ({"trpo.cg_iters": "range(5, 30, 5)", "network.activation": "choice(tanh, relu)"} if sampler == "grid"
              else {"trpo.delta": "tag(log, interval(0.001, 0.1))", "trpo.cg_iters": "int(interval(5, 30))"})
    impl = TrpoOptunaSweeperImpl(study_name="s", storage=None, n_trials=3, n_jobs=None, direction="maximize",
                                 objectives=["objective"], sampler=cfg, pruner=None, params=params,
                                 seeds_per_trial=1, max_failure_rate=0.5)
    space = parse_search_space(params)
    study = optuna.create_study(direction="maximize", sampler=impl._sampler(space))
    for i in range(3):
        trial = study.ask(space.distributions)
        assert set(trial.params) == set(params)
        study.tell(trial, float(i))


def test_the_motpe_preset_says_optuna_removed_it():
    from omegaconf import OmegaConf

    from trpo_lab.sweeper.core import SweepError, TrpoOptunaSweeperImpl

    impl = TrpoOptunaSweeperImpl(sampler=OmegaConf.load(PLUGIN_CONF / "sampler" / "motpe.yaml"))
    with pytest.raises(SweepError, match="motpe sampler was removed in Optuna 4.0.*sampler=tpe"):
        impl._sampler(parse_search_space({"x": "interval(0, 1)"}))


@pytest.mark.parametrize("conf, pruner", [(PLUGIN_CONF, p) for p in ("median", "successive_halving", "hyperband",
                                                                     "none")]
                         + [(REPO / "trpo_lab" / "conf" / "hydra" / "sweeper", "hyperband")])
def test_every_pruner_option_builds(conf, pruner):
    import optuna
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(conf / "pruner" / f"{pruner}.yaml")
    assert isinstance(instantiate(cfg), optuna.pruners.BasePruner)


def test_a_sweep_without_multirun_says_it_needs_m(tmp_path):
    r = run_cli("sweep=trust_region", "env=cartpole", "logger=none", cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert "sweep=trust_region is a sweep, which needs -m" in r.stderr
    assert not (tmp_path / "outputs").exists()  # nothing was trained


def test_a_misspelt_sweeper_setting_on_the_command_line_names_the_closest(tmp_path):
    r = run_cli("-m", "sweep=trust_region", "env=cartpole", "hydra.sweeper.n_trails=2",
                f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert "hydra.sweeper.n_trails is not a setting; did you mean hydra.sweeper.n_trials?" in r.stderr
    assert "+hydra.sweeper" not in r.stderr
