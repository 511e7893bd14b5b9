"""Off-policy TRPO: stale behaviour policies (trainer.policy_lag), asynchronous rollout workers
(trainer.collection=async) and the surrogate's importance-sampling corrections."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from conftest import REPO, cli_env, read_jsonl, run_cli
from trpo_lab import metrics as M
from trpo_lab.config import Config, EnvConfig, LoggerConfig, TrainerConfig, TRPOConfig, WandbConfig
from trpo_lab.policies import CategoricalPolicy, GaussianPolicy
from trpo_lab.trpo import Batch, importance_weights, off_policy_terms, surrogate, trpo_update

NO_WANDB = LoggerConfig(wandb=WandbConfig(mode="disabled"))
CLOCK = (M.WALL_TIME, M.STEPS_PER_S)


def _cfg(env_id="CartPole-v1", trpo=None, **trainer) -> Config:
    base = dict(total_steps=2048, steps_per_iter=512, eval_episodes=2, progress=False)
    base.update(trainer)
    return Config(env=EnvConfig(id=env_id), trainer=TrainerConfig(**base), trpo=trpo or TRPOConfig(),
                  logger=NO_WANDB)


def train_cfg(cfg, run_dir, **kwargs):
    from trpo_lab.trainer import train

    return train(cfg, run_dir, **kwargs)


# ---------------------------------------------------------------- the estimators

def _stale_batch(seed=0, n=64):
    """A Gaussian policy pi_old and a batch drawn from another policy beta."""
    torch.manual_seed(seed)
    policy = GaussianPolicy(3, 2, [8], "tanh")
    beta = GaussianPolicy(3, 2, [8], "tanh", log_std_init=-0.2)
    obs = torch.randn(n, 3)
    with torch.no_grad():
        actions = beta.dist_params(obs)[0] + torch.randn(n, 2) * beta.log_std.exp()
        beta_logp = beta.log_prob(obs, actions)
        beta_dist = beta.dist_params(obs)
    return policy, obs, actions, beta_logp, beta_dist, torch.randn(n)


def test_importance_surrogate_gradient_is_the_importance_weighted_policy_gradient():
    """grad of E[pi/beta A] at theta = mean_i pi(a_i|s_i) / beta(a_i|s_i) * A_i * grad log pi(a_i|s_i)."""
    policy, obs, actions, beta_logp, _, adv = _stale_batch(n=16)
    params = list(policy.parameters())
    denominator, weights = off_policy_terms("importance", beta_logp, None, 1.0)
    assert weights is None
    grad = parameters_to_vector(torch.autograd.grad(surrogate(policy, obs, actions, denominator, adv), params))
    expected = torch.zeros_like(grad)
    for i in range(obs.shape[0]):
        logp = policy.log_prob(obs[i:i + 1], actions[i:i + 1])[0]
        score = parameters_to_vector(torch.autograd.grad(logp, params))
        expected += float(torch.exp(logp.detach() - beta_logp[i]) * adv[i]) * score
    expected /= obs.shape[0]
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_truncated_with_a_huge_clip_is_importance_and_none_ignores_beta():
    policy, obs, actions, beta_logp, _, adv = _stale_batch()
    params = list(policy.parameters())
    with torch.no_grad():
        old_logp = policy.log_prob(obs, actions)

    def value_and_grad(correction, clip):
        denominator, weights = off_policy_terms(correction, beta_logp, old_logp, clip)
        surr = surrogate(policy, obs, actions, denominator, adv, weights)
        return surr.detach(), parameters_to_vector(torch.autograd.grad(surr, params))

    importance = value_and_grad("importance", 1.0)
    truncated = value_and_grad("truncated", 1e9)
    for a, b in zip(importance, truncated):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    clipped = value_and_grad("truncated", 1.0)
    assert not torch.allclose(clipped[1], importance[1])  # the clip binds on this batch
    none = value_and_grad("none", 1.0)
    torch.testing.assert_close(none[0], (torch.exp(policy.log_prob(obs, actions) - old_logp) * adv).mean().detach())
    # At theta = pi_old the uncorrected surrogate is E[A]: beta is ignored entirely.
    torch.testing.assert_close(none[0], adv.mean())


def test_truncated_weights_are_clipped_at_is_clip_and_held_constant():
    old_logp = torch.log(torch.tensor([1.0, 2.0, 4.0]))
    beta_logp = torch.zeros(3)
    denominator, weights = off_policy_terms("truncated", beta_logp, old_logp, 1.5)
    torch.testing.assert_close(weights, torch.tensor([1.0, 1.5, 1.5]))
    assert denominator is old_logp
    with pytest.raises(ValueError, match="unknown off-policy correction"):
        off_policy_terms("vtrace", beta_logp, old_logp, 1.0)


def test_is_ess_is_one_on_policy_and_matches_a_hand_computed_value():
    logp = torch.randn(50)
    largest, ess = importance_weights(logp, logp)
    assert largest == 1.0 and ess == pytest.approx(1.0, abs=1e-12)
    # weights pi_old / beta = 1, 2, 3: ESS = (1 + 2 + 3)^2 / (3 (1 + 4 + 9)) = 36 / 42
    beta = torch.zeros(3)
    old = torch.log(torch.tensor([1.0, 2.0, 3.0]))
    largest, ess = importance_weights(beta, old)
    assert largest == pytest.approx(3.0) and ess == pytest.approx(36 / 42)
    # One dominant weight: ESS near 1 / B, and no overflow for huge log-ratios.
    largest, ess = importance_weights(torch.zeros(4), torch.tensor([800.0, 0.0, 0.0, 0.0]))
    assert ess == pytest.approx(0.25) and largest == float("inf")


@pytest.mark.parametrize("correction", ["importance", "truncated", "none"])
def test_update_on_a_stale_batch_bounds_the_kl_from_pi_old_and_reports_beta(correction):
    policy, obs, actions, beta_logp, beta_dist, _ = _stale_batch(n=256)
    adv = actions[:, 0] - actions[:, 1]
    with torch.no_grad():
        old_dist = tuple(p.clone() for p in policy.dist_params(obs))
        expected_kl = float(policy.kl_from(beta_dist, obs).mean())
        old_logp = policy.log_prob(obs, actions)
    settings = TRPOConfig(delta=0.01, off_policy_correction=correction, is_clip=1.0)
    stats = trpo_update(policy, Batch(obs, actions, beta_logp, adv, beta_dist), settings)
    assert stats.line_search_success
    with torch.no_grad():
        kl_from_old = float(policy.kl_from(old_dist, obs).mean())
    assert kl_from_old <= 0.01 + 1e-6 and stats.kl == pytest.approx(kl_from_old, rel=1e-5)
    assert stats.behaviour_kl == pytest.approx(expected_kl, rel=1e-5) and stats.behaviour_kl > 0
    ratios = torch.exp(old_logp - beta_logp).double()
    assert stats.is_ratio_max == pytest.approx(float(ratios.max()), rel=1e-5)
    assert stats.is_ess == pytest.approx(float(ratios.sum() ** 2 / (256 * (ratios ** 2).sum())), rel=1e-5)
    assert stats.is_ess < 1


def test_categorical_policy_reads_a_rollout_workers_record_of_beta():
    torch.manual_seed(0)
    policy = CategoricalPolicy(4, 3, [8], "tanh")
    obs = torch.randn(5, 4)
    (logp,) = policy.dist_params(obs)
    (again,) = policy.params_from_output(policy.net(obs), None)
    torch.testing.assert_close(again, logp)


# ---------------------------------------------------------------- policy_lag

def test_policy_lag_0_reproduces_the_on_policy_runs_metrics_exactly(tmp_path):
    """The rows of runs made by the code before off-policy collection existed (commit 974485f),
    number for number: the lag and correction machinery changes nothing at policy_lag=0."""
    from threadpoolctl import threadpool_info

    if platform.machine() != "x86_64":
        pytest.skip("the recorded runs are x86-64's (OpenBLAS's Haswell kernels)")
    kernels = {i.get("architecture") for i in threadpool_info()
               if i.get("internal_api") == "openblas" and "numpy" in i.get("filepath", "")}
    assert kernels == {"Haswell"}, (f"numpy's OpenBLAS runs the {kernels} kernels: the recorded runs need "
                                    "OPENBLAS_CORETYPE=Haswell before numpy loads (tests/conftest.py sets it)")
    golden = json.loads((REPO / "tests" / "data" / "sync_metrics_974485f.json").read_text())
    for env_id, expected in golden.items():
        summary = train_cfg(_cfg(env_id, seed=5, eval_every=2, policy_lag=0), tmp_path / env_id)
        staleness = (M.POLICY_LAG_MEAN, M.POLICY_LAG_MAX, M.BEHAVIOUR_KL, M.IS_RATIO_MAX, M.IS_ESS)
        rows = read_jsonl(tmp_path / env_id / "metrics.jsonl")
        assert all(r[M.POLICY_LAG_MAX] == 0 and r[M.BEHAVIOUR_KL] == 0 for r in rows)
        rows = [{k: v for k, v in r.items() if k not in CLOCK + staleness} for r in rows]
        # Since then the final evaluation is also the last row's (it was in summary.json alone).
        final = rows[-1].pop(M.EVAL_RETURN), rows[-1].pop(M.EVAL_RETURN_STD)
        assert rows == expected["rows"], env_id
        assert summary["eval_return"] == expected["eval_return"] == final[0]


def test_policy_lag_k_acts_with_the_policy_of_update_k_minus_lag(tmp_path, monkeypatch):
    """The stored behaviour log-probabilities of update k are log pi(a|s) under the parameters
    update k - K started from, recomputed from a saved copy of them."""
    from trpo_lab import trainer

    seen = []
    real_update = trainer.trpo_update

    def recording_update(policy, batch, settings):
        seen.append({"params": {k: v.clone() for k, v in policy.state_dict().items()},
                     "obs": batch.obs.clone(), "actions": batch.actions.clone(),
                     "behaviour_logp": batch.behaviour_logp.clone(), "behaviour_dist": batch.behaviour_dist})
        return real_update(policy, batch, settings)

    monkeypatch.setattr(trainer, "trpo_update", recording_update)
    lag = 2
    for name, env_id in (("box", "Pendulum-v1"), ("discrete", "CartPole-v1")):
        seen.clear()
        trainer.train(_cfg(env_id, total_steps=512 * 6, policy_lag=lag, eval_every=0), tmp_path / name)
        rows = read_jsonl(tmp_path / name / "metrics.jsonl")
        assert [r[M.POLICY_LAG_MAX] for r in rows] == [0, 1, 2, 2, 2, 2]
        probe = GaussianPolicy(3, 1, [64, 64], "tanh") if name == "box" else CategoricalPolicy(4, 2, [64, 64], "tanh")
        for k, update in enumerate(seen):
            behaviour = max(0, k - lag)  # index of the update whose starting parameters acted
            probe.load_state_dict(seen[behaviour]["params"])
            with torch.no_grad():
                recomputed = probe.log_prob(update["obs"], update["actions"])
            torch.testing.assert_close(update["behaviour_logp"], recomputed, rtol=1e-5, atol=1e-5)
            if behaviour != k:
                assert not torch.allclose(seen[k]["params"]["net.0.weight"], seen[behaviour]["params"]["net.0.weight"])
                assert update["behaviour_dist"] is not None and rows[k][M.BEHAVIOUR_KL] > 0
            else:
                assert update["behaviour_dist"] is None and rows[k][M.BEHAVIOUR_KL] == 0.0


def test_policy_lag_runs_are_deterministic_and_differ_from_on_policy(tmp_path):
    def rows(name, **kw):
        train_cfg(_cfg("Pendulum-v1", seed=2, eval_every=2, **kw), tmp_path / name)
        return [{k: v for k, v in r.items() if k not in CLOCK} for r in read_jsonl(tmp_path / name / "metrics.jsonl")]

    a, b = rows("a", policy_lag=1), rows("b", policy_lag=1)
    assert a == b
    assert a != rows("c", policy_lag=0)


# ---------------------------------------------------------------- async

def test_async_run_leaves_the_output_contract_and_records_its_staleness(tmp_path):
    summary = train_cfg(_cfg("Pendulum-v1", collection="async", total_steps=512 * 6, eval_every=3,
                             checkpoint_every=2), tmp_path)
    assert summary["status"] == "completed" and summary["env_steps"] == 512 * 6
    assert set(M.SUMMARY_FIELDS) <= set(json.loads((tmp_path / "summary.json").read_text()))
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r[M.ITERATION] for r in rows] == list(range(1, 7))
    for row in rows:
        assert set(M.PER_ITERATION) <= set(row)
        assert 0 <= row[M.POLICY_LAG_MEAN] <= row[M.POLICY_LAG_MAX] <= 1
        assert 0 < row[M.IS_ESS] <= 1 + 1e-9 and row[M.BEHAVIOUR_KL] >= 0
    assert rows[0][M.POLICY_LAG_MAX] == 0  # the first batch is collected by version 0, pi_old itself
    assert any(M.EVAL_RETURN in r for r in rows)


@pytest.mark.slow
def test_async_learns_cartpole_to_475_on_the_sync_budget(tmp_path):
    """The sync learning test's budget (tests/test_trainer.py: 40,960 steps), not more."""
    cfg = _cfg(total_steps=40_960, steps_per_iter=2048, n_envs=2, eval_every=0, eval_episodes=10,
               collection="async")
    summary = train_cfg(cfg, tmp_path)
    assert summary["eval_return"] >= 475, summary
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert max(r[M.POLICY_LAG_MAX] for r in rows) >= 1  # it really learned from stale batches


