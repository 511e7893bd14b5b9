"""Evaluating a policy: the episodes behind every evaluation return, and the command that replays a run.

`episode_returns` (episodes of `run_episode`) is the one evaluation: the trainer's
periodic and final evaluations call it, and so does this command.

`python -m trpo_lab.evaluate RUN_DIR`: replay a trained policy from its checkpoint.

Loads `RUN_DIR/checkpoints/last.pt` as data only (checkpoint.py; a damaged
one falls back to `previous.pt` or is one line naming the file) (`--checkpoint best`: `best.pt`, the policy
of the run's best evaluation; each holds the policy, its observation normaliser
and the run's own config), runs N episodes seeded seed, seed+1, ..., and prints
their mean and spread. Episodes are as the run evaluated: deterministic (the
policy's mean or most likely action) unless it set `trainer.eval_stochastic`
(actions sampled from the policy, with the episode's seed); `--stochastic` and
`--deterministic` choose. The numbers are also written to `RUN_DIR/evaluation.json`.

With a renderer it also saves a video of the first episode under
`RUN_DIR/videos/` (MP4 with imageio-ffmpeg, else GIF). MuJoCo tasks render
headless through EGL or OSMesa (the first that loads, or the user's
MUJOCO_GL); classic-control tasks need pygame. Without one it says so and
still evaluates.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import gymnasium as gym
import numpy as np

from trpo_lab.actor import NumpyActor
from trpo_lab.checkpoint import LAST, NAMES, CheckpointError, checkpoint_path, load_checkpoint
from trpo_lab.config import Config, eval_seed, to_config
from trpo_lab.envs import make_env
from trpo_lab.loggers import write_json_atomic
from trpo_lab.normalisation import ObsNormalizer
from trpo_lab.torch_actor import TorchActor

if TYPE_CHECKING:
    from trpo_lab.trainer import Agent

MAX_VIDEO_FRAMES = 1000
VIDEO_SIZE = 240  # pixels, MuJoCo tasks (env.kwargs width/height override it)


def _is_mujoco(env_id: str) -> bool:
    import gymnasium as gym

    try:
        return "mujoco" in str(gym.spec(env_id).entry_point)
    except Exception:
        return False


def choose_mujoco_gl(want_video: bool) -> Optional[str]:
    """Set MUJOCO_GL before mujoco is first imported; returns why rendering is off, or None.

    mujoco reads MUJOCO_GL once, at import, and an import with a backend whose
    library is missing fails outright (not only rendering), so each candidate
    (the user's MUJOCO_GL, else EGL then OSMesa) is tried in a child process first.
    Without a working one, rendering is disabled and evaluation goes on.
    """
    if "mujoco" in sys.modules:
        return None  # too late to choose; rendering will say whether it works
    if not want_video:
        os.environ["MUJOCO_GL"] = "disable"
        return None
    user = os.environ.get("MUJOCO_GL")
    for backend in [user] if user else ["egl", "osmesa"]:
        probe = subprocess.run([sys.executable, "-c", "import mujoco"], env={**os.environ, "MUJOCO_GL": backend},
                               capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            os.environ["MUJOCO_GL"] = backend
            return None
    os.environ["MUJOCO_GL"] = "disable"
    tried = f"MUJOCO_GL={user}" if user else "MUJOCO_GL=egl and MUJOCO_GL=osmesa"
    return f"mujoco cannot load an OpenGL backend ({tried})"


def load_agent(run_dir: Path, name: str = LAST) -> tuple[Config, Agent, dict[str, Any]]:
    """(the run's config, its agent as checkpointed, the checkpoint) of checkpoints/<name>."""
    from omegaconf import OmegaConf

    from trpo_lab.trainer import build_agent  # the trainer imports this module

    checkpoint = load_checkpoint(run_dir, name)
    cfg = to_config(OmegaConf.create(checkpoint["config"]))
    env = make_env(cfg.env)
    try:
        agent = build_agent(cfg, env.observation_space, env.action_space)
    finally:
        env.close()
    agent.load_state_dict(checkpoint["agent"])
    return cfg, agent, checkpoint


def run_episode(env: gym.Env, actor: NumpyActor | TorchActor, obs_norm: ObsNormalizer, seed: int,
                frames: Optional[list] = None, stochastic: bool = False) -> float:
    """Return of one episode from env.reset(seed=seed): the deterministic policy (the Gaussian
    mean, the most likely action), or with `stochastic` actions sampled from it, its randomness
    from numpy's Generator seeded `seed`. With `frames`, appends env.render() after the reset
    and after every step."""
    box = isinstance(env.action_space, gym.spaces.Box)
    rng = np.random.default_rng(seed) if stochastic else None
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    if frames is not None:
        frames.append(env.render())
    while not done:
        normalised = obs_norm(np.asarray(obs, dtype=np.float64)[None])
        if stochastic:
            noise, _ = actor.noise(rng, 1, 1)
            action = actor.sample(normalised, noise[0])[0][0]
        else:
            action = actor.deterministic(normalised)[0]
        if box:
            action = np.clip(action, env.action_space.low, env.action_space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
        if frames is not None:
            frames.append(env.render())
    return total


def episode_returns(cfg: Config, agent: Agent, episodes: int, seed: int, stochastic: bool = False) -> list[float]:
    """The returns of `episodes` episodes of the agent's policy, seeded seed, seed + 1, ... (run_episode).

    The trainer's evaluations (eval/return_mean, summary.json's eval_return) and this
    command's are this function, so `evaluate` of a final checkpoint at the run's
    evaluation seed reproduces the run's final evaluation.
    """
    env = make_env(cfg.env, training=False)
    actor = agent.policy.actor()
    try:
        return [run_episode(env, actor, agent.obs_norm, seed + ep, stochastic=stochastic) for ep in range(episodes)]
    finally:
        env.close()


def record_video(cfg: Config, agent: Agent, seed: int, out_dir: Path,
                 gl_problem: Optional[str] = None, stochastic: bool = False) -> tuple[Optional[Path], str]:
    """(video path or None, a sentence saying what happened). Never raises."""
    if gl_problem and _is_mujoco(cfg.env.id):
        return None, f"no renderer available: {gl_problem}"
    kwargs = {"render_mode": "rgb_array"}
    if _is_mujoco(cfg.env.id):  # software GL renders 480x480 at a few frames per second
        kwargs.update(width=VIDEO_SIZE, height=VIDEO_SIZE)
    try:
        env = make_env(replace(cfg.env, kwargs={**kwargs, **cfg.env.kwargs}), training=False)
    except Exception as err:
        return None, f"no renderer available: the environment cannot render ({err})"
    frames: list = []
    try:
        run_episode(env, agent.policy.actor(), agent.obs_norm, seed, frames, stochastic=stochastic)
    except Exception as err:
        gl = os.environ.get("MUJOCO_GL")
        return None, (f"no renderer available ({type(err).__name__}: {err}; MUJOCO_GL={gl}; "
                      "MuJoCo needs EGL or OSMesa, classic control needs pygame)")
    finally:
        env.close()
    frames = [f for f in frames if f is not None][:MAX_VIDEO_FRAMES]
    if not frames:
        return None, "no renderer available: the environment rendered no frames"
    try:
        import imageio.v2 as imageio
    except ImportError:
        return None, "frames rendered but no video writer: pip install imageio (and imageio-ffmpeg for MP4)"
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = int(_fps(cfg))
    try:
        import imageio_ffmpeg  # noqa: F401

        path = out_dir / f"eval-seed{seed}.mp4"
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    except ImportError:  # GIF through Pillow, every other frame to stay small
        path = out_dir / f"eval-seed{seed}.gif"
        imageio.mimwrite(path, frames[::2], duration=2000 / fps, loop=0)
    return path, f"video of the episode with seed {seed}: {path} ({len(frames)} frames)"


def _fps(cfg: Config) -> float:
    fps = None
    try:
        import gymnasium as gym

        fps = gym.spec(cfg.env.id).kwargs.get("render_fps")
    except Exception:
        pass
    return fps or 30


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trpo_lab.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("-n", "--episodes", type=int, default=10, help="episodes (default 10)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the first episode (default: the run's evaluation seed, trainer.seed + 10000)")
    parser.add_argument("--checkpoint", choices=tuple(NAMES), default="last",
                        help="last: the end of training (default); best: the policy of the best evaluation")
    policy = parser.add_mutually_exclusive_group()
    policy.add_argument("--stochastic", action="store_true",
                        help="sample actions from the policy instead of taking its mean or most likely action "
                             "(default: as the run evaluated, trainer.eval_stochastic)")
    policy.add_argument("--deterministic", action="store_true",
                        help="the policy's mean or most likely action, whatever trainer.eval_stochastic says")
    parser.add_argument("--no-video", action="store_true", help="do not try to render")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes={args.episodes} is invalid: must be >= 1")
    path = checkpoint_path(args.run_dir, NAMES[args.checkpoint])
    if not path.is_file():
        why = " (runs keep best.pt from their first evaluation on)" if args.checkpoint == "best" else ""
        print(f"trpo_lab.evaluate: error: no checkpoint at {path}{why}", file=sys.stderr)
        return 2
    gl_problem = choose_mujoco_gl(want_video=not args.no_video)
    try:
        cfg, agent, checkpoint = load_agent(args.run_dir, NAMES[args.checkpoint])
    except CheckpointError as err:  # damaged, or not data we accept (checkpoint.py): one line, never a traceback
        print(f"trpo_lab.evaluate: error: {err}", file=sys.stderr)
        return 2
    seed = eval_seed(cfg.trainer) if args.seed is None else args.seed
    stochastic = args.stochastic or (cfg.trainer.eval_stochastic and not args.deterministic)
    returns = episode_returns(cfg, agent, args.episodes, seed, stochastic)
    policy = "stochastic" if stochastic else "deterministic"
    result = {
        "env_id": cfg.env.id, "checkpoint": args.checkpoint, "policy": policy,
        "iteration": checkpoint["iteration"], "env_steps": checkpoint["env_steps"],
        "episodes": args.episodes, "seed": seed, "returns": returns,
        "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
        "return_min": float(np.min(returns)), "return_max": float(np.max(returns)),
    }
    print(f"{cfg.env.id}, {args.checkpoint} checkpoint, after {checkpoint['env_steps']} env steps (iteration "
          f"{checkpoint['iteration']}): {policy} return {result['return_mean']:.2f} +- {result['return_std']:.2f} "
          f"(std) over {args.episodes} episodes, min {result['return_min']:.2f}, max {result['return_max']:.2f}")
    if args.no_video:
        result["video"] = None
    else:
        video, message = record_video(cfg, agent, seed, args.run_dir / "videos", gl_problem, stochastic)
        result["video"] = str(video) if video else None
        print(message)
    write_json_atomic(args.run_dir / "evaluation.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
