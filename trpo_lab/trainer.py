"""The training loop: collect -> advantages -> trpo_update -> fit_value -> log -> checkpoint.

`train` runs one composed config to its end, whatever the ending, and returns
the summary that `summary.json` also holds. Sweeps hook in through `on_eval`,
called with (env_steps, eval_return) after each periodic evaluation; returning
True stops the run as pruned.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np
import torch

from trpo_lab import metrics as M
from trpo_lab import resume, workers
from trpo_lab.checkpoint import BEST, CheckpointError, remove_temporaries, save_checkpoint
from trpo_lab.collection import DivergedError, Rollout, make_collector
from trpo_lab.config import Config, eval_seed, num_iterations, steps_per_env
from trpo_lab.evaluate import episode_returns
from trpo_lab.normalisation import ObsNormalizer, RewardScaler
from trpo_lab.loggers import RunLogger, failed_summary, write_json_atomic
from trpo_lab.networks import is_image_space, net_factory
from trpo_lab.policies import Policy, ValueNet, make_policy
from trpo_lab.torch_value_fit import TorchValueFitter
from trpo_lab.trpo import Batch, UpdateStats, gae, trpo_update
from trpo_lab.value_fit import PendingFit, ValueFitter

log = logging.getLogger(__name__)

EvalHook = Callable[[int, float], bool]


class PruneRequested(Exception):
    """Raised inside the loop when the evaluation hook asks the run to stop."""


@dataclass
class Agent:
    """Everything learned: the policy with its observation normaliser, and the critic."""

    policy: Policy
    value: ValueNet
    value_fitter: ValueFitter | TorchValueFitter  # Adam on the critic's MSE (holds Adam's state)
    obs_norm: ObsNormalizer
    reward_scaler: RewardScaler

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "value_optimizer": self.value_fitter.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        self.value_fitter.load_state_dict(state["value_optimizer"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])


def build_agent(cfg: Config, observation_space: gym.Space, action_space: gym.Space) -> Agent:
    obs_dim = int(np.prod(observation_space.shape))
    net = cfg.network
    factory = net_factory(net, observation_space)  # None: the MLP
    policy = make_policy(obs_dim, action_space, list(net.hidden), net.activation, net.log_std_init, net.ortho_init,
                         factory)
    value = ValueNet(obs_dim, list(net.hidden), net.activation, net.ortho_init, factory)
    device = torch.device(cfg.trainer.device)
    policy.to(device)
    if factory is None:  # the MLP critic is fitted in numpy, on the CPU
        fitter = ValueFitter(value, net.activation, lr=cfg.trpo.value_lr, eps=cfg.trpo.value_adam_eps)
    else:
        value.to(device)
        fitter = TorchValueFitter(value, lr=cfg.trpo.value_lr, eps=cfg.trpo.value_adam_eps)
    return Agent(
        policy=policy,
        value=value,
        value_fitter=fitter,
        # Images are scaled to [0, 1] by the CNN itself, never running-normalised.
        obs_norm=ObsNormalizer((obs_dim,), enabled=cfg.trpo.normalize_obs and not is_image_space(observation_space)),
        reward_scaler=RewardScaler(cfg.trainer.n_envs, cfg.trpo.gamma, enabled=cfg.trpo.normalize_reward),
    )


def advantages_and_returns(rollout: Rollout, value: ValueNet, gamma: float, lam: float
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(advantages, returns, values), each float32 [T, N]; returns = advantages + values."""
    T, N = rollout.rewards.shape
    with torch.no_grad():
        values = value(torch.from_numpy(rollout.obs.reshape(T * N, -1))).numpy().reshape(T, N)
        last_values = value(torch.from_numpy(rollout.last_obs)).numpy()
        finals = [f for _, _, f in rollout.truncations]
        final_values = value(torch.from_numpy(np.asarray(finals, dtype=np.float32))).numpy() if finals else []
    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    next_values[-1] = last_values
    next_values[rollout.episode_ends] = 0.0  # true terminations and (for now) truncations
    for (t, i, _), v in zip(rollout.truncations, final_values):
        next_values[t, i] = v  # bootstrap the time-limit cut with V(s_final)
    adv = gae(rollout.rewards.astype(np.float32), values, next_values,
              rollout.episode_ends.astype(np.float32), gamma, lam)
    return adv, adv + values, values


