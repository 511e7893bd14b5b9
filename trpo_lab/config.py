"""Typed configuration: the dataclasses behind `conf/`, and their validation.

Each YAML group in `conf/` (env, network, trpo, trainer, logger) is typed by one
dataclass here, registered in Hydra's ConfigStore as that group's schema, so a
mistyped key or a string where a number belongs is rejected by Hydra itself.
`validate` checks the ranges a type cannot express, before any environment is
built. Derived sizes live in `steps_per_env` and friends, never as stored fields.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from trpo_lab import metrics as M
from trpo_lab.activations import NAMES as ACTIVATIONS


class ConfigError(ValueError):
    """A config value outside what trpo_lab accepts; the message names the key."""


@dataclass
class EnvConfig:
    id: str = MISSING
    # Keyword arguments for gymnasium.make (for example `{frame_skip: 4}`).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # None keeps the task's own time limit.
    max_episode_steps: Optional[int] = None
    # "none", or "atari": gymnasium's AtariPreprocessing (84x84 grey, frame skip 4, up to
    # 30 no-op starts, a life lost ends a training episode) and FrameStackObservation(4).
    # Build the ALE env with frameskip=1 (env.kwargs) so that only the wrapper skips.
    preprocess: str = "none"


@dataclass
class NetworkConfig:
    # auto: nature_cnn for image observations, else mlp (trpo_lab/networks.py).
    type: str = "auto"
    # The MLP's hidden widths (for nature_cnn: the head after the conv stack).
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    # Initial log standard deviation of the Gaussian policy (Box actions only).
    log_std_init: float = 0.0
    # Orthogonal initialisation (gain sqrt(2) hidden, 0.01 policy head, 1 value head).
    ortho_init: bool = True


@dataclass
class TRPOConfig:
    delta: float = 0.01
    cg_iters: int = 25
    cg_damping: float = 0.1
    # Fraction of the batch the Fisher-vector products average over (every k-th sample,
    # k = round(1 / fisher_fraction)), a cheaper estimate of the same average over
    # states; 1 uses the whole batch. The gradient and the line search always use the
    # whole batch.
    fisher_fraction: float = 1.0
    gae_lambda: float = 0.95
    gamma: float = 0.99
    backtrack_iters: int = 10
    backtrack_coeff: float = 0.8
    normalize_advantages: bool = True
    # Running mean/std of observations, saved with the policy.
    normalize_obs: bool = True
    # Divide rewards by the running standard deviation of the discounted return.
    normalize_reward: bool = True
    # Value function fit (Adam on minibatches of the GAE returns).
    value_lr: float = 1e-3
    value_epochs: int = 20
    value_minibatch: int = 128
    # Adam's epsilon for the critic: stable-baselines3's 1e-5 (torch's default is 1e-8).
    value_adam_eps: float = 1e-5
    # How the surrogate corrects for a behaviour policy beta older than pi_old
    # (docs/off_policy.md): "importance" pi_theta / beta (TRPO eq. 14), "truncated"
    # min(pi_old / beta, is_clip) * pi_theta / pi_old (ACER, IMPALA), "none" pi_theta / pi_old.
    off_policy_correction: str = "importance"
    # The truncation of pi_old / beta under off_policy_correction=truncated (>= 1).
    is_clip: float = 1.0


@dataclass
class TrainerConfig:
    total_steps: int = 1_000_000
    # Environment steps per TRPO update, summed over the n_envs environments.
    steps_per_iter: int = 2048
    n_envs: int = 2
    # "sync": all environments in this process. "subproc": worker processes, one per
    # core beyond the first, step a share of the environments in parallel with this
    # process's share, and the critic fit runs in a worker beside the policy update;
    # the numbers are the same as sync's.
    vec_env: str = "sync"
    # "sync": collect, then update, in turn. "async": rollout worker processes step
    # the environments continuously with the newest policy they have received while
    # this process updates on each batch as soon as it is complete (docs/off_policy.md).
    collection: str = "sync"
    # async: rollout worker processes (each steps a share of the n_envs environments);
    # null: one per core, at most n_envs.
    rollout_workers: Optional[int] = None
    # sync: update k learns from a batch collected by the policy of update k - policy_lag
    # (deterministic staleness; 0: beta = pi_old, the on-policy algorithm).
    policy_lag: int = 0
    seed: int = 0
    # Evaluate every this many iterations (0: only at the end of the run).
    eval_every: int = 25
    eval_episodes: int = 10
    # Evaluate the policy's sampled actions instead of its mean or most likely action. For games
    # such as Breakout, where a deterministic policy that never presses FIRE after a lost life
    # plays on without the ball until the emulator's limit (27k steps a game).
    eval_stochastic: bool = False
    # torch intra-op threads and numpy BLAS threads; 1 is fastest for these small networks.
    threads: int = 1
    # Save a checkpoint every this many iterations (the last one is always saved).
    checkpoint_every: int = 10
    # Summary field returned to the sweeper: eval_return, best_eval_return or
    # train_return_last10.
    objective: str = M.Summary.EVAL_RETURN
    # Show a progress bar when the terminal is interactive.
    progress: bool = True
    # auto: continue from the run directory's checkpoint if it has one (rerun with
    # the same hydra.run.dir); never: start fresh; a path: continue that run, in
    # that directory, with its stored config. See trpo_lab/resume.py.
    resume: Optional[str] = "auto"
    # Where the policy update (and a CNN policy's acting) runs: cpu or cuda (cuda:N).
    device: str = "cpu"


@dataclass
class WandbConfig:
    mode: str = "offline"
    project: str = "trpo_lab"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    name: Optional[str] = None


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_configs() -> None:
    """Register the root dataclass (conf/config.yaml lists it first in its defaults) and the
    `trpo_lab.task` resolver that names multirun folders."""
    ConfigStore.instance().store(name="config_schema", node=Config)
    if not OmegaConf.has_resolver("trpo_lab.task"):
        OmegaConf.register_new_resolver("trpo_lab.task", task_name)


def task_name(env_id: str, overrides: Any = ()) -> str:
    """The task a multirun runs, for its folder name as single runs have (`outputs/<env id>/...`):
    the env id, or the swept envs joined by '+' when the command sweeps `env` or `env.id`."""
    for item in overrides or ():
        key, _, value = str(item).partition("=")
        if key.lstrip("+~") in ("env", "env.id") and ("," in value or "(" in value):
            inner = value[value.find("(") + 1:value.rfind(")")] if "(" in value else value
            names = [v.strip().strip("'\"") for v in inner.split(",") if v.strip()]
            return "+".join(n.replace("/", "_").replace(":", "_") for n in names) or "envs"
    return str(env_id).replace("/", "_").replace(":", "_")


# -- The config as dotted keys, and which keys are not settings.

# Keys, or groups of keys, that say where, how or as which seed or sweep trial a run runs, not
# what it computes: left out of wandb names and of the report's configurations (whose runs
# then differ only in these, as seeds).
BOOKKEEPING = ("trainer.seed", "trainer.resume", "trainer.progress", "trainer.threads", "trainer.vec_env",
               "logger", "trial", "hydra", "sweep")
# Keys that the command continuing a run may set apart from the checkpoint's config: how this
# process runs, always; with trainer.resume=auto (the same command again) also where the
# numbers go and how long to train (to extend a run). trpo_lab/resume.py.
RESUME_MAY_CHANGE = {"path": ("trainer.resume", "trainer.progress"),
                     "auto": ("trainer.resume", "trainer.progress", "logger", "trainer.total_steps")}


def is_under(key: str, keys: Iterable[str]) -> bool:
    """Whether dotted `key` is one of `keys` or inside one of them (a group such as `logger`)."""
    return any(key == k or key.startswith((k + ".", k + "/")) for k in keys)


def is_bookkeeping(key: str) -> bool:
    return is_under(key, BOOKKEEPING)


def flat_config(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """The config as dotted keys: {'trpo.delta': 0.01, 'network.hidden': (64, 64), ...}, lists as tuples.

    `cfg`: a Config, or a plain container such as a run's `.hydra/config.yaml` as loaded
    (interpolations left unresolved). Used for wandb's config, the report's settings and
    resume's comparison of configs.
    """
    node = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True) if isinstance(cfg, Config) else cfg
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = tuple(node) if isinstance(node, list) else node

    walk("", node)
    return out


VEC_ENVS = ("sync", "subproc")
COLLECTIONS = ("sync", "async")
CORRECTIONS = ("importance", "truncated", "none")
WANDB_MODES = ("offline", "online", "disabled")
NETWORKS = ("auto", "mlp", "nature_cnn")  # trpo_lab/networks.py
PREPROCESS = ("none", "atari")


def to_config(cfg: DictConfig | Config) -> Config:
    """The typed object behind a composed DictConfig (Hydra's own `hydra` node dropped).

    Raises ConfigError for a key the schema does not have: Hydra lets `+trpo.new=1`
    add one, and the typed object would silently leave it out.
    """
    if isinstance(cfg, Config):
        return cfg
    schema = OmegaConf.structured(Config)
    unknown = next(_unknown_keys(cfg, schema, Config, ""), None)
    if unknown is not None:
        raise ConfigError(unknown_setting(*unknown))
    merged = OmegaConf.merge(schema, {k: cfg[k] for k in cfg if k != "hydra"})
    return OmegaConf.to_object(merged)


def _unknown_keys(node: DictConfig, schema: DictConfig, cls: type, prefix: str):
    """(full key, the keys there are) for each key of `node` that dataclass `cls` lacks, depth first.

    Free-form dicts in the schema (env.kwargs) take any key.
    """
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in node.keys():
        if not prefix and key == "hydra":
            continue
        if key not in fields:
            yield prefix + str(key), fields
            continue
        child_cls = OmegaConf.get_type(schema, key)
        if dataclasses.is_dataclass(child_cls) and isinstance(node[key], DictConfig):
            yield from _unknown_keys(node[key], schema[key], child_cls, f"{prefix}{key}.")


def unknown_setting(full_key: str, known: Iterable[str]) -> str:
    """The message for a key the config does not have: the closest ones, and all there are."""
    known = list(known)
    prefix, _, key = full_key.rpartition(".")
    prefix = prefix + "." if prefix else ""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(prefix + k for k in close)}? " if close else ""
    where = f"in {prefix[:-1]}" if prefix else "at the top level"
    return f"{full_key} is not a setting; {hint}the settings {where} are {', '.join(known)}"


def steps_per_env(trainer: TrainerConfig) -> int:
    """Rollout length T of each environment in one iteration."""
    return trainer.steps_per_iter // trainer.n_envs


# Evaluation episode i of a run is seeded trainer.seed + EVAL_SEED_OFFSET + i: apart from
# the training environments' seeds (trainer.seed + env index).
EVAL_SEED_OFFSET = 10_000


def eval_seed(trainer: TrainerConfig) -> int:
    """The seed of a run's first evaluation episode."""
    return trainer.seed + EVAL_SEED_OFFSET


def num_iterations(trainer: TrainerConfig) -> int:
    """Updates needed to reach total_steps (the last batch may overshoot)."""
    return max(1, math.ceil(trainer.total_steps / trainer.steps_per_iter))


# Upper bounds on the settings that multiply the work of one iteration, so that a typo
# (`trpo.cg_iters=100000`, `trpo.backtrack_iters=100000000`) is refused up front instead of
# leaving a run stuck in its first iteration. Each is far above any setting in use:
# - cg_iters: the papers and rl-zoo3 use 10-25 Fisher-vector products per update; past a few
#   hundred the CG residual is at float32 round-off, so more only burns time (1000: 40x the default).
# - backtrack_iters: the smallest step tried is backtrack_coeff**backtrack_iters of the full one;
#   with the default 0.8, 200 backtracks reach 4e-20 of the first step, below float32 resolution.
# - value_epochs: each is a full pass over the batch; 1000 is 50x the default 20.
# - steps_per_iter: the batch (observations, actions, advantages, the value fit's copies) is held
#   in memory several times over; 2**20 steps of Humanoid-v5's 348-dim observation are ~3 GB in float64.
# - n_envs: each environment is an object (or a share of a worker process) of its own.
# - policy_lag: a copy of the policy's parameters is kept per step of lag.
MAX_CG_ITERS = 1000
MAX_BACKTRACK_ITERS = 200
MAX_VALUE_EPOCHS = 1000
MAX_STEPS_PER_ITER = 2 ** 20
MAX_ENVS = 1024
MAX_POLICY_LAG = 1000
MAX_EVAL_EPISODES = 10_000
MAX_THREADS = 1024


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""

    def check(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={value!r} is invalid: {allowed}")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value)

    t = cfg.trpo
    check(number(t.delta) and t.delta > 0, "trpo.delta", t.delta, "must be a finite number > 0")
    check(1 <= t.cg_iters <= MAX_CG_ITERS, "trpo.cg_iters", t.cg_iters,
          f"must be an integer in [1, {MAX_CG_ITERS}]")
    check(number(t.cg_damping) and t.cg_damping >= 0, "trpo.cg_damping", t.cg_damping, "must be a finite number >= 0")
    check(number(t.fisher_fraction) and 0 < t.fisher_fraction <= 1, "trpo.fisher_fraction", t.fisher_fraction,
          "must be in (0, 1]")
    check(number(t.gae_lambda) and 0 <= t.gae_lambda <= 1, "trpo.gae_lambda", t.gae_lambda, "must be in [0, 1]")
    check(number(t.gamma) and 0 <= t.gamma <= 1, "trpo.gamma", t.gamma, "must be in [0, 1]")
    check(1 <= t.backtrack_iters <= MAX_BACKTRACK_ITERS, "trpo.backtrack_iters", t.backtrack_iters,
          f"must be an integer in [1, {MAX_BACKTRACK_ITERS}]")
    check(number(t.backtrack_coeff) and 0 < t.backtrack_coeff < 1, "trpo.backtrack_coeff", t.backtrack_coeff,
          "must be in (0, 1)")
    check(number(t.value_lr) and t.value_lr > 0, "trpo.value_lr", t.value_lr, "must be a finite number > 0")
    check(0 <= t.value_epochs <= MAX_VALUE_EPOCHS, "trpo.value_epochs", t.value_epochs,
          f"must be an integer in [0, {MAX_VALUE_EPOCHS}]")
    check(t.value_minibatch >= 1, "trpo.value_minibatch", t.value_minibatch, "must be an integer >= 1")
    check(number(t.value_adam_eps) and t.value_adam_eps > 0, "trpo.value_adam_eps", t.value_adam_eps,
          "must be a finite number > 0")
    check(t.off_policy_correction in CORRECTIONS, "trpo.off_policy_correction", t.off_policy_correction,
          f"must be one of {CORRECTIONS}")
    check(number(t.is_clip) and t.is_clip >= 1, "trpo.is_clip", t.is_clip,
          "must be a finite number >= 1 (the largest weight pi_old / beta kept)")

    n = cfg.network
    check(n.type in NETWORKS, "network.type", n.type, f"must be one of {NETWORKS}")
    check(number(n.log_std_init), "network.log_std_init", n.log_std_init, "must be a finite number")
    check(len(n.hidden) >= 1 and all(1 <= w <= 65536 for w in n.hidden), "network.hidden", n.hidden,
          "must be a non-empty list of widths in [1, 65536]")
    check(n.activation in ACTIVATIONS, "network.activation", n.activation, f"must be one of {ACTIVATIONS}")

    r = cfg.trainer
    check(r.total_steps >= 1, "trainer.total_steps", r.total_steps, "must be >= 1")
    check(1 <= r.n_envs <= MAX_ENVS, "trainer.n_envs", r.n_envs, f"must be in [1, {MAX_ENVS}]")
    check(r.steps_per_iter >= r.n_envs and r.steps_per_iter % r.n_envs == 0, "trainer.steps_per_iter",
          r.steps_per_iter, f"must be a positive multiple of trainer.n_envs={r.n_envs}")
    check(r.steps_per_iter <= MAX_STEPS_PER_ITER, "trainer.steps_per_iter", r.steps_per_iter,
          f"must be <= {MAX_STEPS_PER_ITER} (one batch is held in memory several times over)")
    check(r.vec_env in VEC_ENVS, "trainer.vec_env", r.vec_env, f"must be one of {VEC_ENVS}")
    check(r.collection in COLLECTIONS, "trainer.collection", r.collection, f"must be one of {COLLECTIONS}")
    check(0 <= r.policy_lag <= MAX_POLICY_LAG, "trainer.policy_lag", r.policy_lag,
          f"must be an integer in [0, {MAX_POLICY_LAG}] (a copy of the policy is kept per step of lag)")
    check(r.rollout_workers is None or r.rollout_workers >= 1, "trainer.rollout_workers", r.rollout_workers,
          "must be null (one per core) or an integer >= 1")
    if r.collection == "async":
        check(r.rollout_workers is None or 1 <= r.rollout_workers <= r.n_envs, "trainer.rollout_workers",
              r.rollout_workers, f"must be null or in [1, trainer.n_envs={r.n_envs}] with trainer.collection=async "
              "(each rollout worker steps at least one environment)")
        check(r.policy_lag == 0, "trainer.policy_lag", r.policy_lag,
              "must be 0 with trainer.collection=async (there the lag is what the timing gives; "
              "a fixed lag is trainer.collection=sync trainer.policy_lag=K)")
        check(r.vec_env == "sync", "trainer.vec_env", r.vec_env,
              "must be sync with trainer.collection=async (the rollout workers step the environments)")
    check(r.eval_every >= 0, "trainer.eval_every", r.eval_every, "must be >= 0 (0: evaluate at the end only)")
    check(1 <= r.eval_episodes <= MAX_EVAL_EPISODES, "trainer.eval_episodes", r.eval_episodes,
          f"must be in [1, {MAX_EVAL_EPISODES}]")
    check(1 <= r.threads <= MAX_THREADS, "trainer.threads", r.threads, f"must be in [1, {MAX_THREADS}]")
    check(r.checkpoint_every >= 1, "trainer.checkpoint_every", r.checkpoint_every, "must be >= 1")
    check(r.objective in M.OBJECTIVES, "trainer.objective", r.objective, f"must be one of {M.OBJECTIVES}")
    check(r.resume is None or (isinstance(r.resume, str) and r.resume.strip() != ""), "trainer.resume", r.resume,
          "must be auto, never (or null), or the directory of a run with a checkpoint")

    check(isinstance(r.device, str) and (r.device == "cpu" or r.device.split(":")[0] == "cuda"), "trainer.device",
          r.device, "must be cpu, cuda or cuda:N")
    if r.device != "cpu":
        import torch

        check(torch.cuda.is_available(), "trainer.device", r.device,
              "CUDA is not available on this machine (torch.cuda.is_available() is False); use trainer.device=cpu")

    w = cfg.logger.wandb
    check(w.mode in WANDB_MODES, "logger.wandb.mode", w.mode, f"must be one of {WANDB_MODES}")

    e = cfg.env
    check(e.preprocess in PREPROCESS, "env.preprocess", e.preprocess, f"must be one of {PREPROCESS}")
    check(e.max_episode_steps is None or e.max_episode_steps >= 1, "env.max_episode_steps",
          e.max_episode_steps, "must be null or >= 1")
    _check_env_id(e.id)


def _check_env_id(env_id: str) -> None:
    """A registered id, or gymnasium's `module:Id` (the module registers the id when imported)."""
    import importlib

    import gymnasium as gym

    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except Exception as err:
            raise ConfigError(f"env.id={module}:{env_id!r}: cannot import module {module!r} "
                              f"({type(err).__name__}: {err})") from None
    if env_id.startswith("ALE/"):  # ale-py registers the Atari ids when imported
        try:
            import ale_py
        except ImportError as err:
            raise ConfigError(f"env.id={env_id!r} needs ale-py: pip install 'trpo_lab[atari]' ({err})") from None
        gym.register_envs(ale_py)
    try:
        gym.spec(env_id)
    except Exception as err:  # gymnasium raises several error types for unknown ids
        hint = str(err).split("\n")[0]
        raise ConfigError(f"env.id={env_id!r} is not a registered gymnasium environment ({hint})") from None
