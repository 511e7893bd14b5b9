"""Action and observation spaces beyond Box and Discrete: MultiDiscrete, MultiBinary, Dict, images.

Tier 1: every distribution's log-prob, KL and entropy against torch.distributions, and
its Fisher-vector product against the explicit Hessian of the mean KL on every network
path (the MLP's hand-written one, the CNN's layer-by-layer one, plain autograd). Tier 4:
tiny tasks (tests/toy_envs.py) that a random policy cannot solve and TRPO learns in seconds.
"""
from __future__ import annotations


import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import toy_envs  # noqa: F401  (registers the toy ids)
from conftest import explicit_kl_hessian, read_jsonl
from trpo_lab import metrics as M
from trpo_lab.autodiff import AutogradLinearisation, LayerLinearisation
from trpo_lab.config import (Config, ConfigError, EnvConfig, LoggerConfig, NetworkConfig, TrainerConfig, TRPOConfig,
                             WandbConfig, validate)
from trpo_lab.envs import EnvError, make_env
from trpo_lab.networks import NatureCNN, image_layout, is_image_space
from trpo_lab.policies import (BernoulliPolicy, CategoricalPolicy, GaussianPolicy, MultiCategoricalPolicy, mlp)
from trpo_lab.trpo import fisher_vector_product, mean_kl

OBS = 3 * 5 * 5  # the tiny image of the conv cases: 3 channels (first) of 5 x 5


class TinyConv(nn.Module):
    """The structure of networks.NatureCNN (`images`, then conv / activation / Flatten / MLP head
    through `layers`) at a size whose KL Hessian can be formed: 3x5x5 -> 2 ch 3x3 conv stride 2 -> 2x2."""

    def __init__(self, out_dim: int, activation: str = "tanh"):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 2, 3, stride=2), nn.ReLU())
        self.head = mlp(8, [3], out_dim, activation, ortho_init=False, out_gain=1.0)

    def images(self, obs):
        return obs.reshape(obs.shape[0], 3, 5, 5)

    def layers(self):
        return [*self.conv, nn.Flatten(), *self.head]

    def forward(self, obs):
        return self.head(self.conv(self.images(obs)).flatten(1))


class OpaqueConv(TinyConv):
    """TinyConv without `layers`: the Fisher goes through autodiff.AutogradLinearisation."""

    layers = None

    def __getattribute__(self, name):
        if name == "layers":
            raise AttributeError(name)
        return super().__getattribute__(name)


NETS = {"mlp": None, "conv": TinyConv, "autograd": OpaqueConv}


def _policy(dist: str, net: str):
    torch.manual_seed(1)
    factory = None if NETS[net] is None else (lambda out_dim, gain: NETS[net](out_dim))
    obs_dim = OBS if factory else 3
    make = {
        "gaussian": lambda: GaussianPolicy(obs_dim, 2, [5, 4], "tanh", log_std_init=-0.3, net_factory=factory),
        "categorical": lambda: CategoricalPolicy(obs_dim, 4, [5], "relu", ortho_init=False, net_factory=factory),
        "multi_categorical": lambda: MultiCategoricalPolicy(obs_dim, [3, 2, 4], [5], "elu", ortho_init=False,
                                                            net_factory=factory),
        "bernoulli": lambda: BernoulliPolicy(obs_dim, 3, [5], "silu", ortho_init=False, net_factory=factory),
    }[dist]
    policy = make().double()
    with torch.no_grad():  # away from the initialisation's symmetric point (a 0.01 head gain)
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return policy, obs_dim


DISTS = ["gaussian", "categorical", "multi_categorical", "bernoulli"]


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("dist", DISTS)
def test_fisher_vector_product_matchesexplicit_kl_hessian(dist, net):
    policy, obs_dim = _policy(dist, net)
    obs = torch.randn(7, obs_dim, dtype=torch.float64)
    H = explicit_kl_hessian(policy, obs)
    fvp = fisher_vector_product(policy, obs, damping=0.0)
    F = torch.stack([fvp(e) for e in torch.eye(H.shape[0], dtype=torch.float64)])
    assert H.abs().max() > 1e-3  # not a vacuous comparison
    assert torch.allclose(F, H, atol=1e-10), (F - H).abs().max()