def _finish_value_fit(fit: PendingFit, epochs: int) -> float:
    """Run what is left of a critic fit; its mean loss. Raises DivergedError on a non-finite loss."""
    value_loss = fit.finish()
    if not math.isfinite(value_loss) and epochs > 0:
        raise DivergedError(f"value loss became {value_loss}")
    return value_loss


def _evaluate(cfg: Config, agent: Agent) -> tuple[float, float]:
    """Mean and std of the policy's return over trainer.eval_episodes episodes: the deterministic
    policy's, or with trainer.eval_stochastic the sampled actions'."""
    returns = episode_returns(cfg, agent, cfg.trainer.eval_episodes, eval_seed(cfg.trainer),
                              stochastic=cfg.trainer.eval_stochastic)
    return float(np.mean(returns)), float(np.std(returns))


def explained_variance(predictions: np.ndarray, targets: np.ndarray) -> float:
    """1 - Var(targets - predictions) / Var(targets); nan when the targets are constant."""
    var = np.var(targets)
    return float("nan") if var == 0 else float(1.0 - np.var(targets - predictions) / var)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def train(cfg: Config, run_dir: Path, on_eval: Optional[EvalHook] = None) -> dict[str, Any]:
    """Train TRPO as `cfg` says, writing outputs under `run_dir`; returns the summary.

    `cfg` has passed `config.validate` (the command line validates it once, before
    Hydra makes the run directory; a caller that builds a Config itself calls validate).
    Raises resume.RunDirInUse, before touching anything there, when another
    run is writing in the run directory.
    """
    try:
        cfg, run_dir, checkpoint = resume.resolve(cfg, Path(run_dir))
    except CheckpointError as err:  # the run there cannot go on: its summary must not say "completed"
        if err.run_dir is not None:
            with resume.claim(err.run_dir):
                _end_before_training(err.run_dir, cfg.env.id, err, None, None)
        raise
    with resume.claim(run_dir), workers.blas_threads(cfg.trainer.threads):
        return _train(cfg, run_dir, checkpoint, on_eval)


