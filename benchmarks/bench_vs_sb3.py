"""trpo_lab against sb3-contrib's TRPO, side by side, at the same settings.

    pip install -e '.[bench]'          # sb3-contrib 2.9.2, in its own virtualenv
    python benchmarks/bench_vs_sb3.py --env Hopper-v5 Walker2d-v5 --steps 61440 --subproc --repeats 5
    python benchmarks/bench_vs_sb3.py --env Hopper-v5 Walker2d-v5 --steps 307200 --seeds 0 1 2 \
        --only sb3 trpo_lab --jobs 2

Every run (raw env stepping, sb3-contrib, trpo_lab sync, trpo_lab subproc) is
its own child process of this script, with one torch thread and one BLAS
thread, so peak resident memory (getrusage) is that run's alone and no run
inherits another's warm caches. Runs of one seed go one after another in one
invocation (--jobs 1, the default), so machine load hits all of them alike;
compare the ratios, not the absolute rates, on a shared machine.

On a shared virtual machine other tenants slow runs down, by up to 2x and
for tens of seconds at a time (measured: the same subproc run at 7,394 and
then 4,441 steps/s, a minute apart, no code changed), and the two-core run
most. So every ratio is taken within one repeat, between runs made one after
the other (each repeat runs every kind once, in alternating order), and the
table and the verdicts give the median of those paired ratios over the
repeats (and seeds): one disturbed run moves it little, and a slow spell
that covers a whole repeat cancels in its ratios. The table also shows each
kind's best and mean rate. With --subproc, `raw-parallel` steps the same
envs in one process each, with nothing to share: what the two cores allow
at that moment, the ceiling of any multi-process run.

steps/s is environment steps over the wall time of training, from the first
reset to the end of the last update, logging included, the final evaluation
excluded. Both frameworks are then evaluated the same way: the deterministic
policy (the Gaussian mean) on 10 episodes of a fresh environment seeded
seed + 10000 + episode, observations normalised with the training statistics.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from trpo_lab.config import EVAL_SEED_OFFSET  # noqa: E402

# The settings of both frameworks are rl-zoo3's hyperparams/trpo.yml for the task, as trpo_lab's
# experiment=zoo_<task> preset holds them (trpo_lab/conf/experiment/): trpo_lab composes that preset,
# and sb3-contrib is given the same numbers converted back to its units by `peer_settings`.
#
# sb3-contrib's TRPO measures the KL of its diagonal Gaussian per action
# dimension: `kl_divergence` of a torch `Normal` (not `Independent`) is
# [batch, act_dim] and TRPO takes its `.mean()` over both axes, so the KL it
# bounds by target_kl, and whose Hessian it damps by cg_damping, is the policy's
# KL divided by act_dim. trpo_lab's `delta` bounds the policy's KL itself (the
# sum over dimensions, as in the TRPO paper). The same update in trpo_lab's
# units is delta = target_kl * act_dim and cg_damping = cg_damping * act_dim:
# conjugate gradient then finds the same direction up to scale, the step size
# and the line search's test are the same numbers (benchmarks/check_same_update.py).
PEER_KL_IS_PER_ACTION_DIM = True


def zoo_config(env_id: str, *overrides: str):
    """trpo_lab's composed config of the experiment=zoo_<task> preset whose env is `env_id`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trpo_lab.config import register_configs, to_config, validate

    conf = REPO / "trpo_lab" / "conf"
    register_configs()
    for preset in sorted((conf / "experiment").glob("zoo_*.yaml")):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf), version_base=None):
            cfg = compose(config_name="config", overrides=[f"experiment={preset.stem}", *overrides])
        if cfg.env.id == env_id:
            typed = to_config(cfg)
            validate(typed)
            return typed, preset.stem
    raise SystemExit(f"no experiment=zoo_* preset for {env_id} in {conf / 'experiment'}")


