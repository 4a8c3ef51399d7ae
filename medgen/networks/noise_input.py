"""Append Gaussian noise channels to a generator's input.

The noise vector z of a conditional GAN (Mirza & Osindero 2014; pix2pix, Isola et al. 2017):
``G(x, z)`` with ``z ~ N(0, I)`` drawn anew at every call, so one input has many outputs. For a
denoiser trained adversarially against noisy targets, z gives G somewhere to draw the noise
texture from other than its input; the mean of several draws then estimates the conditional
mean (see :class:`medgen.models.pet_cgan.PetCGAN`'s ``samples``). The noise is drawn at the
input's own resolution, so it serves any spatial size and both 2D and 3D networks.
"""

from __future__ import annotations

import torch
from torch import nn


class NoiseInput(nn.Module):
    """``forward(x) = net(cat[x, z])`` with ``noise_channels`` channels of z ~ N(0, 1).

    Args:
        net: the generator; its ``in_channels`` must be ``x``'s channels + ``noise_channels``.
        noise_channels: channels of z (> 0).
    """

    def __init__(self, net: nn.Module, noise_channels: int) -> None:
        super().__init__()
        if noise_channels < 1:
            raise ValueError(f"noise_channels must be >= 1, got {noise_channels}")
        self.net = net
        self.noise_channels = noise_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.randn((x.shape[0], self.noise_channels, *x.shape[2:]), device=x.device, dtype=x.dtype)
        return self.net(torch.cat([x, z], dim=1))
