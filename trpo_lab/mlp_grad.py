"""Hand-written first derivatives of the MLPs that `policies.mlp` builds.

A `Linearisation` is an MLP evaluated once at fixed parameters and inputs,
keeping what its derivatives need: each layer's input and the activation's
derivative at its pre-activation. Then

    jvp(dtheta)  = J dtheta      (forward mode: the change of the output)
    vjp(u)       = J^T u         (reverse mode: back-propagation)

for J = d output / d theta, with theta the layers' (weight, bias) pairs in
`net.parameters()` order. A product costs two matrix products per layer and
no graph. The Fisher-vector product J^T M J v, which conjugate gradient calls
25 times on the same batch, is built from them (`Policy.fisher_product`);
through autograd or torch.func each call would rebuild a graph or repeat the
forward pass. Checked against autograd in tests/test_math.py.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trpo_lab.activations import ACTIVATIONS


def linear_layers(net: nn.Sequential) -> list[nn.Linear]:
    return [m for m in net if isinstance(m, nn.Linear)]


class Linearisation:
    """An MLP (Linear, activation, ..., Linear) at its current parameters and inputs x [B, in].

    `output` is the net's output [B, out]. Tangents and gradients are lists
    of tensors shaped like the parameters, (weight, bias) per layer.
    """

    @torch.no_grad()
    def __init__(self, net: nn.Sequential, activation: str, x: torch.Tensor):
        self.layers = linear_layers(net)
        spec = ACTIVATIONS[activation]
        act, derivative = getattr(nn, spec.torch_module)(), spec.slope
        self.inputs: list[torch.Tensor] = []   # input of each layer, [B, in_l]
        self.slopes: list[torch.Tensor] = []   # activation'(z) after each hidden layer, [B, out_l]
        h = x
        for i, layer in enumerate(self.layers):
            self.inputs.append(h)
            z = torch.addmm(layer.bias, h, layer.weight.t())
            if i < len(self.layers) - 1:
                h = act(z)
                self.slopes.append(derivative(z, h))
            else:
                h = z
        self.output = h
        # Work arrays of jvp and vjp, allocated once: at a batch of 2048 a fresh
        # [B, 64] result costs page faults that a product of 25 calls would repeat.
        batch = x.shape[0]
        self._dz = [torch.empty(batch, layer.out_features, dtype=x.dtype, device=x.device) for layer in self.layers]
        self._hidden = [torch.empty(batch, layer.in_features, dtype=x.dtype, device=x.device)
                        for layer in self.layers[1:]]
        self._grads = [torch.empty_like(p) for layer in self.layers for p in (layer.weight, layer.bias)]

    @torch.no_grad()
    def jvp(self, tangents: Sequence[torch.Tensor]) -> torch.Tensor:
        """J dtheta, [B, out]: the first-order change of `output` when theta moves by `tangents`.

        The result is a work array of this object, overwritten by the next call.
        """
        dz = None
        for i, layer in enumerate(self.layers):
            d_weight, d_bias = tangents[2 * i], tangents[2 * i + 1]
            # z = h W^T + b  =>  dz = h dW^T + db + dh W^T, with dh = slope * dz of the layer below.
            new = torch.addmm(d_bias, self.inputs[i], d_weight.t(), out=self._dz[i])
            if dz is not None:
                new.addmm_(torch.mul(dz, self.slopes[i - 1], out=self._hidden[i - 1]), layer.weight.t())
            dz = new
        return dz

    @torch.no_grad()
    def vjp(self, u: torch.Tensor) -> list[torch.Tensor]:
        """J^T u for u [B, out]: back-propagation of u to every (weight, bias).

        The results are work arrays of this object, overwritten by the next call.
        """
        grads = self._grads
        delta = u
        for i in range(len(self.layers) - 1, -1, -1):
            torch.mm(delta.t(), self.inputs[i], out=grads[2 * i])
            torch.sum(delta, 0, out=grads[2 * i + 1])
            if i > 0:
                delta = torch.mm(delta, self.layers[i].weight, out=self._hidden[i - 1]).mul_(self.slopes[i - 1])
        return grads