def _train(cfg: Config, run_dir: Path, checkpoint: Optional[dict[str, Any]], on_eval: Optional[EvalHook]
           ) -> dict[str, Any]:
    tc, pc = cfg.trainer, cfg.trpo
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    generator = torch.Generator().manual_seed(tc.seed)

    T, N = steps_per_env(tc), tc.n_envs
    iteration, env_steps = 0, 0
    train_time, eval_return, eval_std, best_eval, wall_before = 0.0, float("nan"), float("nan"), float("-inf"), 0.0
    collector = agent = None
    try:  # everything from here on ends in summary.json, failures before the first iteration included
        collector = make_collector(cfg, T, N)
        agent = build_agent(cfg, collector.observation_space, collector.action_space)
        if tc.vec_env == "subproc":  # the critic fit runs beside the policy update
            agent.value_fitter.use_worker(T * N, pc.value_epochs)
        episodes = collector.episodes
        if checkpoint is None:
            resume.start_fresh(run_dir)
        else:
            resume.truncate_metrics(run_dir, checkpoint["iteration"])
            iteration, env_steps = checkpoint["iteration"], checkpoint["env_steps"]
            counters = checkpoint["training"]["counters"]
            train_time, best_eval, wall_before = counters["train_time"], counters["best_eval"], counters["wall_time"]
        first_iteration = iteration + 1
        logger = RunLogger(cfg, run_dir, tc.total_steps, run_name=f"{cfg.env.id}-seed{tc.seed}",
                           initial_steps=env_steps)
    except BaseException as err:
        _end_before_training(run_dir, cfg.env.id, err, collector, agent)
        raise

    status, error = M.Status.FAILED, None
    start = time.perf_counter() - wall_before
    log.info("training TRPO on %s for %d steps; outputs in %s", cfg.env.id, tc.total_steps, run_dir)
    try:
        if checkpoint is not None:
            agent.load_state_dict(checkpoint["agent"])
            resume.restore(checkpoint["training"], collector, generator)
        for iteration in range(first_iteration, num_iterations(tc) + 1):
            t0 = time.perf_counter()
            version = iteration - 1  # pi_old: the policy after iteration - 1 updates
            rollout = collector.collect(agent, version)
            env_steps += T * N

            adv, returns, values = advantages_and_returns(rollout, agent.value, pc.gamma, pc.gae_lambda)
            flat_adv = adv.reshape(-1)
            if pc.normalize_advantages:
                flat_adv = (flat_adv - flat_adv.mean()) / (flat_adv.std() + 1e-8)
            flat_obs = rollout.obs.reshape(T * N, -1)
            # The critic fit (docs/design.md, step 4) never reads the policy: started here, it
            # runs when its result is asked for, or beside the policy update (see ValueFitter.start).
            fit = agent.value_fitter.start(flat_obs, returns.reshape(-1), pc.value_epochs, pc.value_minibatch,
                                           generator)
            batch = Batch(
                obs=torch.from_numpy(flat_obs),
                actions=torch.from_numpy(rollout.actions.reshape(T * N, *rollout.actions.shape[2:])),
                behaviour_logp=torch.from_numpy(rollout.behaviour_logp.reshape(-1).astype(np.float32)),
                advantages=torch.from_numpy(flat_adv.astype(np.float32)),
                behaviour_dist=rollout.behaviour_dist,
            ).to(tc.device)
            stats: UpdateStats = trpo_update(agent.policy, batch, pc)
            lags = rollout.lags(version)
            last = iteration == num_iterations(tc)
            # The final evaluation is the last row's, so curves and tables end on it.
            evaluates = last or (bool(tc.eval_every) and iteration % tc.eval_every == 0)
            checkpoints = iteration % tc.checkpoint_every == 0 or last
            value_loss = _finish_value_fit(fit, pc.value_epochs)
            if not all(torch.isfinite(p).all() for p in agent.policy.parameters()):
                raise DivergedError("policy parameters became non-finite")
            collector.policy_updated(agent, version + 1)
            iter_time = time.perf_counter() - t0
            train_time += iter_time

            if not stats.line_search_success:
                log.debug("iteration %d: line search found no acceptable step; policy kept", iteration)
            ep_returns = [r for r, _ in episodes]
            row = {
                M.ITERATION: iteration,
                M.ENV_STEPS: env_steps,
                M.WALL_TIME: time.perf_counter() - start,
                M.EP_RETURN: _mean(ep_returns),
                M.EP_LEN: _mean([n for _, n in episodes]),
                M.KL: stats.kl,
                M.KL_LIMIT: pc.delta,
                M.SURROGATE_GAIN: stats.surrogate_gain,
                M.LINE_SEARCH_STEPS: stats.line_search_steps,
                M.LINE_SEARCH_SUCCESS: int(stats.line_search_success),
                M.STEP_FRACTION: stats.step_fraction,
                M.CG_RESIDUAL: stats.cg_residual,
                M.ENTROPY: stats.entropy,
                M.VALUE_LOSS: value_loss,
                M.EXPLAINED_VARIANCE: explained_variance(values.reshape(-1), returns.reshape(-1)),
                M.STEPS_PER_S: T * N / iter_time,
                M.POLICY_LAG_MEAN: float(lags.mean()),
                M.POLICY_LAG_MAX: int(lags.max()),
                M.BEHAVIOUR_KL: stats.behaviour_kl,
                M.IS_RATIO_MAX: stats.is_ratio_max,
                M.IS_ESS: stats.is_ess,
            }
            prune = False
            if evaluates:
                eval_return, eval_std = _evaluate(cfg, agent)
                if eval_return > best_eval:  # the best-evaluated policy, for `evaluate --checkpoint best`
                    best = _checkpoint_state(cfg, agent, iteration, env_steps)
                    best["eval_return"], best["eval_return_std"] = eval_return, eval_std
                    save_checkpoint(run_dir, best, BEST)
                best_eval = max(best_eval, eval_return)
                row[M.EVAL_RETURN], row[M.EVAL_RETURN_STD] = eval_return, eval_std
                prune = not last and on_eval is not None and on_eval(env_steps, eval_return)
            logger.log(row)
            if checkpoints:
                state = _checkpoint_state(cfg, agent, iteration, env_steps)
                state["training"] = resume.capture(collector, generator, {
                    "train_time": train_time, "best_eval": best_eval,
                    "wall_time": time.perf_counter() - start})
                save_checkpoint(run_dir, state)
            if prune:
                raise PruneRequested

        if first_iteration > num_iterations(tc):  # resumed a finished run: evaluate it again
            eval_return, eval_std = _evaluate(cfg, agent)
            best_eval = max(best_eval, eval_return)
        status = M.Status.COMPLETED
        log.info("finished: eval return %.1f +- %.1f over %d episodes", eval_return, eval_std, tc.eval_episodes)
    except PruneRequested:
        status = M.Status.PRUNED
    except KeyboardInterrupt as err:
        status, error = M.Status.INTERRUPTED, f"interrupted ({err or 'KeyboardInterrupt'})"
        raise
    except Exception as err:
        status, error = M.Status.FAILED, f"{type(err).__name__}: {err}"
        raise
    finally:
        collector.close()
        agent.value_fitter.close()
        ep_returns = [r for r, _ in episodes]
        summary = {
            M.Summary.ENV_ID: cfg.env.id,
            M.Summary.ENV_STEPS: env_steps,
            M.Summary.ITERATIONS: iteration,
            M.Summary.WALL_TIME: time.perf_counter() - start,
            M.Summary.STEPS_PER_S: env_steps / train_time if train_time > 0 else 0.0,
            M.Summary.TRAIN_RETURN_LAST10: _mean(ep_returns[-10:]),
            M.Summary.EVAL_RETURN: eval_return,
            M.Summary.EVAL_RETURN_STD: eval_std,
            M.Summary.BEST_EVAL_RETURN: best_eval if math.isfinite(best_eval) else float("nan"),
            M.Summary.STATUS: status,
        }
        summary[M.Summary.OBJECTIVE] = summary[tc.objective]
        if error is not None:
            summary[M.Summary.ERROR] = error
        _write_summary(run_dir, summary, logger)
    return summary


