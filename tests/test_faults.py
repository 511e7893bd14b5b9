"""Bad input and faults: a clear error, and nothing that was finished is lost."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector

from conftest import REPO, cli_env, read_jsonl, run_cli
from fault_envs import RunsCode
from test_config import _compose
from trpo_lab import metrics as M
from trpo_lab.checkpoint import CheckpointError, load_checkpoint
from trpo_lab.config import (Config, ConfigError, EnvConfig, LoggerConfig, TrainerConfig, WandbConfig, to_config,
                             validate)
from trpo_lab.envs import EnvError
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


# Issue 18: checkpoints are data, checked, with a fallback; every ending writes summary.json;
# bounded work per iteration; environments that misbehave at run time.

def _tiny(env_id: str = "CartPole-v1", **trainer) -> Config:
    """A CartPole run of 1-3 iterations of 256 steps, one checkpoint per iteration, no wandb."""
    kwargs = dict(total_steps=512, steps_per_iter=256, n_envs=1, eval_every=0, eval_episodes=1, checkpoint_every=1,
                  progress=False)
    kwargs.update(trainer)
    cfg = Config(env=EnvConfig(id=env_id), trainer=TrainerConfig(**kwargs),
                 logger=LoggerConfig(wandb=WandbConfig(mode="disabled")))
    cfg.trpo.value_epochs = 1
    return cfg


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_numpy_state_round_trips_bit_for_bit_through_plain_data():
    from trpo_lab.checkpoint import from_plain, to_plain

    rng = np.random.default_rng(7)
    rng.random(5)
    state = {"rng": rng.bit_generator.state, "mt": np.random.MT19937(3).state, "f64": rng.random((3, 2)),
             "u32": np.arange(5, dtype=np.uint32), "flags": np.array([True, False]), "scalar": np.float64(0.1),
             "int": np.int64(-3), "pairs": [(1.5, 2)], "none": None, "t": torch.arange(3)}
    back = from_plain(to_plain(state))
    assert back["rng"] == state["rng"]
    np.testing.assert_array_equal(back["mt"]["state"]["key"], state["mt"]["state"]["key"])
    for key in ("f64", "u32", "flags"):
        assert back[key].dtype == state[key].dtype and np.array_equal(back[key], state[key])
    assert type(back["scalar"]) is np.float64 and back["scalar"] == state["scalar"] and back["int"] == -3
    assert back["pairs"] == [(1.5, 2)] and back["none"] is None and torch.equal(back["t"], state["t"])
    with pytest.raises(TypeError, match=r"checkpoint\['x'\] is a RunsCode"):
        to_plain({"x": RunsCode("never")})


def _craft(path: Path, state: dict, wrapped: bool) -> None:
    """Write `state` (holding a RunsCode) to `path`: as a bare pickle (today's format), or inside
    trpo_lab's format with a correct checksum, so only weights_only stands in the way."""
    import hashlib
    import io

    from trpo_lab.checkpoint import FORMAT

    if not wrapped:
        torch.save(state, path)
        return
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    torch.save({"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, path)


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare-pickle", "checksummed"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, wrapped):
    """A pickled object with a side effect in last.pt: a plain rerun in the directory, trainer.resume=DIR
    and trpo_lab.evaluate each refuse it in one line naming the file, and the code never runs."""
    run_dir = tmp_path / "run"
    train(_tiny(), run_dir)
    (run_dir / "checkpoints" / "previous.pt").unlink()  # no good fallback: the refusal must show
    marker = tmp_path / "pwned"
    last = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(run_dir)
    state["agent"]["extra"] = RunsCode(str(marker))
    _craft(last, state, wrapped)

    with pytest.raises(CheckpointError, match=re.escape(str(last))):
        train(_tiny(), run_dir)
    assert not marker.exists()
    overrides = ["env=cartpole", "logger=none", "trainer.total_steps=512", "trainer.steps_per_iter=256",
                 "trainer.n_envs=1", "trainer.checkpoint_every=1", "trainer.eval_every=0", "trainer.eval_episodes=1",
                 "trpo.value_epochs=1"]
    proc = run_cli(*overrides, f"trainer.resume={run_dir}", cwd=tmp_path)
    assert proc.returncode == 1 and str(last) in _one_line(proc.stderr), proc.stderr
    proc = run_cli(str(run_dir), "--no-video", "-n", "1", cwd=tmp_path, module="trpo_lab.evaluate")
    assert proc.returncode == 2 and str(last) in _one_line(proc.stderr), proc.stderr
    assert not marker.exists()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def _corrupt(path: Path, how: str, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    if how == "empty":
        data = bytearray()
    elif how == "truncated":
        data = data[:len(data) // 2]
    else:  # one bit flipped inside the bytes of a weight tensor, which torch would load without a word
        at = bytes(data).find(tensor.numpy().tobytes())
        assert at >= 0
        data[at + 5] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["empty", "truncated", "flipped"])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one_or_fails_in_one_line(tmp_path, caplog, how):
    run_dir = tmp_path / "run"
    train(_tiny(total_steps=768), run_dir)  # 3 iterations: last.pt at 3, previous.pt at 2
    last, previous = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "previous.pt"
    weight = max(load_checkpoint(run_dir)["agent"]["policy"].values(), key=torch.numel)  # the largest weight
    _corrupt(last, how, weight)
    with caplog.at_level("WARNING", logger="trpo_lab.checkpoint"):
        state = load_checkpoint(run_dir)
    assert state["iteration"] == 2 and str(last) in caplog.text and "previous checkpoint" in caplog.text
    # Resuming goes on from iteration 2: the rows after it are dropped and written again.
    summary = train(_tiny(total_steps=768), run_dir)
    assert summary["status"] == "completed"
    assert [r["iteration"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]

    _corrupt(run_dir / "checkpoints" / "last.pt", how, weight)
    _corrupt(run_dir / "checkpoints" / "previous.pt", "truncated", weight)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(run_dir)
    assert "\n" not in str(err.value) and str(last) in str(err.value) and str(previous) in str(err.value)


def test_disk_full_while_saving_removes_the_temporaries_and_still_writes_the_summary(tmp_path, monkeypatch):
    """ENOSPC once the checkpoint's temporary is on disk; the disk stays full until it is gone."""
    import errno
    import os as os_module

    from trpo_lab import checkpoint, loggers

    run_dir = tmp_path / "run"
    real_replace, real_dump = os_module.replace, json.dump

    def replace(src, dst):
        if str(dst).endswith("last.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    def dump(*args, **kwargs):
        if list((run_dir / "checkpoints").glob("*.tmp")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(*args, **kwargs)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    monkeypatch.setattr(loggers.json, "dump", dump)
    with pytest.raises(OSError, match="No space left"):
        train(_tiny(), run_dir)
    assert sorted(p.name for p in run_dir.rglob("*.tmp")) == []
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]


@pytest.mark.parametrize("env_id", ["fault_envs:MultiDiscreteAct-v0", "fault_envs:MultiBinaryAct-v0",
                                    "fault_envs:DictObs-v0"])
def test_a_run_refused_before_its_first_iteration_writes_a_failed_summary(tmp_path, env_id):
    with pytest.raises(EnvError) as err:
        train(_tiny(env_id), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == f"EnvError: {err.value}"
    assert "\n" not in summary["error"] and set(M.SUMMARY_FIELDS) <= set(summary)


def test_a_resume_that_cannot_write_its_metrics_replaces_the_completed_summary(tmp_path, monkeypatch):
    import errno

    from trpo_lab import resume

    train(_tiny(), tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl.tmp"))

    monkeypatch.setattr(resume, "truncate_metrics", full)
    with pytest.raises(OSError):
        train(_tiny(total_steps=768), tmp_path)  # extends the run: a resume
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]


@pytest.mark.parametrize("key,value", [("trpo.cg_iters", 100000), ("trpo.backtrack_iters", 100000000),
                                       ("trpo.value_epochs", 10**6), ("trainer.steps_per_iter", 2**30),
                                       ("trainer.n_envs", 10**5), ("trainer.policy_lag", 10**6),
                                       ("trainer.eval_episodes", 10**7), ("trainer.threads", 10**5)])
def test_settings_that_multiply_the_work_of_an_iteration_have_upper_bounds(key, value):
    cfg = to_config(_compose("env=cartpole", f"{key}={value}"))
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}={value} is invalid: must be"):
        validate(cfg)


def test_an_unbounded_setting_is_one_line_before_anything_is_built(tmp_path):
    proc = run_cli("env=cartpole", "logger=none", "trpo.cg_iters=100000", "trpo.cg_damping=0",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2 and "trpo.cg_iters=100000 is invalid" in _one_line(proc.stderr)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("env_id,error,says", [
    ("fault_envs:WrongShapeObs-v0", EnvError, "returned an observation of shape (3,) from step; its "
                                              "observation_space declares (2,)"),
    ("fault_envs:ScalarObs-v0", EnvError, "returned an observation of shape () from step"),
    ("fault_envs:RaiseInStep-v0", RuntimeError, "RuntimeError: the simulator lost its licence server"),
])
def test_an_environment_that_misbehaves_mid_run_is_one_clear_error_and_a_failed_summary(tmp_path, env_id, error,
                                                                                          says):
    with pytest.raises(error, match=re.escape(says.removeprefix("RuntimeError: "))):
        train(_tiny(env_id), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and says in summary["error"]


@pytest.mark.parametrize("env_id,says", [
    ("fault_envs:RaiseInStep-v0", "env.id='fault_envs:RaiseInStep-v0' raised inside step: RuntimeError: the "
                                  "simulator lost its licence server"),
    ("fault_envs:WrongShapeObs-v0", "returned an observation of shape (3,) from step"),
])
def test_an_environment_that_misbehaves_on_the_command_line_is_one_line(tmp_path, env_id, says):
    env = cli_env()
    env["PYTHONPATH"] = str(REPO / "tests") + os.pathsep + env["PYTHONPATH"]
    proc = subprocess.run([sys.executable, "-m", "trpo_lab", "env=cartpole", f"env.id={env_id}", "logger=none",
                           "trainer.total_steps=512", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and says in _one_line(proc.stderr)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_a_metrics_file_deleted_mid_run_fails_the_run_instead_of_completing(tmp_path):
    def delete_metrics(env_steps, eval_return):
        (tmp_path / "metrics.jsonl").unlink()
        return False

    with pytest.raises(FileNotFoundError, match="deleted or replaced during the run"):
        train(_tiny(total_steps=768, eval_every=1), tmp_path, on_eval=delete_metrics)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "metrics.jsonl was deleted" in summary["error"]


def test_a_garbled_metrics_row_on_resume_is_a_warning_naming_file_and_line(tmp_path, caplog):
    from trpo_lab.resume import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2, "kl": 0.0\n{"iteration": 3}\n')
    with caplog.at_level("INFO", logger="trpo_lab.resume"):
        truncate_metrics(tmp_path, 3)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"{path} line 2" in warnings[0].getMessage()
    assert [r["iteration"] for r in read_jsonl(path)] == [1, 3]


def test_the_report_draws_a_run_whose_delta_is_not_a_number(tmp_path, caplog):
    from test_report import make_run
    from trpo_lab.report import build_report

    for seed in range(2):
        make_run(tmp_path / "runs" / str(seed), seed=seed, settings={"trpo.delta": "a lot"}, final=50.0)
    with caplog.at_level("WARNING", logger="trpo_lab.report.grouping"):
        result = build_report([str(tmp_path / "runs")], tmp_path / "r.html")
    assert result["runs"] == 2 and "trpo.delta='a lot'" in caplog.text and "is not a number" in caplog.text


def test_the_readme_says_what_trpo_lab_trusts_and_what_env_module_ids_import():
    readme = (REPO / "README.md").read_text()
    security = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    assert "weights_only=True" in security and "checkpoint" in security and "run director" in security
    assert "imports the module" in readme and "env.id=module:Id" in readme
