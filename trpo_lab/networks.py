"""The networks a policy or critic can have: an MLP on a flat vector, or the Nature CNN on an image.

    mlp          Linear-activation stack (policies.mlp); the fast paths (numpy actor,
                 hand-written Fisher-vector product and critic fit) exist for it only
    nature_cnn   the conv stack of Mnih et al. 2015 ("Human-level control through deep
                 reinforcement learning"): 32 8x8 stride 4, 64 4x4 stride 2, 64 3x3
                 stride 1, ReLU after each, then the MLP head of `network.hidden`

Observations always travel as flat float vectors [B, prod(shape)] (the rollout
stores them so); `NatureCNN` reshapes them to the image, scales 0..255 to [0, 1]
and reorders height x width x channels to channels first.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn



def is_image_space(space: gym.Space) -> bool:
    """A Box of uint8 with 2 (H x W) or 3 (H x W x C or C x H x W) dimensions: an image."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


def image_layout(shape: tuple[int, ...]) -> tuple[tuple[int, int, int], bool]:
    """((channels, height, width), channels_last) of an image observation's shape.

    H x W is one channel. Of three dimensions, the channels are the first when it
    is at most 4 (frame stacks, C x H x W), else the last when that is at most 4
    (H x W x RGB), else the smallest of the two ends.
    """
    if len(shape) == 2:
        return (1, shape[0], shape[1]), False
    first, last = shape[0], shape[-1]
    channels_last = not (first <= 4) and (last <= 4 or last < first)
    if channels_last:
        return (last, shape[0], shape[1]), True
    return (first, shape[1], shape[2]), False


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class NatureCNN(nn.Module):
    """Flat image observations [B, prod(shape)] (values 0..255) -> [B, out_dim].

    The conv stack (ReLU after each layer), flattened, then `head`, an MLP
    (policies.mlp) from the conv features to out_dim.
    """

    def __init__(self, obs_shape: tuple[int, ...], head_factory, ortho_init: bool):
        super().__init__()
        (c, h, w), self.channels_last = image_layout(tuple(obs_shape))
        self.obs_shape = tuple(obs_shape)
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            h, w = conv_out_size(h, kernel, stride), conv_out_size(w, kernel, stride)
            if h < 1 or w < 1:
                from trpo_lab.envs import EnvError  # (envs imports this module)

                raise EnvError(f"image observations of shape {tuple(obs_shape)} are too small for "
                                 "network=nature_cnn (it needs at least 36 x 36 pixels)")
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        )
        if ortho_init:
            for m in self.conv:
                if isinstance(m, nn.Conv2d):
                    nn.init.orthogonal_(m.weight, gain=math.sqrt(2.0))
                    nn.init.zeros_(m.bias)
        self.head = head_factory(64 * h * w)

    def images(self, obs: torch.Tensor) -> torch.Tensor:
        """Flat observations [B, prod(shape)] as the conv stack's input [B, C, H, W] in [0, 1]."""
        x = obs.reshape(obs.shape[0], *self.obs_shape) / 255.0
        if len(self.obs_shape) == 2:
            return x.unsqueeze(1)
        if self.channels_last:
            return x.permute(0, 3, 1, 2).contiguous()  # (channels_last strides would reach the gradients)
        return x

    def layers(self) -> list[nn.Module]:
        """Every layer after `images`, in order (conv stack, Flatten, head): what autodiff linearises."""
        return [*self.conv, nn.Flatten(), *self.head]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.images(obs)).flatten(1))


def network_kind(name: str, observation_space: gym.Space) -> str:
    """`network.type` resolved: auto is nature_cnn for image observations, else mlp."""
    if name == "auto":
        return "nature_cnn" if is_image_space(observation_space) else "mlp"
    if name == "nature_cnn" and not is_image_space(observation_space):
        from trpo_lab.envs import EnvError  # (envs imports this module)

        raise EnvError(f"network.type=nature_cnn needs image observations (a uint8 Box of H x W, H x W x C "
                         f"or C x H x W); this env's are {observation_space}")
    return name


def net_factory(network, observation_space: gym.Space):
    """The `policies.NetFactory` that `network` (a NetworkConfig) asks for on these observations;
    None for the MLP (the policies' own default)."""
    if network_kind(network.type, observation_space) == "mlp":
        return None
    from trpo_lab.policies import mlp

    hidden, activation, ortho = list(network.hidden), network.activation, network.ortho_init
    return lambda out_dim, out_gain: NatureCNN(
        observation_space.shape, lambda n_in: mlp(n_in, hidden, out_dim, activation, ortho, out_gain), ortho)
