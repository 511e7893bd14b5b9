"""Tier 1: the hand-written critic fit against autograd + torch.optim.Adam."""
import copy

import pytest
import torch

from trpo_lab.policies import ValueNet
from trpo_lab.value_fit import ValueFitter


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
def test_value_fitter_matches_autograd_and_torch_adam(activation):
    torch.manual_seed(0)
    reference = ValueNet(5, [7, 6], activation).double()
    fast_net = copy.deepcopy(reference)
    fitter = ValueFitter(fast_net, activation, lr=1e-2)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    obs, returns = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    fit_loss = fitter.fit(obs, returns, epochs=3, minibatch=16, generator=torch.Generator().manual_seed(3))

    generator, losses = torch.Generator().manual_seed(3), []
    for _ in range(3):
        perm = torch.randperm(40, generator=generator)
        for start in range(0, 40, 16):
            idx = perm[start:start + 16]
            loss = torch.mean((reference(obs[idx]) - returns[idx]) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert fit_loss == pytest.approx(sum(losses) / len(losses), rel=1e-10)
    for fast, ref in zip(fast_net.parameters(), reference.parameters()):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-11)


def test_value_fitter_keeps_the_module_and_its_state_dict_working():
    net = ValueNet(3, [4], "tanh")
    fitter = ValueFitter(net, "tanh", lr=1e-3)
    obs, returns = torch.randn(8, 3), torch.randn(8)
    fitter.fit(obs, returns, epochs=1, minibatch=4, generator=torch.Generator().manual_seed(0))
    restored = ValueNet(3, [4], "tanh")
    restored_fitter = ValueFitter(restored, "tanh", lr=1e-3)
    restored.load_state_dict(net.state_dict())
    restored_fitter.load_state_dict(fitter.state_dict())
    torch.testing.assert_close(restored(obs), net(obs))
    # The loaded module still shares its storage with the fitter's flat vector.
    fitter.fit(obs, returns, 1, 4, torch.Generator().manual_seed(1))
    restored_fitter.fit(obs, returns, 1, 4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(restored(obs), net(obs))


def test_a_fit_in_the_worker_process_gives_the_in_process_numbers():
    torch.manual_seed(1)
    local_net = ValueNet(5, [16, 16], "tanh")
    remote_net = copy.deepcopy(local_net)
    local, remote = ValueFitter(local_net, "tanh", lr=3e-3), ValueFitter(remote_net, "tanh", lr=3e-3)
    remote.use_worker(batch=64, epochs=3)
    try:
        for seed in range(3):  # several fits: Adam's state carries over between them
            obs, returns = torch.randn(64, 5).numpy(), torch.randn(64).numpy()
            expected = local.fit(obs, returns, 3, 16, torch.Generator().manual_seed(seed))
            pending = remote.start(obs, returns, 3, 16, torch.Generator().manual_seed(seed))
            assert pending.finish() == expected
        for a, b in zip(local_net.parameters(), remote_net.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert remote.state_dict()["step"] == local.state_dict()["step"] == 3 * 3 * 4
        torch.testing.assert_close(remote.state_dict()["exp_avg_sq"], local.state_dict()["exp_avg_sq"])
    finally:
        remote.close()
    assert not remote.worker.process.is_alive()


def test_a_dead_fit_worker_is_an_error_not_a_hang():
    fitter = ValueFitter(ValueNet(3, [4], "tanh"), "tanh", lr=1e-3)
    fitter.use_worker(batch=8, epochs=1)
    try:
        fitter.worker.process.kill()
        fitter.worker.process.join()
        with pytest.raises(RuntimeError, match="critic-fit worker process died"):
            fitter.fit(torch.randn(8, 3).numpy(), torch.randn(8).numpy(), 1, 4, torch.Generator().manual_seed(0))
    finally:
        fitter.close()
