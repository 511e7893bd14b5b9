"""The activations of the MLPs, defined once: the torch module, the numpy function and the derivative.

Every network trpo_lab builds is `policies.mlp`; three hand-written paths
evaluate the same nets without autograd and must agree with it:

    the numpy actor (collection)          actor.py       `numpy`: f(h) in place
    the critic fit (numpy Adam)           value_fit.py   `numpy_with_slope`: f(z) and f'(z)
    the Fisher-vector product (torch)     mlp_grad.py    `slope`: f'(z) from z and y = f(z)

`slope` uses tensor methods only, so it works on torch tensors without this
module importing torch (rollout workers start without it).
tests/test_activations.py checks each entry against the torch module and autograd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Activation:
    torch_module: str                                            # class name in torch.nn
    numpy: Callable[[np.ndarray], Any]                           # h <- f(h), in place
    numpy_with_slope: Callable[[np.ndarray, np.ndarray, np.ndarray], None]  # (z, out, slope)
    slope: Callable[[Any, Any], Any]                             # (z, y = f(z)) -> f'(z), torch tensors


def _tanh_with_slope(z, out, slope):
    np.tanh(z, out)
    np.multiply(out, out, slope)
    np.subtract(1.0, slope, slope)  # tanh' = 1 - tanh^2


def _relu_with_slope(z, out, slope):
    np.maximum(z, 0.0, out=out)
    np.copyto(slope, z > 0)


def _elu_with_slope(z, out, slope):
    positive = z > 0
    np.copyto(out, np.where(positive, z, np.expm1(np.minimum(z, 0.0))))
    np.copyto(slope, np.where(positive, 1.0, out + 1.0))  # elu'(z) = elu(z) + 1 below 0


def _silu_with_slope(z, out, slope):
    sigmoid = 1.0 / (1.0 + np.exp(-z))
    np.multiply(z, sigmoid, out=out)
    np.copyto(slope, sigmoid * (1.0 + z * (1.0 - sigmoid)))


def _elu_slope(z, y):
    positive = (z > 0).to(y.dtype)
    return positive + (1.0 - positive) * (y + 1.0)


def _silu_slope(z, y):
    s = z.sigmoid()
    return s * (1.0 + z * (1.0 - s))


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("Tanh", lambda h: np.tanh(h, h), _tanh_with_slope, lambda z, y: 1.0 - y * y),
    "relu": Activation("ReLU", lambda h: np.maximum(h, 0.0, out=h), _relu_with_slope,
                       lambda z, y: (z > 0).to(y.dtype)),
    "elu": Activation("ELU", lambda h: np.copyto(h, np.where(h > 0, h, np.expm1(np.minimum(h, 0.0)))),
                      _elu_with_slope, _elu_slope),
    "silu": Activation("SiLU", lambda h: np.multiply(h, 1.0 / (1.0 + np.exp(-h)), out=h), _silu_with_slope,
                       _silu_slope),
}
NAMES = tuple(ACTIVATIONS)
