"""Tier 2: every group option composes; invalid values fail naming the key."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from trpo_lab.config import ConfigError, num_iterations, register_configs, steps_per_env, to_config, validate

CONF = Path(__file__).resolve().parents[1] / "trpo_lab" / "conf"
GROUPS = ("env", "network", "trpo", "trainer", "logger")


def _compose(*overrides: str):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def _options():
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize("group,option", _options(), ids=lambda x: str(x))
def test_every_group_option_composes_and_validates(group, option):
    cfg = to_config(_compose(f"{group}={option}"))
    validate(cfg)


ATARI_GAMES = ["pong", "breakout", "beam_rider", "enduro", "qbert", "seaquest", "space_invaders"]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if p.stem != "atari"))
def test_every_experiment_preset_composes_validates_and_names_its_task(preset):
    cfg = to_config(_compose(f"experiment={preset}"))
    validate(cfg)
    task = preset.split("_", 1)[-1]
    assert cfg.env.id == to_config(_compose(f"env={task}")).env.id


@pytest.mark.parametrize("game", ATARI_GAMES)
def test_the_atari_preset_composes_with_every_game_of_the_paper(game):
    """experiment=atari names no task: it is the pixel settings, for env=<game>."""
    cfg = to_config(_compose(f"env={game}", "experiment=atari"))
    validate(cfg)
    assert cfg.env.id == to_config(_compose(f"env={game}")).env.id and cfg.env.preprocess == "atari"
    assert cfg.network.type == "nature_cnn" and cfg.trpo.fisher_fraction == 0.1


def test_zoo_presets_are_rl_zoo3_settings_in_trpo_labs_units():
    """delta = target_kl x action dimensions (HalfCheetah's target_kl is 0.04), Swimmer's gamma 0.9999."""
    expected = {"hopper": (0.03, 0.3), "walker": (0.06, 0.6), "halfcheetah": (0.24, 0.6), "ant": (0.08, 0.8),
                "swimmer": (0.02, 0.2)}
    for task, (delta, damping) in expected.items():
        cfg = to_config(_compose(f"experiment=zoo_{task}"))
        assert (cfg.trpo.delta, cfg.trpo.cg_damping) == pytest.approx((delta, damping)), task
        assert cfg.trpo.gamma == (0.9999 if task == "swimmer" else 0.99)
    # An experiment is a starting point: the command line still wins.
    assert to_config(_compose("experiment=zoo_hopper", "trpo.delta=0.05")).trpo.delta == 0.05


def test_design_env_options_exist_with_expected_ids():
    expected = {
        "walker": "Walker2d-v5", "hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "ant": "Ant-v5",
        "swimmer": "Swimmer-v5", "humanoid": "Humanoid-v5", "inverted_pendulum": "InvertedPendulum-v5",
        "inverted_double_pendulum": "InvertedDoublePendulum-v5", "reacher": "Reacher-v5",
        "pendulum": "Pendulum-v1", "cartpole": "CartPole-v1", "acrobot": "Acrobot-v1",
    }
    for option, env_id in expected.items():
        assert to_config(_compose(f"env={option}")).env.id == env_id


def test_default_is_walker_with_design_keys():
    cfg = to_config(_compose())
    assert cfg.env.id == "Walker2d-v5"
    for key in ("delta", "cg_iters", "cg_damping", "gae_lambda", "gamma", "backtrack_iters", "backtrack_coeff"):
        assert hasattr(cfg.trpo, key)
    for key in ("total_steps", "steps_per_iter", "n_envs", "seed", "eval_every", "eval_episodes", "threads"):
        assert hasattr(cfg.trainer, key)
    assert cfg.logger.wandb.mode == "offline"


def test_env_id_takes_any_registered_gymnasium_id():
    cfg = to_config(_compose("env.id=MountainCarContinuous-v0"))
    validate(cfg)
    assert cfg.env.id == "MountainCarContinuous-v0"


def test_derived_sizes():
    cfg = to_config(_compose("trainer.steps_per_iter=2048", "trainer.n_envs=4", "trainer.total_steps=5000"))
    assert steps_per_env(cfg.trainer) == 512
    assert num_iterations(cfg.trainer) == 3


INVALID = [
    ("trpo.delta=-0.01", "trpo.delta"),
    ("trpo.delta=0", "trpo.delta"),
    ("trpo.gae_lambda=1.5", "trpo.gae_lambda"),
    ("trpo.gamma=-0.1", "trpo.gamma"),
    ("trpo.cg_iters=0", "trpo.cg_iters"),
    ("trpo.cg_damping=-1", "trpo.cg_damping"),
    ("trpo.backtrack_coeff=1.0", "trpo.backtrack_coeff"),
    ("trpo.backtrack_iters=0", "trpo.backtrack_iters"),
    ("trainer.steps_per_iter=1000", "trainer.steps_per_iter"),  # not a multiple of n_envs=... 3
    ("trainer.total_steps=0", "trainer.total_steps"),
    ("trainer.vec_env=threads", "trainer.vec_env"),
    ("trainer.objective=loss", "trainer.objective"),
    ("network.activation=sigmoid", "network.activation"),
    ("network.hidden=[]", "network.hidden"),
    ("logger.wandb.mode=maybe", "logger.wandb.mode"),
    ("env.id=NoSuchEnv-v9", "env.id"),
]


@pytest.mark.parametrize("override,key", INVALID, ids=[o for o, _ in INVALID])
def test_invalid_values_raise_naming_the_key(override, key):
    extra = ["trainer.n_envs=3"] if key == "trainer.steps_per_iter" else []
    cfg = to_config(_compose(override, *extra))
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(key + "="), message
    assert "\n" not in message


def test_typed_schema_rejects_mistyped_key_and_wrong_type():
    with pytest.raises(Exception, match="deltaa"):
        _compose("trpo.deltaa=0.1")
    with pytest.raises(Exception, match="cg_iters"):
        _compose("trpo.cg_iters=lots")


@pytest.mark.parametrize("override,key", [("+trpo.new=1", "trpo.new"), ("+trainer.totl_steps=5", "trainer.totl_steps"),
                                          ("+logger.wandb.projct=x", "logger.wandb.projct"), ("+delta=0.1", "delta")])
def test_added_key_the_schema_lacks_is_an_error_not_ignored(override, key):
    # Hydra's + adds a key to the typed config; the typed object would drop it silently.
    with pytest.raises(ConfigError) as err:
        to_config(_compose(override))
    assert str(err.value).startswith(f"{key} is not a setting"), err.value
    assert "\n" not in str(err.value)


def test_unknown_setting_suggests_the_closest_key():
    with pytest.raises(ConfigError, match=r"did you mean trainer\.total_steps\?"):
        to_config(_compose("+trainer.totl_steps=5"))


def test_free_form_kwargs_take_added_keys():
    cfg = to_config(_compose("env=hopper", "+env.kwargs.frame_skip=5"))
    assert cfg.env.kwargs == {"frame_skip": 5}


ROOT = CONF.parents[1]
TASKS = sorted(p.stem.removeprefix("zoo_") for p in (CONF / "experiment").glob("zoo_*.yaml"))


@pytest.mark.parametrize("task", TASKS)
def test_every_tuned_preset_is_the_committed_study_trial_it_names(task, tmp_path):
    """Each task with rl-zoo3's settings has a tuned preset whose comment names its journal, study
    and trial; that trial is complete in the committed journal and the preset holds its values
    (floats rounded, to within 2%: Hopper's preset has value_lr 6e-4 for its trial's 5.9e-4)."""
    import re
    import shutil

    import optuna

    from trpo_lab.report.discovery import load_studies

    text = (CONF / "experiment" / f"{task}.yaml").read_text()
    journal = re.search(r"results/studies/[\w.-]+\.journal", text).group(0)
    study_name = re.search(r"study (tune-[\w.-]+)", text).group(1)
    number = int(re.search(r"Trial (\d+) of", text).group(1))
    copy = tmp_path / "study.journal"  # opening a journal may leave lock files beside it
    shutil.copy(ROOT / journal, copy)
    study = next(s for s in load_studies(f"journal:{copy}") if s.study_name == study_name)
    trial = study.trials[number]
    assert trial.state == optuna.trial.TrialState.COMPLETE, (task, number, trial.state)

    preset = to_config(_compose(f"experiment={task}"))
    for name, value in trial.params.items():
        if name == "network":
            assert preset.network.hidden == to_config(_compose(f"network={value}")).network.hidden, name
            continue
        group, key = name.split(".")
        actual = getattr(getattr(preset, group), key)
        if isinstance(value, float) and not float(value).is_integer():
            assert actual == pytest.approx(value, rel=0.02), (name, value, actual)
        else:
            assert actual == value, (name, value, actual)
