"""First derivatives of the Nature CNN (and, by autograd, of any net) for the Fisher-vector product.

Both classes have the interface of `mlp_grad.Linearisation` (`output`, `jvp`,
`vjp`), so `Policy.fisher_product` builds the same exact J^T M J v from them,
linearising the net once per update and calling the products 10-25 times:

    LayerLinearisation     a net that is `images` then a chain of `layers()`
                           (networks.NatureCNN): jvp by hand in forward mode,
                           layer after layer, from the kept inputs and activation
                           slopes (two convolutions per conv layer, about twice a
                           forward pass); vjp by one backward pass of the kept graph
    AutogradLinearisation  any module: vjp as above; jvp by the "double-vjp"
                           trick (J^T u is linear in u, so the gradient of
                           <J^T u, v> with respect to u is J v), one backward pass
                           through the kept graph of J^T u. About four times the
                           hand-written jvp's cost on the CNN.

No forward pass is repeated and nothing is approximated: the products are those
of the exact Jacobian (checked against the explicit Hessian of the mean KL in
tests/test_spaces.py). The hand-written mlp_grad stays the path for MLPs.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from trpo_lab.activations import ACTIVATIONS

_SLOPES = {spec.torch_module: spec.slope for spec in ACTIVATIONS.values()}


class AutogradLinearisation:
    """`net` (any module) at its current parameters and inputs x [B, ...]; `output` [B, out]."""

    def __init__(self, net: nn.Module, x: torch.Tensor):
        self.params = list(net.parameters())
        with torch.enable_grad():
            self._out = net(x)
            self.output = self._out.detach()
            self._u = torch.zeros_like(self.output, requires_grad=True)
            self._jt_u = torch.autograd.grad(self._out, self.params, self._u, create_graph=True)

    def jvp(self, tangents: Sequence[torch.Tensor]) -> torch.Tensor:
        """J dtheta, [B, out], for tangents shaped like net.parameters()."""
        (jv,) = torch.autograd.grad(self._jt_u, self._u, list(tangents), retain_graph=True)
        return jv

    def vjp(self, u: torch.Tensor) -> list[torch.Tensor]:
        """J^T u for u [B, out], one tensor per parameter of the net."""
        return list(torch.autograd.grad(self._out, self.params, u, retain_graph=True))


class LayerLinearisation(AutogradLinearisation):
    """A net made of `net.images(x)` then the chain `net.layers()` of Conv2d, Linear, Flatten and
    activation modules (networks.NatureCNN), whose parameters are those layers' (weight, bias) in order."""

    def __init__(self, net: nn.Module, x: torch.Tensor):
        self.params = list(net.parameters())
        self.layers = net.layers()
        self.inputs: list[torch.Tensor] = []   # what each layer took
        self.slopes: dict[int, torch.Tensor] = {}  # activation layer i: its derivative at its input
        with torch.enable_grad():
            h = net.images(x)
            for i, layer in enumerate(self.layers):
                self.inputs.append(h.detach())
                out = layer(h)
                name = type(layer).__name__
                if name in _SLOPES:
                    self.slopes[i] = _SLOPES[name](h.detach(), out.detach())
                h = out
            self._out = h
            self.output = h.detach()

    @torch.no_grad()
    def jvp(self, tangents: Sequence[torch.Tensor]) -> torch.Tensor:
        tangents = iter(tangents)
        dh = None  # the tangent of the layer's input (None: zero, the images do not move)
        for i, layer in enumerate(self.layers):
            x = self.inputs[i]
            if isinstance(layer, nn.Conv2d):
                dw, db = next(tangents), next(tangents)
                new = F.conv2d(x, dw, db, layer.stride, layer.padding, layer.dilation, layer.groups)
                if dh is not None:
                    new += F.conv2d(dh, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
                dh = new
            elif isinstance(layer, nn.Linear):
                dw, db = next(tangents), next(tangents)
                new = torch.addmm(db, x, dw.t())
                if dh is not None:
                    new.addmm_(dh, layer.weight.t())
                dh = new
            elif isinstance(layer, nn.Flatten):
                dh = None if dh is None else dh.flatten(1)
            elif i in self.slopes:
                dh = None if dh is None else dh * self.slopes[i]
            else:
                raise TypeError(f"LayerLinearisation cannot differentiate a {type(layer).__name__}")
        return dh