def test_nature_cnn_linearisation_matches_torch_func():
    """The layer-by-layer jvp and the vjp of the real Nature CNN (84x84x4 frames) against torch.func."""
    from torch.func import functional_call, jvp, vjp

    torch.manual_seed(0)
    net = NatureCNN((4, 84, 84), lambda n: mlp(n, [16], 3, "relu", True, 0.01), True).double()
    x = torch.randint(0, 256, (3, 4 * 84 * 84)).double()
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach() for p in net.parameters())
    f = lambda *p: functional_call(net, dict(zip(names, p)), (x,))  # noqa: E731
    tangents = tuple(torch.randn_like(p) for p in params)
    lin = LayerLinearisation(net, x)
    _, expected = jvp(f, params, tangents)
    assert torch.allclose(lin.jvp(tangents), expected, atol=1e-9)
    u = torch.randn_like(lin.output)
    _, pullback = vjp(f, *params)
    for got, want in zip(lin.vjp(u), pullback(u)):
        assert torch.allclose(got, want, atol=1e-9)
    generic = AutogradLinearisation(net, x)
    assert torch.allclose(generic.jvp(tangents), expected, atol=1e-9)


@pytest.mark.parametrize("dist", ["multi_categorical", "bernoulli"])
def test_log_prob_kl_entropy_match_torch_distributions(dist):
    policy, obs_dim = _policy(dist, "mlp")
    obs = torch.randn(6, obs_dim, dtype=torch.float64)
    D = torch.distributions

    def dists(pol):
        out = pol.net(obs)
        if dist == "bernoulli":
            return [D.Bernoulli(logits=out[:, i]) for i in range(out.shape[1])]
        return [D.Categorical(logits=z) for z in torch.split(out, pol.nvec, -1)]

    with torch.no_grad():
        old = tuple(p.clone() for p in policy.dist_params(obs))
        before = dists(policy)
        actions = torch.stack([d.sample() for d in before], -1).long()
        logp = sum(d.log_prob(actions[:, j].double()) for j, d in enumerate(before))
        assert torch.allclose(policy.log_prob(obs, actions), logp)
        assert torch.allclose(policy.entropy(obs), sum(d.entropy() for d in before))
        assert mean_kl(policy, obs, old).item() == pytest.approx(0.0, abs=1e-12)
        vector_to_parameters(parameters_to_vector(policy.parameters()) + 0.2, policy.parameters())
        kl = sum(D.kl_divergence(p, q) for p, q in zip(before, dists(policy)))
        assert torch.allclose(policy.kl_from(old, obs), kl)
        assert kl.mean() > 1e-4


@pytest.mark.parametrize("dist", DISTS)
def test_torch_actor_log_probs_are_the_policy_s(dist):
    """TorchActor (the acting path of non-numpy policies) samples valid actions whose log-probs the
    policy agrees with, and the same noise gives the same actions."""
    from trpo_lab.torch_actor import TorchActor

    policy, obs_dim = _policy(dist, "conv")
    actor = TorchActor(policy)
    rng = np.random.default_rng(0)
    obs = np.random.default_rng(1).standard_normal((5, obs_dim))
    noise, _ = actor.noise(rng, 1, 5)
    actions, logp = actor.sample(obs, noise[0])
    again, _ = actor.sample(obs, noise[0])
    np.testing.assert_array_equal(actions, again)
    with torch.no_grad():
        expected = policy.log_prob(torch.from_numpy(obs), torch.from_numpy(actions)).numpy()
    np.testing.assert_allclose(logp, expected, rtol=1e-10)
    assert actor.deterministic(obs).shape[0] == 5


