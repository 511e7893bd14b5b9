"""Does trpo_lab's policy update equal sb3-contrib's on the same data?

    python benchmarks/check_same_update.py --env Hopper-v5   # needs sb3-contrib (the bench extra)

Collects one rollout with sb3-contrib's TRPO (rl-zoo3 settings), copies its
policy into a trpo_lab GaussianPolicy, applies `trpo_lab.trpo.trpo_update` to
sb3's batch (observations, actions, log-probabilities, normalised
advantages), lets sb3 do its own update, and compares the two parameter
changes. With the peer's trust region in trpo_lab's units (delta and
cg_damping times the action dimension, see bench_vs_sb3.py) they agree up to
the tiny random start of sb3's conjugate gradient (cosine 1.00000, equal
step norms on Hopper-v5 and Walker2d-v5); with trpo_lab given the numbers 0.01
and 0.1 literally, its step is shorter (a tighter trust region) and points
elsewhere (relatively stronger damping).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_vs_sb3 import action_dim, peer  # noqa: E402  (this folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--updates", type=int, default=2)
    args = parser.parse_args()

    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    from torch.nn.utils import parameters_to_vector

    from trpo_lab.policies import GaussianPolicy
    from trpo_lab.config import TRPOConfig
    from trpo_lab.trpo import Batch, trpo_update

    torch.set_num_threads(1)
    s, act_dim = peer(args.env), action_dim(args.env)
    venv = VecNormalize(make_vec_env(args.env, n_envs=s["n_envs"], seed=0, vec_env_cls=DummyVecEnv), gamma=s["gamma"])
    model = TRPO("MlpPolicy", venv, n_steps=s["n_steps"], batch_size=s["batch_size"], target_kl=s["target_kl"],
                 cg_max_steps=s["cg_max_steps"], cg_damping=s["cg_damping"], seed=0, device="cpu",
                 policy_kwargs=dict(net_arch=dict(pi=s["hidden"], vf=s["hidden"]), activation_fn=torch.nn.Tanh))
    sb3_train = model.train

    def actor_vector() -> torch.Tensor:  # in trpo_lab's parameter order: log_std, then the net's layers
        p, hidden = model.policy, model.policy.mlp_extractor.policy_net
        tensors = [p.log_std, hidden[0].weight, hidden[0].bias, hidden[2].weight, hidden[2].bias,
                   p.action_net.weight, p.action_net.bias]
        return torch.cat([t.detach().reshape(-1) for t in tensors])

    def compare_then_train() -> None:
        p, hidden = model.policy, model.policy.mlp_extractor.policy_net
        batch = next(model.rollout_buffer.get(batch_size=None))
        obs, actions, logp, adv = (t.float() for t in (batch.observations, batch.actions,
                                                         batch.old_log_prob, batch.advantages))
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # as sb3 normalises them
        before = actor_vector()
        steps = {}
        for label, scale in (("peer's trust region in trpo_lab units", act_dim), ("literal 0.01 / 0.1", 1)):
            policy = GaussianPolicy(obs.shape[1], act_dim, s["hidden"], "tanh")
            with torch.no_grad():
                for ours, theirs in zip([policy.net[0], policy.net[2], policy.net[4]],
                                        [hidden[0], hidden[2], p.action_net]):
                    ours.weight.copy_(theirs.weight)
                    ours.bias.copy_(theirs.bias)
                policy.log_std.copy_(p.log_std)
            settings = TRPOConfig(delta=s["target_kl"] * scale, cg_iters=s["cg_max_steps"],
                                  cg_damping=s["cg_damping"] * scale, backtrack_iters=s["line_search_max_iter"],
                                  backtrack_coeff=s["line_search_shrinking_factor"])
            trpo_update(policy, Batch(obs, actions, logp, adv), settings)
            steps[label] = parameters_to_vector(policy.parameters()).detach() - before
        sb3_train()
        theirs = actor_vector() - before
        for label, ours in steps.items():
            cosine = float(torch.dot(ours, theirs) / (ours.norm() * theirs.norm()))
            print(f"{args.env} trpo_lab ({label}): |step| {ours.norm():.5f} vs sb3-contrib {theirs.norm():.5f}, "
                  f"cosine {cosine:.5f}")

    model.train = compare_then_train
    model.learn(args.updates * s["n_envs"] * s["n_steps"])


if __name__ == "__main__":
    main()
