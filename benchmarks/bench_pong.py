"""Pong from pixels: trpo_lab's training steps/s against sb3-contrib's TRPO with CnnPolicy, side by side.

    pip install -e '.[atari,bench]'     # ale-py, OpenCV, sb3-contrib 2.9.2 (its own virtualenv)
    python benchmarks/bench_pong.py --steps 8192 --repeats 3
    python benchmarks/bench_pong.py --steps 8192 --device cuda      # both on the GPU

Both see the same environments: ALE/Pong-v5 with frameskip=1 and no sticky
actions, gymnasium's AtariPreprocessing (84x84 grey, frame skip 4, no-op
starts, a lost life ends the training episode) and FrameStackObservation(4),
[4, 84, 84] uint8 (channels first, which sb3 takes as is), n_envs environments
stepped in one process. Both learn with the Nature CNN and a 512-unit head,
policy and critic separate (sb3: share_features_extractor=False; sharing
would let TRPO's step move the critic's features), and the same TRPO settings:
steps_per_iter, delta (target_kl), cg_iters (cg_max_steps), cg_damping,
gamma, gae_lambda, critic Adam lr, epochs and minibatch. sb3-contrib's KL is
the per-dimension mean, which for one categorical is the same KL.

Each run is its own child process with one torch thread; kinds alternate
within a repeat and the ratio is taken within a repeat (the median over
repeats is printed), as in bench_vs_sb3.py. steps/s is environment steps over
the wall time of `learn` / `train`'s iterations (trpo_lab's final evaluation,
one game, is outside it; sb3 has none).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SETTINGS = dict(n_envs=8, steps_per_iter=1024, delta=0.01, cg_iters=10, cg_damping=0.1, gamma=0.99, gae_lambda=0.95,
                value_lr=1e-3, value_epochs=3, value_minibatch=256)


def _atari_env(training: bool = True):
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    env = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=training,
                             grayscale_obs=True, scale_obs=False)
    return FrameStackObservation(env, 4)


def run_trpo_lab(steps: int, seed: int, device: str) -> dict:
    sys.path.insert(0, str(REPO))
    from trpo_lab.config import (Config, EnvConfig, LoggerConfig, NetworkConfig, TrainerConfig, TRPOConfig,
                                 WandbConfig)
    from trpo_lab.trainer import train

    s = SETTINGS
    cfg = Config(
        env=EnvConfig(id="ALE/Pong-v5", kwargs={"frameskip": 1, "repeat_action_probability": 0.0},
                      preprocess="atari"),
        network=NetworkConfig(type="nature_cnn", hidden=[512], activation="relu"),
        trpo=TRPOConfig(delta=s["delta"], cg_iters=s["cg_iters"], cg_damping=s["cg_damping"], gamma=s["gamma"],
                        gae_lambda=s["gae_lambda"], value_lr=s["value_lr"], value_epochs=s["value_epochs"],
                        value_minibatch=s["value_minibatch"]),
        trainer=TrainerConfig(total_steps=steps, steps_per_iter=s["steps_per_iter"], n_envs=s["n_envs"], seed=seed,
                              eval_every=0, eval_episodes=1, progress=False, checkpoint_every=10_000, device=device),
        logger=LoggerConfig(wandb=WandbConfig(mode="disabled")))
    summary = train(cfg, Path(tempfile.mkdtemp()) / "run")
    return {"steps_per_s": summary["steps_per_s"], "train_return_last10": summary["train_return_last10"]}


def run_sb3(steps: int, seed: int, device: str) -> dict:
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    s = SETTINGS
    venv = VecMonitor(DummyVecEnv([_atari_env] * s["n_envs"]))
    model = TRPO("CnnPolicy", venv, n_steps=s["steps_per_iter"] // s["n_envs"], batch_size=s["value_minibatch"],
                 gamma=s["gamma"], gae_lambda=s["gae_lambda"], cg_max_steps=s["cg_iters"], cg_damping=s["cg_damping"],
                 n_critic_updates=s["value_epochs"], learning_rate=s["value_lr"], target_kl=s["delta"],
                 normalize_advantage=True, policy_kwargs={"share_features_extractor": False}, seed=seed,
                 device=device, verbose=0)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    returns = [ep["r"] for ep in model.ep_info_buffer]
    return {"steps_per_s": model.num_timesteps / elapsed,
            "train_return_last10": float(np.mean(returns[-10:])) if returns else float("nan")}


def child(kind: str, steps: int, seed: int, device: str) -> dict:
    """Run one kind in a fresh process with one torch thread; its result, or why it could not run."""
    code = (f"import json, sys, torch; torch.set_num_threads(1); sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
            f"import bench_pong as b; print('RESULT ' + json.dumps(b.run_{kind}({steps}, {seed}, {device!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", default=["trpo_lab", "sb3"], choices=["trpo_lab", "sb3"])
    args = parser.parse_args()
    results: dict[str, list[dict]] = {k: [] for k in args.only}
    for r in range(args.repeats):
        for kind in (args.only if r % 2 == 0 else args.only[::-1]):
            results[kind].append(child(kind, args.steps, args.seed, args.device))
            print(f"repeat {r} {kind}: {results[kind][-1]}", flush=True)
    print(f"\nPong, {args.steps} steps, device {args.device}, settings {SETTINGS}")
    print(f"{'kind':10} {'best steps/s':>12} {'mean steps/s':>12}")
    for kind, runs in results.items():
        rates = [x["steps_per_s"] for x in runs if "steps_per_s" in x]
        if rates:
            print(f"{kind:10} {max(rates):12.1f} {np.mean(rates):12.1f}")
        else:
            print(f"{kind:10} {'did not run: ' + runs[0].get('error', '?')}")
    if set(args.only) == {"trpo_lab", "sb3"}:
        ratios = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(results["trpo_lab"], results["sb3"])
                  if "steps_per_s" in a and "steps_per_s" in b]
        if ratios:
            print(f"trpo_lab / sb3 steps/s, median of {len(ratios)} paired repeats: {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
