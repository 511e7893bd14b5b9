"""The Fisher-vector products of one TRPO update, three ways, side by side on Hopper's batch.

    python benchmarks/bench_fvp.py                      # Hopper-v5 sizes: batch 2048, obs 11, act 3, 64x64 tanh
    python benchmarks/bench_fvp.py --batch 2048 --obs 17 --act 6 --repeats 20

One update of conjugate gradient asks for `cg_iters` products and one more for
the curvature x^T F x, all at theta_old. Each way below is timed for that
whole job (its set-up at theta_old plus cg_iters + 1 products), one torch
thread, the ways alternating within each repeat so machine load hits them
alike; the table gives the median over repeats. All three must give the same
F v (checked first).

    hand-written    trpo_lab/mlp_grad.py (Policy.fisher_product): the net linearised once,
                    each product one hand-written forward-mode pass J v and one
                    back-propagation J^T (M J v), no autograd graph
    torch.func      torch.func.linearize (J v) and torch.func.vjp (J^T u) at theta_old,
                    the same J^T M J v with the distribution's Fisher M
    double backprop the gradient of (grad KL . v) through a graph of the KL's gradient
                    (sb3-contrib's and most TRPO codes' way)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trpo_lab.policies import GaussianPolicy  # noqa: E402
from trpo_lab.trpo import mean_kl  # noqa: E402


def hand_written(policy, obs):
    return policy.fisher_product(obs)


def torch_func(policy, obs):
    """J^T M J v with J from torch.func (forward-mode linearisation, reverse-mode vjp)."""
    from torch.func import functional_call, linearize, vjp

    names = [n for n, _ in policy.named_parameters() if n.startswith("net.")]
    params = {n: p.detach() for n, p in policy.named_parameters() if n.startswith("net.")}
    net_of = lambda p: functional_call(policy.net, {k[len("net."):]: v for k, v in p.items()}, (obs,))  # noqa: E731
    out, jvp_fn = linearize(net_of, params)
    _, vjp_fn = vjp(net_of, params)
    sizes = [p.numel() for p in policy.parameters()]
    shapes = [p.shape for p in policy.parameters()]
    all_names = [n for n, _ in policy.named_parameters()]
    inv_var = torch.exp(-2.0 * policy.log_std.detach())
    batch = obs.shape[0]

    def product(v):
        chunks = dict(zip(all_names, (c.view(s) for c, s in zip(torch.split(v, sizes), shapes))))
        jv = jvp_fn({n: chunks[n] for n in names})
        (grads,) = vjp_fn(jv * inv_var / batch)
        return torch.cat([grads[n].reshape(-1) if n in grads else 2.0 * chunks[n].reshape(-1) for n in all_names])

    return product


def double_backprop(policy, obs):
    params = list(policy.parameters())
    with torch.no_grad():
        old = tuple(p.detach() for p in policy.dist_params(obs))
    kl = mean_kl(policy, obs, old)
    grads = torch.autograd.grad(kl, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])

    def product(v):
        hv = torch.autograd.grad(torch.dot(flat, v), params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    return product


WAYS = {"hand-written": hand_written, "torch.func": torch_func, "double backprop": double_backprop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--obs", type=int, default=11)
    parser.add_argument("--act", type=int, default=3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--cg-iters", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = GaussianPolicy(args.obs, args.act, args.hidden, "tanh")
    obs = torch.randn(args.batch, args.obs)
    v = torch.randn(sum(p.numel() for p in policy.parameters()))

    reference = hand_written(policy, obs)(v)
    for name, way in WAYS.items():
        got = way(policy, obs)(v)
        err = float((got - reference).norm() / reference.norm())
        print(f"# {name}: relative difference from hand-written F v {err:.2e}")
        assert err < 1e-4, name

    times: dict[str, list[float]] = {name: [] for name in WAYS}
    products = args.cg_iters + 1
    for r in range(args.repeats):
        order = list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]
        for name in order:
            start = time.perf_counter()
            product = WAYS[name](policy, obs)
            for _ in range(products):
                product(v)
            times[name].append(time.perf_counter() - start)
    base = np.median(times["hand-written"])
    print(f"\nFisher-vector products of one update: batch {args.batch}, obs {args.obs}, act {args.act}, "
          f"hidden {args.hidden}, {products} products, median of {args.repeats} repeats, 1 thread\n")
    print("| way | ms per update | ms per product (incl. set-up share) | x hand-written |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = float(np.median(ts))
        print(f"| {name} | {1e3 * med:.1f} | {1e3 * med / products:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