@pytest.mark.parametrize("dist", DISTS)
def test_torch_actor_draws_what_the_numpy_actor_draws(dist):
    """Same seed, same actions: the two acting paths differ only in float rounding."""
    from trpo_lab.torch_actor import TorchActor

    policy, obs_dim = _policy(dist, "mlp")
    obs = np.random.default_rng(1).standard_normal((4, obs_dim))
    fast, slow = policy.numpy_actor(), TorchActor(policy)
    noise_f, logp_f = fast.noise(np.random.default_rng(7), 3, 4)
    noise_s, _ = slow.noise(np.random.default_rng(7), 3, 4)
    for t in range(3):
        a_f, step_logp = fast.sample(obs, noise_f[t])
        a_s, logp_s = slow.sample(obs, noise_s[t])
        np.testing.assert_allclose(a_s, a_f, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(logp_s, logp_f[t] if step_logp is None else step_logp, rtol=1e-10)
    np.testing.assert_allclose(slow.deterministic(obs), fast.deterministic(obs), rtol=1e-10)


def test_image_layouts():
    assert image_layout((84, 84)) == ((1, 84, 84), False)
    assert image_layout((4, 84, 84)) == ((4, 84, 84), False)
    assert image_layout((36, 36, 1)) == ((1, 36, 36), True)
    assert image_layout((210, 160, 3)) == ((3, 210, 160), True)
    assert is_image_space(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8))
    assert not is_image_space(gym.spaces.Box(0, 1, (8, 8, 3), np.float32))


# ---- environments, errors and learning ----

NO_WANDB = LoggerConfig(wandb=WandbConfig(mode="disabled"))


def _cfg(env_id, total_steps, network=None, seed=0, delta=0.02, **trainer) -> Config:
    base = dict(total_steps=total_steps, steps_per_iter=512, eval_episodes=5, eval_every=0, progress=False,
                seed=seed, checkpoint_every=1000)
    base.update(trainer)
    return Config(env=EnvConfig(id=env_id), network=network or NetworkConfig(), trpo=TRPOConfig(delta=delta),
                  trainer=TrainerConfig(**base), logger=NO_WANDB)


def test_dict_observations_are_flattened():
    env = make_env(EnvConfig(id="toy_envs:ToyDict-v0"))
    assert env.observation_space.shape == (5,)  # flag one-hot (2) + nested x (1) + noise (2), keys sorted
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5,) and obs[:2].sum() == 1.0
    env.close()


@pytest.mark.parametrize("env_id,expected", [
    ("toy_envs:ToyTuple-v0", "Tuple observation space"),
])
def test_unsupported_spaces_fail_in_one_line(env_id, expected):
    with pytest.raises(EnvError) as err:
        make_env(EnvConfig(id=env_id))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_image_inside_a_dict_grid_multidiscrete_and_shifted_discrete_are_refused():
    class ImageDict(toy_envs.ToyDict):
        observation_space = gym.spaces.Dict({"img": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)})

    class GridActions(toy_envs.ToyMultiDiscrete):
        action_space = gym.spaces.MultiDiscrete([[2, 2], [2, 2]])

    class ShiftedDiscrete(toy_envs.ToyDict):
        action_space = gym.spaces.Discrete(2, start=1)

    for name, cls, expected in (("ImageDict-v0", ImageDict, "images inside a Dict"),
                                ("ShiftedDiscrete-v0", ShiftedDiscrete, "Discrete with start != 0"),
                                ("GridActions-v0", GridActions, "multi-dimensional MultiDiscrete")):
        gym.register(name, entry_point=cls)
        try:
            with pytest.raises(EnvError, match=expected):
                make_env(EnvConfig(id=name))
        finally:
            del gym.registry[name]


def test_cuda_asked_for_without_cuda_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _cfg("CartPole-v1", 512, device="cuda")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "trainer.device='cuda'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="trainer.device"):
        validate(_cfg("CartPole-v1", 512, device="tpu"))