def test_a_killed_rollout_worker_fails_the_run_with_its_name(tmp_path, monkeypatch):
    from trpo_lab.async_collection import AsyncCollector, RolloutWorkerError

    real = AsyncCollector.policy_updated

    def kill_worker_after_update_2(self, agent, version):
        if version == 2:
            os.kill(self.processes[1].pid, signal.SIGKILL)
        return real(self, agent, version)

    monkeypatch.setattr(AsyncCollector, "policy_updated", kill_worker_after_update_2)
    signal.alarm(120)  # a hang fails the test instead of the suite
    try:
        with pytest.raises(RolloutWorkerError, match=r"rollout worker 1 \(pid \d+, environment 1\) died"):
            train_cfg(_cfg(collection="async", total_steps=512 * 20, rollout_workers=2), tmp_path)
    finally:
        signal.alarm(0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "rollout worker 1" in summary["error"]


def _group_processes(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def test_ctrl_c_of_an_async_run_ends_interrupted_with_every_process_gone(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "trpo_lab", "env=cartpole", "trainer.collection=async",
                             "trainer.total_steps=10000000", "trainer.steps_per_iter=512", "logger=none",
                             f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=cli_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (
                metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        assert len(_group_processes(proc.pid)) >= 3  # the trainer and its rollout workers
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _group_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_processes(proc.pid) == []
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert "interrupted" in proc.stderr.read()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("override,key", [
    ("trainer.policy_lag=-1", "trainer.policy_lag"),
    ("trpo.is_clip=0.5", "trpo.is_clip"),
    ("trpo.off_policy_correction=vtrace", "trpo.off_policy_correction"),
    ("trainer.rollout_workers=0", "trainer.rollout_workers"),
    ("trainer.collection=asynch", "trainer.collection"),
])
def test_bad_off_policy_settings_are_one_line_exit_2_before_anything_is_built(tmp_path, override, key):
    run_dir = tmp_path / "run"
    proc = run_cli("env=cartpole", "trainer.collection=async", override, "logger=none",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert not run_dir.exists()


def test_async_with_a_fixed_lag_or_subproc_is_refused():
    from trpo_lab.config import ConfigError, validate

    with pytest.raises(ConfigError, match="trainer.policy_lag"):
        validate(_cfg(collection="async", policy_lag=1))
    with pytest.raises(ConfigError, match="trainer.vec_env"):
        validate(_cfg(collection="async", vec_env="subproc"))
    with pytest.raises(ConfigError, match=r"trainer.rollout_workers.*n_envs=2"):
        validate(_cfg(collection="async", rollout_workers=3))
    validate(_cfg(collection="async", rollout_workers=2))


def test_an_async_batch_is_what_its_environments_and_policies_did():
    """Replaying a batch's stored actions in fresh environments seeded as the workers' gives its
    observations, rewards and episode ends; its log-probabilities are the publishing policy's."""
    import gymnasium as gym

    from trpo_lab.async_collection import AsyncCollector
    from trpo_lab.trainer import build_agent

    cfg = _cfg("Pendulum-v1", collection="async", rollout_workers=2, steps_per_iter=128)
    cfg.env.max_episode_steps = 50  # time limits inside the batch
    cfg.trpo.normalize_reward = False  # the batch's rewards are then the environments' own
    T, N = 64, 2
    collector = AsyncCollector(cfg, T, N, seed=7)
    try:
        agent = build_agent(cfg, collector.observation_space, collector.action_space)
        rollout = collector.collect(agent, 0)
        slot = collector._slots[0]
        raw = slot["raw_obs"].copy()
        with torch.no_grad():
            logp = agent.policy.log_prob(torch.from_numpy(rollout.obs.reshape(T * N, -1)),
                                         torch.from_numpy(rollout.actions.reshape(T * N, -1)))
        torch.testing.assert_close(torch.from_numpy(rollout.behaviour_logp.reshape(-1)).float(), logp,
                                   rtol=1e-4, atol=1e-4)
        assert (rollout.versions == 0).all() and rollout.behaviour_dist is None
        for j in range(N):
            env = gym.make("Pendulum-v1", max_episode_steps=50)
            obs, _ = env.reset(seed=7 + j)
            for t in range(T):
                np.testing.assert_allclose(raw[t, j], obs, rtol=1e-6)
                action = np.clip(rollout.actions[t, j], env.action_space.low, env.action_space.high)
                obs, reward, terminated, truncated, _ = env.step(action)
                assert slot["rewards"][t, j] == pytest.approx(reward, rel=1e-5)
                assert rollout.episode_ends[t, j] == (terminated or truncated)
                if terminated or truncated:
                    obs, _ = env.reset()
        assert [t for t, i, _ in rollout.truncations if i == 0] == [49]
        # The next batch (version 0 still: nothing published) continues the same episodes.
        second = collector.collect(agent, 0)
        assert np.isfinite(second.obs).all()
    finally:
        collector.close()