def peer_settings(cfg, act_dim: int) -> dict:
    """sb3-contrib's TRPO arguments holding the same settings as trpo_lab's config `cfg`."""
    scale = act_dim if PEER_KL_IS_PER_ACTION_DIM else 1
    t, r, n = cfg.trpo, cfg.trainer, cfg.network
    return dict(
        n_envs=r.n_envs, n_steps=r.steps_per_iter // r.n_envs, gamma=t.gamma, gae_lambda=t.gae_lambda,
        target_kl=round(t.delta / scale, 12), cg_max_steps=t.cg_iters, cg_damping=round(t.cg_damping / scale, 12),
        line_search_shrinking_factor=t.backtrack_coeff, line_search_max_iter=t.backtrack_iters,
        n_critic_updates=t.value_epochs, learning_rate=t.value_lr, batch_size=t.value_minibatch,
        hidden=list(n.hidden), activation=n.activation, normalize_obs=t.normalize_obs,
        normalize_reward=t.normalize_reward, normalize_advantage=t.normalize_advantages, ortho_init=n.ortho_init,
        log_std_init=n.log_std_init,
        # Not a TRPO argument: stable-baselines3's policies build their Adam with this eps.
        adam_eps=t.value_adam_eps,
    )


def peer(env_id: str) -> dict:
    cfg, _ = zoo_config(env_id)
    return peer_settings(cfg, action_dim(env_id))


def action_dim(env_id: str) -> int:
    import gymnasium as gym

    env = gym.make(env_id)
    dim = int(np.prod(env.action_space.shape))
    env.close()
    return dim


# ---------------------------------------------------------------- child runs

def _peak_rss_mib() -> float:
    """Peak resident memory of this process (and of its reaped children, if larger), MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # Linux reports KiB


def run_raw(env_id: str, steps: int, seed: int) -> dict:
    """gymnasium env.step with uniform random actions, n_envs stepped in turn, reset on episode end."""
    import gymnasium as gym

    n = peer(env_id)["n_envs"]
    envs = [gym.make(env_id) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
    space = envs[0].action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high, (steps // n, n, *space.shape))
    start = time.perf_counter()
    for t in range(steps // n):
        for env, action in zip(envs, actions[t]):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
    elapsed = time.perf_counter() - start
    return {"steps": steps // n * n, "train_s": elapsed, "steps_per_s": steps // n * n / elapsed}


def _step_one_env(env_id: str, steps: int, seed: int, start, done) -> None:
    """Worker of run_raw_parallel: like run_raw for one env, once `start` is set."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.reset(seed=seed)
    space = env.action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high, (steps, *space.shape))
    start.wait()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    done.release()