def test_nature_cnn_on_vector_observations_is_refused(tmp_path):
    from trpo_lab.trainer import train

    with pytest.raises(EnvError, match="network.type=nature_cnn needs image observations"):
        train(_cfg("CartPole-v1", 512, network=NetworkConfig(type="nature_cnn")), tmp_path)


def test_async_collection_refuses_cnns_its_numpy_workers_cannot_act(tmp_path):
    from trpo_lab.trainer import train

    with pytest.raises(EnvError, match="trainer.collection=async takes MLP policies on the CPU .* not CNNs on images"
                                       ".* gives nature_cnn"):
        train(_cfg("toy_envs:ToyPixel-v0", 512, collection="async"), tmp_path)


@pytest.mark.parametrize("env_id", ["toy_envs:ToyMultiDiscrete-v0", "toy_envs:ToyMultiBinary-v0"])
def test_an_async_batch_on_multi_actions_is_its_policys(env_id):
    """The rollout workers' numpy actor on MultiDiscrete and MultiBinary: valid actions, and the
    log-probabilities the torch policy gives them."""
    from trpo_lab.async_collection import AsyncCollector
    from trpo_lab.trainer import build_agent

    cfg = _cfg(env_id, 512, collection="async", rollout_workers=2, steps_per_iter=64)
    T, N = 32, 2
    collector = AsyncCollector(cfg, T, N, seed=7)
    try:
        agent = build_agent(cfg, collector.observation_space, collector.action_space)
        with torch.no_grad():
            for p in agent.policy.net.parameters():  # away from the near-uniform initial policy
                p.add_(0.5 * torch.randn_like(p))
        rollout = collector.collect(agent, 0)
        actions = rollout.actions.reshape(T * N, -1)
        assert actions.dtype == np.int64 and all(collector.action_space.contains(a) for a in actions)
        with torch.no_grad():
            logp = agent.policy.log_prob(torch.from_numpy(rollout.obs.reshape(T * N, -1)), torch.from_numpy(actions))
        assert logp.std() > 0.05
        np.testing.assert_allclose(rollout.behaviour_logp.reshape(-1), logp.numpy(), rtol=1e-4, atol=1e-4)
    finally:
        collector.close()


def test_async_training_on_multi_discrete_completes_and_resumes(tmp_path):
    """Async runs do not repeat step for step (the lag is what the timing gives), so the resumed
    run is checked for continuing: the iterations after the checkpoint, and the agent it held."""
    from trpo_lab.trainer import train

    def cfg(resume="auto"):
        c = _cfg("toy_envs:ToyMultiDiscrete-v0", 256 * 4, steps_per_iter=256, eval_every=1, eval_episodes=1,
                 checkpoint_every=1, resume=resume, collection="async")
        c.trpo.value_epochs = 2
        return c

    evals = []
    stopped = train(cfg(), tmp_path / "stopped", on_eval=lambda steps, ret: evals.append(steps) or len(evals) == 2)
    assert stopped["status"] == "pruned"
    resumed = train(cfg(resume=str(tmp_path / "stopped")), tmp_path / "elsewhere")
    assert resumed["status"] == "completed" and resumed["env_steps"] == 256 * 4
    rows = read_jsonl(tmp_path / "stopped" / "metrics.jsonl")
    assert [r[M.ITERATION] for r in rows] == [1, 2, 3, 4]
    assert all(0 <= r[M.POLICY_LAG_MAX] <= 1 for r in rows)


# Returns per 10-step episode: (random policy's mean, threshold, best possible).
LEARNING = {
    "toy_envs:ToyMultiDiscrete-v0": (6.7, 15.0, 20.0),
    "toy_envs:ToyMultiBinary-v0": (20.0, 32.0, 40.0),
    "toy_envs:ToyDict-v0": (5.0, 8.5, 10.0),
}


@pytest.mark.parametrize("env_id", list(LEARNING))
def test_trpo_learns_toy_task(env_id, tmp_path):
    from trpo_lab.trainer import train

    random_return, threshold, best = LEARNING[env_id]
    summary = train(_cfg(env_id, 8192), tmp_path)
    assert summary["status"] == "completed"
    assert summary["eval_return"] >= threshold, summary
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[0][M.EP_RETURN] < threshold  # it started near random_return


