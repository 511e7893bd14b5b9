"""Bad input and faults: a clear error, and nothing that was finished is lost."""
import json
import sys

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector

from conftest import read_jsonl, run_cli
from test_config import _compose
from trpo_lab.config import (Config, ConfigError, EnvConfig, LoggerConfig, TrainerConfig, WandbConfig, to_config,
                             validate)
from trpo_lab.policies import GaussianPolicy
from trpo_lab.trainer import train
from trpo_lab.trpo import line_search, mean_kl, surrogate

KEYS = [
    "trpo.delta", "trpo.cg_iters", "trpo.cg_damping", "trpo.gae_lambda", "trpo.gamma", "trpo.backtrack_iters",
    "trpo.backtrack_coeff", "trpo.value_lr", "trpo.value_epochs", "trpo.value_minibatch", "trpo.normalize_obs",
    "trainer.total_steps", "trainer.steps_per_iter", "trainer.n_envs", "trainer.vec_env", "trainer.seed",
    "trainer.eval_every", "trainer.eval_episodes", "trainer.objective", "network.hidden", "network.activation",
    "network.log_std_init", "logger.wandb.mode", "env.id", "env.max_episode_steps", "trpo.no_such_key", "env",
    "trpo", "network", "sweep",
]
VALUES = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "null", "true", "[]", "[64,64]", "[0]", "[-3]", "{}", "''", "tanh",
                     "sync", "subproc", "CartPole-v1", "NoSuch-v0", "walker", "cartpole", "offline", "x=y",
                     "[1,", "${oops}", "interval(0,1)", "'quoted'", "1e400"]),
    st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=12),
)
OVERRIDES = st.lists(st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
                     min_size=1, max_size=4)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OVERRIDES)
def test_fuzzed_overrides_compose_validate_or_fail_with_a_short_message(overrides):
    """A config that composes either validates or fails with our one-line ConfigError.

    Composition errors (Hydra's) are the command line's to report: see the next test.
    """
    try:
        cfg = to_config(_compose(*overrides))
    except Exception:
        return
    try:
        validate(cfg)
    except ConfigError as err:
        assert "\n" not in str(err) and "=" in str(err)


@settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(OVERRIDES)
def test_fuzzed_overrides_on_the_command_line_never_print_a_traceback(tmp_path_factory, overrides):
    cwd = tmp_path_factory.mktemp("fuzz")
    budget = ["trainer.total_steps=512", "trainer.steps_per_iter=512", "trainer.n_envs=1", "trainer.eval_episodes=1",
              "logger=none", "env=cartpole"]
    proc = run_cli(*budget, *overrides, "hydra.sweep.dir=.", cwd=cwd, timeout=120)
    assert "Traceback" not in proc.stderr, (overrides, proc.stderr)
    assert proc.returncode in (0, 2), (overrides, proc.returncode, proc.stderr)
    if proc.returncode == 2:
        assert proc.stderr.startswith("trpo_lab: error: "), proc.stderr


def test_group_option_of_the_wrong_type_is_a_message_not_a_traceback(tmp_path):
    proc = run_cli("env=0", cwd=tmp_path)  # Hydra itself would print a stack trace here
    assert proc.returncode == 2
    assert proc.stderr.startswith("trpo_lab: error: ") and "Traceback" not in proc.stderr


def test_line_search_rejects_a_step_that_makes_parameters_nan():
    torch.manual_seed(0)
    policy = GaussianPolicy(3, 2, [8], "tanh")
    obs = torch.randn(32, 3)
    with torch.no_grad():
        old = policy.dist_params(obs)
        actions = old[0] + torch.randn(32, 2)
        logp = policy.log_prob(obs, actions)
    adv = torch.randn(32)
    before = parameters_to_vector(policy.parameters()).detach().clone()
    step = torch.full_like(before, float("nan"))

    def evaluate():
        with torch.no_grad():
            return float(surrogate(policy, obs, actions, logp, adv)), float(mean_kl(policy, obs, old))

    result = line_search(policy, step, evaluate, surrogate_before=-1e9, max_kl=1.0, backtrack_iters=3,
                         backtrack_coeff=0.5)
    assert not result.accepted
    assert torch.equal(parameters_to_vector(policy.parameters()), before)


def test_output_dir_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "afile").write_text("")
    proc = run_cli("env=cartpole", "logger=none", f"hydra.run.dir={tmp_path / 'afile' / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a directory" in proc.stderr, proc.stderr


def test_full_disk_is_a_clear_failure_and_the_summary_still_says_so(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC
    proc = run_cli("env=cartpole", "logger=none", "trainer.total_steps=512", "trainer.steps_per_iter=512",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "No space left on device" in proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]


def _wandb_cfg() -> Config:
    return Config(env=EnvConfig(id="CartPole-v1"),
                  trainer=TrainerConfig(total_steps=1024, steps_per_iter=512, eval_episodes=1, progress=False),
                  logger=LoggerConfig(wandb=WandbConfig(mode="offline")))


def test_missing_wandb_keeps_local_metrics(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    summary = train(_wandb_cfg(), tmp_path)
    assert summary["status"] == "completed"
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 2


def test_wandb_crashing_mid_run_keeps_local_metrics(tmp_path, monkeypatch):
    import wandb

    real_init = wandb.init

    def init_then_break(*args, **kwargs):
        run = real_init(*args, **kwargs)

        def broken_log(*a, **k):
            raise RuntimeError("wandb service died")

        monkeypatch.setattr(run, "log", broken_log)
        return run

    monkeypatch.setattr(wandb, "init", init_then_break)
    summary = train(_wandb_cfg(), tmp_path)
    assert summary["status"] == "completed"
    assert [r["iteration"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


def test_wandb_failing_to_start_keeps_local_metrics(tmp_path, monkeypatch):
    import wandb

    def refuse(*args, **kwargs):
        raise wandb.errors.CommError("no network")

    monkeypatch.setattr(wandb, "init", refuse)
    train(_wandb_cfg(), tmp_path)
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 2