def run_raw_parallel(env_id: str, steps: int, seed: int) -> dict:
    """run_raw with each of the n_envs envs in its own process, all started at once: no handover,
    no shared work. Wall time from the start to the last one done."""
    import multiprocessing as mp

    n = peer(env_id)["n_envs"]
    ctx = mp.get_context("fork")  # this child has imported nothing that minds a fork
    start, done = ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=_step_one_env, args=(env_id, steps // n, seed + i, start, done)) for i in range(n)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every worker build its env and reach start.wait()
    began = time.perf_counter()
    start.set()
    for _ in procs:
        done.acquire()
    elapsed = time.perf_counter() - began
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a raw-parallel worker failed: exit codes {[p.exitcode for p in procs]}")
    return {"steps": steps // n * n, "train_s": elapsed, "steps_per_s": steps // n * n / elapsed}


def _evaluate(env_id: str, act, seed: int, episodes: int) -> float:
    """Mean return of `act(obs) -> action` (deterministic) over `episodes` seeded episodes."""
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET + ep)  # as trpo_lab's trainer seeds them
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(
                np.clip(act(obs), env.action_space.low, env.action_space.high))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run_sb3(env_id: str, steps: int, seed: int, eval_episodes: int) -> dict:
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    s = peer(env_id)
    torch.set_num_threads(1)
    venv = VecNormalize(make_vec_env(env_id, n_envs=s["n_envs"], seed=seed, vec_env_cls=DummyVecEnv),
                        norm_obs=s["normalize_obs"], norm_reward=s["normalize_reward"], gamma=s["gamma"])
    model = TRPO(
        "MlpPolicy", venv, n_steps=s["n_steps"], batch_size=s["batch_size"], gamma=s["gamma"],
        gae_lambda=s["gae_lambda"], target_kl=s["target_kl"], cg_max_steps=s["cg_max_steps"],
        cg_damping=s["cg_damping"], line_search_shrinking_factor=s["line_search_shrinking_factor"],
        line_search_max_iter=s["line_search_max_iter"], n_critic_updates=s["n_critic_updates"],
        learning_rate=s["learning_rate"], normalize_advantage=s["normalize_advantage"],
        sub_sampling_factor=1, seed=seed, device="cpu", verbose=0,
        policy_kwargs=dict(net_arch=dict(pi=s["hidden"], vf=s["hidden"]),
                           activation_fn={"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU,
                                          "silu": torch.nn.SiLU}[s["activation"]],
                           ortho_init=s["ortho_init"], log_std_init=s["log_std_init"],
                           optimizer_kwargs=dict(eps=s["adam_eps"])),
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    done_steps = int(model.num_timesteps)

    def act(obs):
        action, _ = model.predict(venv.normalize_obs(obs[None]), deterministic=True)
        return action[0]

    return {"steps": done_steps, "train_s": elapsed, "steps_per_s": done_steps / elapsed,
            "eval_return": _evaluate(env_id, act, seed, eval_episodes)}


def run_trpo_lab(env_id: str, steps: int, seed: int, eval_episodes: int, vec_env: str, collection: str) -> dict:
    sys.path.insert(0, str(REPO))
    from trpo_lab import metrics as M
    from trpo_lab.trainer import train

    runtime = {"trainer.total_steps": steps, "trainer.seed": seed, "trainer.vec_env": vec_env,
               "trainer.collection": collection, "trainer.threads": 1, "trainer.eval_every": 0,
               "trainer.eval_episodes": eval_episodes, "trainer.progress": False, "logger.wandb.mode": "disabled"}
    cfg, _ = zoo_config(env_id, *(f"{k}={v}" for k, v in runtime.items()))
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(cfg, Path(run_dir))
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    elapsed = rows[-1][M.WALL_TIME]  # to the end of the last iteration, before the final evaluation
    # trpo_lab evaluates with env seed + 10000 + episode, like _evaluate above.
    steps_done = summary[M.Summary.ENV_STEPS]
    return {"steps": steps_done, "train_s": elapsed, "steps_per_s": steps_done / elapsed,
            "eval_return": summary[M.Summary.EVAL_RETURN]}


def child_main(args: argparse.Namespace) -> None:
    if args.child == "raw":
        result = run_raw(args.env[0], args.steps, args.seeds[0])
    elif args.child == "raw-parallel":
        result = run_raw_parallel(args.env[0], args.steps, args.seeds[0])
    elif args.child == "sb3":
        result = run_sb3(args.env[0], args.steps, args.seeds[0], args.eval_episodes)
    else:
        result = run_trpo_lab(args.env[0], args.steps, args.seeds[0], args.eval_episodes,
                              "subproc" if args.child == "trpo_lab-subproc" else "sync",
                              "async" if args.child == "trpo_lab-async" else "sync")
    result["peak_rss_mib"] = _peak_rss_mib()
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- the parent

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def spawn(kind: str, env_id: str, steps: int, seed: int, eval_episodes: int) -> dict:
    env = dict(os.environ, **{v: "1" for v in THREAD_VARS}, WANDB_MODE="disabled", WANDB_SILENT="true")
    cmd = [sys.executable, __file__, "--child", kind, "--env", env_id, "--steps", str(steps),
           "--seeds", str(seed), "--eval-episodes", str(eval_episodes)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    load = {"load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2)}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {"kind": kind, "env": env_id, "seed": seed, **json.loads(line[len("RESULT "):]), **load}
    raise RuntimeError(f"{kind} on {env_id} seed {seed} failed:\n{proc.stderr[-3000:]}")


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for mod in ("torch", "numpy", "gymnasium", "mujoco", "sb3_contrib"):
        try:
            out.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            out.append(f"{mod} missing")
    return ", ".join(out)


KINDS = ["raw", "raw-parallel", "sb3", "trpo_lab", "trpo_lab-subproc", "trpo_lab-async"]
PARALLEL = ("raw-parallel", "trpo_lab-subproc", "trpo_lab-async")  # the kinds --subproc adds


def _fmt(values: list[float], digits: int = 0) -> str:
    """Mean, and every value when there are several."""
    if not values:
        return "-"
    mean = f"{np.mean(values):,.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ({' / '.join(f'{v:,.{digits}f}' for v in values)})"


def _rates(results: list[dict]) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {}
    for r in results:
        rates.setdefault(r["kind"], []).append(r["steps_per_s"])
    return rates


def paired_ratios(results: list[dict], kind: str, base: str) -> list[float]:
    """steps/s of `kind` over `base`'s, per repeat and seed: the n-th run of each kind on
    a seed belongs to the n-th repeat, so each pair was run close together."""
    def runs(k: str) -> dict[tuple, float]:
        seen: dict[int, int] = {}
        out = {}
        for r in results:
            if r["kind"] == k:
                n = seen[r["seed"]] = seen.get(r["seed"], -1) + 1
                out[(r["seed"], n)] = r["steps_per_s"]
        return out

    ours, theirs = runs(kind), runs(base)
    return [ours[key] / theirs[key] for key in ours if key in theirs]


def median_ratio(results: list[dict], kind: str, base: str) -> float:
    ratios = paired_ratios(results, kind, base)
    return float(np.median(ratios)) if ratios else float("nan")


def table(env_id: str, results: list[dict], kinds: list[str]) -> str:
    by = {k: [r for r in results if r["kind"] == k] for k in kinds}
    rates = _rates(results)
    lines = [f"### {env_id}", "",
             "| run | steps/s: mean (every run) | best | x sb3-contrib | of raw env.step | x trpo_lab sync "
             "| peak RSS MiB | eval return |",
             "|---|---|---|---|---|---|---|---|"]
    for k in kinds:
        rs = by[k]
        if not rs:
            continue
        evals = [r["eval_return"] for r in rs if "eval_return" in r]

        def ratio(base: str, spec: str) -> str:
            value = median_ratio(results, k, base)
            return "-" if np.isnan(value) else format(value, spec)

        lines.append(
            f"| {k} | {_fmt(rates[k])} | {max(rates[k]):,.0f} | {ratio('sb3', '.2f')} | {ratio('raw', '.0%')} | "
            f"{ratio('trpo_lab', '.2f')} | {max(r['peak_rss_mib'] for r in rs):.0f} | {_fmt(evals, 1)} |")
    lines += ["", "ratios: median over repeats (and seeds) of the ratio within each repeat", "",
              "targets (issue 13): " + "; ".join(verdicts(results))]
    return "\n".join(lines)


# (run, against, number format, at least, what): the speed targets, as paired ratios (issue 13's).
SPEED_TARGETS = (
    ("trpo_lab", "sb3", ".2f", 3.0, ">= 3x sb3-contrib steps/s"),
    ("trpo_lab", "raw", ".0%", 0.7, ">= 70% of raw env.step"),
    ("trpo_lab-async", "trpo_lab", ".2f", 1.5, "async >= 1.5x single process"),
    ("trpo_lab-async", "trpo_lab-subproc", ".2f", 1.15, "async >= 1.15x subproc"),
)
# Ratios printed with no target.
SPEED_REPORTS = (
    ("trpo_lab-subproc", "trpo_lab", ".2f", "subproc over single process"),
    ("trpo_lab-async", "raw-parallel", ".0%", "async of the raw-parallel ceiling"),
)


def verdicts(results: list[dict]) -> list[str]:
    """Each target the runs at hand can judge: 'met' or 'NOT met', with the number.

    Speed: the median paired ratio (see the module's docstring), followed,
    when there are several pairs, by each of them.
    """
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["kind"], []).append(r)

    def say(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def speed(kind: str, base: str, spec: str) -> tuple[float, str]:
        ratios = paired_ratios(results, kind, base)
        median = float(np.median(ratios))
        more = "" if len(ratios) == 1 else f"; median of {' / '.join(format(r, spec) for r in ratios)}"
        return median, f"{median:{spec}}{more}"

    out = []
    for kind, base, spec, least, what in SPEED_TARGETS:
        if by.get(kind) and by.get(base):
            ratio, text = speed(kind, base, spec)
            out.append(f"{what}: {say(ratio >= least)} ({text})")
    ceiling = ""
    if by.get("raw-parallel") and by.get("raw"):
        # What two cores gave at the time with nothing shared: the ceiling of any two-process run.
        ceiling = f"; two independent raw processes: {speed('raw-parallel', 'raw', '.2f')[0]:.2f}x of one"
    for kind, base, spec, what in SPEED_REPORTS:
        if by.get(kind) and by.get(base):
            out.append(f"{what} (no target): {speed(kind, base, spec)[1]}" + (ceiling if base == "trpo_lab" else ""))
    for kind in ("trpo_lab", "trpo_lab-subproc", "trpo_lab-async"):
        if by.get(kind):
            peak, steps = max(r["peak_rss_mib"] for r in by[kind]), by[kind][0]["steps"]
            scope = "" if steps >= 1_000_000 else f", but at {steps:,} steps; the target is for 1M"
            out.append(f"{kind} peak RSS < 1 GiB: {say(peak < 1024)} ({peak:.0f} MiB{scope})")
    if by.get("trpo_lab") and by.get("sb3"):
        # Per seed, the runs are deterministic: repeats of one seed give the same return.
        ours = list({r["seed"]: r["eval_return"] for r in by["trpo_lab"]}.values())
        theirs = list({r["seed"]: r["eval_return"] for r in by["sb3"]}.values())
        scope = "" if len(ours) >= 3 and by["trpo_lab"][0]["steps"] >= 300_000 else \
            " (indicative only: the target is 3 seeds at 300k steps)"
        out.append(f"mean eval return >= sb3-contrib's: {say(np.mean(ours) >= np.mean(theirs))} "
                   f"({np.mean(ours):.1f} vs {np.mean(theirs):.1f}){scope}")
    return out


def print_saved_tables(path: Path) -> None:
    """Tables of the runs saved in `path` (a --json list, or the '# {...}' lines this script prints)."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        results = json.loads(text)
    else:
        results = [json.loads(line[2:]) for line in text.splitlines() if line.startswith("# {")]
    kinds = [k for k in KINDS if any(r["kind"] == k for r in results)]
    for env_id in dict.fromkeys(r["env"] for r in results):
        print()
        print(table(env_id, [r for r in results if r["env"] == env_id], kinds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["Hopper-v5", "Walker2d-v5"])
    parser.add_argument("--steps", type=int, default=61_440, help="environment steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--subproc", action="store_true",
                        help="also run trpo_lab with trainer.vec_env=subproc and with trainer.collection=async, "
                             "and raw-parallel (each env in its own process)")
    parser.add_argument("--only", nargs="+", choices=KINDS,
                        help="run only these (e.g. trpo_lab alone for a 1M-step memory check)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time; 1 for speed, 2 for a long learning comparison on 2 cores")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run everything this many times, in alternating order (ratios: median over the repeats)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--tables-from", type=Path,
                        help="print the tables of finished runs from a --json file or this script's output")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    if args.tables_from:
        return print_saved_tables(args.tables_from)

    kinds = args.only or [k for k in KINDS if args.subproc or k not in PARALLEL]
    print(f"# bench_vs_sb3: {' '.join(sys.argv[1:])}")
    print(f"# {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"load average {os.getloadavg()[0]:.2f} at start; {versions()}")
    for env_id in args.env:
        _, preset = zoo_config(env_id)
        print(f"# {env_id}: trpo_lab runs experiment={preset}; sb3-contrib gets the same settings in its units: "
              f"{json.dumps(peer(env_id))}")
    print("# NOTE: sb3-contrib's target_kl and cg_damping apply to the KL averaged over action dimensions;"
          " trpo_lab's trpo.delta and trpo.cg_damping to the policy's KL. The peer's settings in trpo_lab's units"
          " are target_kl * act_dim and cg_damping * act_dim, pinned above.")
    print("# eval: deterministic, 10 episodes unless --eval-episodes, seeds seed+10000+i; not timed", flush=True)
    # Seed by seed: a long comparison stopped early still covers every task.
    # Repeats alternate the order of the runs, so a change of machine load
    # during the invocation does not always fall on the same framework.
    jobs = [(k, e, s) for r in range(args.repeats) for s in args.seeds for e in args.env
            for k in (kinds if r % 2 == 0 else kinds[::-1])]
    results: list[dict] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(lambda job: spawn(job[0], job[1], args.steps, job[2], args.eval_episodes), jobs):
            print("# " + json.dumps(result), flush=True)
            results.append(result)
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    for env_id in args.env:
        print()
        print(table(env_id, [r for r in results if r["env"] == env_id], kinds))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