def test_cnn_policy_learns_tiny_pixel_task(tmp_path):
    """36x36 images (the Nature CNN's smallest input) with a white square left or right; two actions."""
    from trpo_lab.trainer import train

    cfg = _cfg("toy_envs:ToyPixel-v0", 4096, n_envs=8)
    cfg.trpo.value_epochs = 5
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed"
    assert summary["eval_return"] >= 8.5, summary  # random: 5 of 10


@pytest.mark.parametrize("env_id", ["toy_envs:ToyMultiBinary-v0", "toy_envs:ToyPixel-v0"])
def test_policy_lag_on_multi_binary_and_pixels_corrects_for_a_stale_behaviour_policy(env_id, tmp_path):
    from trpo_lab.trainer import train

    cfg = _cfg(env_id, 256 * 3, steps_per_iter=256, policy_lag=1)
    cfg.trpo.value_epochs = 1
    assert train(cfg, tmp_path)["status"] == "completed"
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[0][M.BEHAVIOUR_KL] == 0.0 and rows[2][M.POLICY_LAG_MAX] == 1
    assert rows[2][M.BEHAVIOUR_KL] > 0.0 and rows[2][M.IS_ESS] < 1.0


@pytest.mark.parametrize("env_id,vec_env", [("toy_envs:ToyMultiDiscrete-v0", "sync"),
                                            ("toy_envs:ToyPixel-v0", "sync"), ("toy_envs:ToyPixel-v0", "subproc")])
def test_run_stopped_and_resumed_equals_uninterrupted(env_id, vec_env, tmp_path):
    """Exact resume through the numpy MultiDiscrete actor, the torch CNN path (TorchActor's noise,
    the CNN critic's Adam state) and subproc's uint8 images: the interrupted run steps its
    environments with `vec_env`, the uninterrupted one in this process, and the numbers agree."""
    from trpo_lab.trainer import train

    def cfg(resume="auto", vec_env="sync"):
        c = _cfg(env_id, 256 * 4, steps_per_iter=256, eval_every=1, eval_episodes=1, checkpoint_every=1,
                 resume=resume, vec_env=vec_env)
        c.trpo.value_epochs = 2
        return c

    train(cfg(), tmp_path / "straight")
    evals = []
    stopped = train(cfg(vec_env=vec_env), tmp_path / "stopped",
                    on_eval=lambda steps, ret: evals.append(steps) or len(evals) == 2)
    assert stopped["status"] == "pruned"
    resumed = train(cfg(resume=str(tmp_path / "stopped"), vec_env=vec_env), tmp_path / "elsewhere")
    assert resumed["status"] == "completed"
    drop = (M.WALL_TIME, M.STEPS_PER_S)
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(tmp_path / d / "metrics.jsonl")]
            for d in ("straight", "stopped")]
    assert rows[0] == rows[1]



