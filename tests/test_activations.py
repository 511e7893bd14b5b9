"""One registry entry per activation (trpo_lab/activations.py): its numpy function, its numpy
function-with-slope and its torch slope agree with the torch module and with autograd."""
import numpy as np
import pytest
import torch
from torch import nn

from trpo_lab.activations import ACTIVATIONS, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_form_of_an_activation_agrees_with_torch(name):
    spec = ACTIVATIONS[name]
    z = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64).requires_grad_()
    y = getattr(nn, spec.torch_module)()(z)
    (expected_slope,) = torch.autograd.grad(y.sum(), z)
    z_np, y_np = z.detach().numpy(), y.detach().numpy()

    h = z_np.copy()
    spec.numpy(h)
    np.testing.assert_allclose(h, y_np, rtol=1e-12, atol=1e-12)

    out, slope = np.empty_like(z_np), np.empty_like(z_np)
    spec.numpy_with_slope(z_np, out, slope)
    np.testing.assert_allclose(out, y_np, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(slope, expected_slope.numpy(), rtol=1e-12, atol=1e-12)

    torch_slope = spec.slope(z.detach(), y.detach())
    torch.testing.assert_close(torch_slope, expected_slope, rtol=1e-12, atol=1e-12)


def test_the_registry_is_the_only_list_of_activations():
    from trpo_lab.config import ACTIVATIONS as allowed

    assert tuple(allowed) == NAMES == ("tanh", "relu", "elu", "silu")