def _end_before_training(run_dir: Path, env_id: str, err: BaseException, collector, agent) -> None:
    """The ending of a run that failed before its first iteration (an environment that cannot be
    built or is not supported, a metrics.jsonl that cannot be written): close what was started and
    record the failure in summary.json, replacing whatever summary an earlier run left there."""
    if collector is not None:
        collector.close()
    if agent is not None:
        agent.value_fitter.close()
    status = M.Status.INTERRUPTED if isinstance(err, KeyboardInterrupt) else M.Status.FAILED
    summary = failed_summary(env_id, f"{type(err).__name__}: {err}")
    summary[M.Summary.STATUS] = status
    _write_summary(run_dir, summary, None)


def _write_summary(run_dir: Path, summary: dict[str, Any], logger: Optional[RunLogger]) -> None:
    """Write summary.json (through the logger, which also closes wandb, when there is one).

    Half-written temporaries (a checkpoint save cut short by a full disk) are removed
    first, so the summary has room. If even the summary cannot be written, the
    error is logged; it is raised only when the run itself had not already failed.
    """
    remove_temporaries(run_dir)
    try:
        if logger is not None:
            logger.finish(summary)
        else:
            write_json_atomic(Path(run_dir) / "summary.json", summary)
    except OSError as err:
        log.error("could not write %s: %s", Path(run_dir) / "summary.json", err)
        if summary[M.Summary.STATUS] == M.Status.COMPLETED:
            raise


def _checkpoint_state(cfg: Config, agent: Agent, iteration: int, env_steps: int) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return {
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
        "agent": agent.state_dict(),
        "iteration": iteration,
        "env_steps": env_steps,
    }
