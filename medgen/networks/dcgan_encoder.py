"""f-AnoGAN encoder: image patch -> latent z, so that G(E(x)) reconstructs x in one pass.

Schlegl et al., "f-AnoGAN: Fast unsupervised anomaly detection with generative adversarial
networks", Medical Image Analysis 54 (2019). The encoder mirrors the discriminator (strided
convolutions, LeakyReLU 0.2) and ends with a linear layer to ``latent_dim``. The paper's izi_f
encoder (and its reference code, ``Z_REG_TYPE = None``) uses a *linear*, unbounded latent, which
matches a generator trained on z ~ N(0, I); ``latent_bound="tanh"`` bounds it to [-1, 1] (for a
generator trained on uniform z, one of the paper's ablations).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medgen.networks.dcgan import DCGANDiscriminator


class DCGANEncoder(nn.Module):
    """``(B, in_channels, *patch_size)`` -> ``z (B, latent_dim)``.

    Args:
        spatial_dims: 2 or 3.
        latent_dim: size of z, equal to the generator's.
        patch_size: input size; each side divisible by ``2 ** len(channels)``.
        channels: convolution channels from fine to coarse (as the discriminator).
        in_channels: image channels.
        norm: ``"batch"`` (the reference encoder), ``"layer"``, ``"instance"`` or ``None``.
        latent_bound: ``None`` (linear, the paper's izi_f default) or ``"tanh"``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        latent_dim: int = 128,
        patch_size: Sequence[int] = (32, 32, 32),
        channels: Sequence[int] = (32, 64, 128),
        in_channels: int = 1,
        norm: str | None = "batch",
        latent_bound: str | None = None,
    ):
        super().__init__()
        if latent_bound not in (None, "tanh"):
            raise ValueError(f"latent_bound {latent_bound!r} not one of None, 'tanh'")
        # Same convolutional trunk as the discriminator; its linear head becomes the z layer.
        trunk = DCGANDiscriminator(spatial_dims, patch_size, channels, in_channels, norm)
        self.net = trunk.net
        self.fc = nn.Linear(trunk.feature_dim, latent_dim)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)
        nn.init.zeros_(self.fc.bias)
        self.latent_dim = latent_dim
        self.latent_bound = latent_bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(self.net(x).flatten(1))
        return torch.tanh(z) if self.latent_bound == "tanh" else z