def test_pong_smoke_through_the_real_emulator(tmp_path):
    """Three iterations of env=pong network=nature_cnn as the YAML composes them: ALE/Pong-v5,
    AtariPreprocessing, 4 stacked 84x84 frames, the Nature CNN; then its checkpoint evaluates."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    from test_config import _compose

    from trpo_lab.config import to_config
    from trpo_lab.evaluate import episode_returns, load_agent, record_video
    from trpo_lab.trainer import train

    cfg = to_config(_compose("env=pong", "network=nature_cnn", "logger=none", "trainer.total_steps=192",
                             "trainer.steps_per_iter=64", "trainer.eval_episodes=1", "trainer.progress=false",
                             "env.max_episode_steps=200", "trpo.value_epochs=1"))
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["iterations"] == 3
    assert np.isfinite(summary["eval_return"])
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(r[M.KL]) for r in rows)
    env = make_env(cfg.env)
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    env.close()
    run_cfg, agent, _ = load_agent(tmp_path)
    assert type(agent.policy.net).__name__ == "NatureCNN" and not agent.obs_norm.enabled
    assert len(episode_returns(run_cfg, agent, 1, seed=5)) == 1
    # evaluate's video: the game's own frames (210x160 colour), not the network's 84x84 input.
    video, message = record_video(run_cfg, agent, 5, tmp_path / "videos")
    assert video is not None and video.stat().st_size > 1000, message
    import imageio.v3 as iio
    assert iio.imread(video, index=0).shape == (210, 160, 3)


def test_pong_vec_env_state_round_trip():
    """Exact resume for Atari: a second vec env given the first's state (emulator, frame stack,
    no-op and life bookkeeping) steps exactly like the first."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    from trpo_lab.vec_env import make_vec_env

    cfg = EnvConfig(id="ALE/Pong-v5", kwargs={"frameskip": 1, "repeat_action_probability": 0.25},
                    preprocess="atari")  # sticky actions on: the emulator's RNG matters too
    a, b = make_vec_env(cfg, 2, seed=3, kind="sync"), make_vec_env(cfg, 2, seed=99, kind="sync")
    try:
        a.reset()
        b.reset()
        rng = np.random.default_rng(0)
        for _ in range(20):
            a.step(rng.integers(0, 6, 2))
        b.set_state(a.get_state())
        for _ in range(40):
            actions = rng.integers(0, 6, 2)
            sa, sb = a.step(actions), b.step(actions)
            np.testing.assert_array_equal(sa.obs, sb.obs)
            np.testing.assert_array_equal(sa.rewards, sb.rewards)
    finally:
        a.close()
        b.close()


def test_fisher_subsample_is_a_fixed_stride_and_the_update_keeps_the_trust_region():
    from trpo_lab.trpo import Batch, fisher_subsample, trpo_update

    obs = torch.arange(20.0).reshape(10, 2)
    assert fisher_subsample(obs, 1.0) is obs
    assert torch.equal(fisher_subsample(obs, 0.25), obs[::4])
    policy, obs_dim = _policy("multi_categorical", "mlp")
    torch.manual_seed(0)
    x = torch.randn(400, obs_dim, dtype=torch.float64)
    with torch.no_grad():
        actions, logp = policy.sample_from_noise(x, torch.rand(400, 3, dtype=torch.float64))
    batch = Batch(x, actions, logp, torch.randn(400, dtype=torch.float64))
    stats = trpo_update(policy, batch, TRPOConfig(fisher_fraction=0.1))
    assert stats.line_search_success and 0 < stats.kl <= 0.01
    with pytest.raises(ConfigError, match="trpo.fisher_fraction"):
        validate(Config(env=EnvConfig(id="CartPole-v1"), trpo=TRPOConfig(fisher_fraction=0.0)))


@pytest.mark.parametrize("env_id", ["toy_envs:ToyPixel-v0", "toy_envs:ToyMultiDiscrete-v0"])
def test_a_sweep_and_its_report_work_on_pixels_and_multidiscrete_as_on_mujoco(env_id, tmp_path):
    """Two Optuna trials through the CLI (journal study, one folder per trial), then the report."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO, cli_env
    from trpo_lab.report import build_report

    env = cli_env()
    env["PYTHONPATH"] = str(REPO / "tests") + os.pathsep + env["PYTHONPATH"]
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "trpo_lab", "-m", "hydra/sweeper=trpo_optuna", f"env.id={env_id}",
         "trainer.total_steps=512", "trainer.steps_per_iter=256", "trainer.eval_every=1",
         "trainer.eval_episodes=2", "trainer.progress=false", "trpo.value_epochs=1", "logger=none",
         "trpo.delta=interval(0.005,0.05)", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((sweep / str(job) / "summary.json").read_text()) for job in (0, 1)]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    result = build_report([str(sweep)], tmp_path / "report.html")
    assert result["written"] and result["runs"] == 2 and result["studies"] == 1
    assert env_id.split(":")[1] in (tmp_path / "report.html").read_text()
