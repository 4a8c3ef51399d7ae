"""DCGAN generator and discriminator/critic for 2D or 3D patches.

Radford et al., "Unsupervised representation learning with deep convolutional GANs" (ICLR 2016),
as used by AnoGAN (Schlegl et al., IPMI 2017): the generator projects a latent vector ``z`` to a
small feature map, then doubles the resolution with strided transposed convolutions (kernel 4,
stride 2) with BatchNorm and ReLU, and ends with ``tanh``; the discriminator halves the resolution
with strided convolutions (kernel 4, stride 2) and LeakyReLU 0.2, BatchNorm on every layer but the
first, and a linear output.

For f-AnoGAN (Schlegl et al., MedIA 2019) the same discriminator is trained as a WGAN-GP critic.
The gradient penalty is defined per sample, so the critic must not use BatchNorm (Gulrajani et al.
2017); ``norm="layer"`` normalises each sample over channels and space (``GroupNorm(1, C)``, the
layer norm of the reference implementation), ``"instance"`` and ``None`` are also accepted.

The discriminator returns ``(features, logit)``: ``features`` is the flattened output of its last
convolution (the layer before the linear output), the ``f`` of AnoGAN's feature-matching term and
of f-AnoGAN's izi_f loss. :meth:`DCGANDiscriminator.feature_map` gives the same layer unflattened,
for a spatial feature residual.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from monai.networks.layers import Conv, Norm
from torch import nn

NORMS = ("batch", "layer", "instance", None)


def _norm(kind: str | None, spatial_dims: int, channels: int) -> nn.Module:
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels)
    if kind == "instance":
        return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)
    if kind == "layer":
        # One group = normalise each sample over (C, *spatial), per-channel affine: layer norm.
        return nn.GroupNorm(1, channels)
    raise ValueError(f"norm {kind!r} not one of {NORMS}")


def _base_size(patch_size: Sequence[int], n_layers: int) -> tuple[int, ...]:
    factor = 2**n_layers
    for s in patch_size:
        if s % factor != 0:
            raise ValueError(f"patch size {tuple(patch_size)} must be divisible by 2**{n_layers} = {factor}")
    return tuple(s // factor for s in patch_size)


def _init_dcgan(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z ``(B, latent_dim)`` -> patch ``(B, out_channels, *patch_size)`` in [-1, 1].

    Args:
        spatial_dims: 2 or 3.
        latent_dim: size of z (z ~ N(0, I)).
        patch_size: output size; each side divisible by ``2 ** len(channels)``.
        channels: feature channels from the coarsest map to the finest, e.g. ``(128, 64, 32)``:
            one stride-2 transposed convolution per entry.
        out_channels: image channels.
        norm: ``"batch"`` as in DCGAN (also used by the f-AnoGAN generator).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        latent_dim: int = 128,
        patch_size: Sequence[int] = (32, 32, 32),
        channels: Sequence[int] = (128, 64, 32),
        out_channels: int = 1,
        norm: str | None = "batch",
    ):
        super().__init__()
        if len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {tuple(patch_size)} does not have {spatial_dims} dimensions")
        self.spatial_dims = spatial_dims
        self.latent_dim = latent_dim
        self.patch_size = tuple(int(s) for s in patch_size)
        channels = list(channels)
        self.base_size = _base_size(self.patch_size, len(channels))
        conv_t = Conv[Conv.CONVTRANS, spatial_dims]
        # Project and reshape: a linear layer to channels[0] maps of the base size.
        self.project = nn.Linear(latent_dim, channels[0] * math.prod(self.base_size))
        self.project_norm = nn.Sequential(_norm(norm, spatial_dims, channels[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                conv_t(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=norm is None),
                _norm(norm, spatial_dims, c_out),
                nn.ReLU(inplace=True),
            ]
        # Last upsampling goes straight to the image; tanh bounds it to the model range [-1, 1].
        layers += [conv_t(channels[-1], out_channels, kernel_size=4, stride=2, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.channels = tuple(channels)
        _init_dcgan(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], self.channels[0], *self.base_size)
        return self.net(self.project_norm(h))


class DCGANDiscriminator(nn.Module):
    """Patch ``(B, in_channels, *patch_size)`` -> ``(features (B, F), logit (B,))``.

    Args:
        spatial_dims: 2 or 3.
        patch_size: input size; each side divisible by ``2 ** len(channels)``.
        channels: feature channels from the finest map to the coarsest, e.g. ``(32, 64, 128)``:
            one stride-2 convolution per entry.
        in_channels: image channels.
        norm: ``"batch"`` (DCGAN discriminator) or ``"layer"`` / ``"instance"`` / ``None``
            (WGAN-GP critic: no BatchNorm). Never applied to the first layer (DCGAN).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        patch_size: Sequence[int] = (32, 32, 32),
        channels: Sequence[int] = (32, 64, 128),
        in_channels: int = 1,
        norm: str | None = "batch",
    ):
        super().__init__()
        if len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {tuple(patch_size)} does not have {spatial_dims} dimensions")
        self.spatial_dims = spatial_dims
        self.patch_size = tuple(int(s) for s in patch_size)
        channels = list(channels)
        self.out_size = _base_size(self.patch_size, len(channels))
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        c_prev = in_channels
        for i, c in enumerate(channels):
            use_norm = i > 0 and norm is not None
            layers += [conv(c_prev, c, kernel_size=4, stride=2, padding=1, bias=not use_norm)]
            if use_norm:
                layers.append(_norm(norm, spatial_dims, c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_prev = c
        self.net = nn.Sequential(*layers)
        self.feature_dim = channels[-1] * math.prod(self.out_size)
        self.fc = nn.Linear(self.feature_dim, 1)
        _init_dcgan(self)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional layer, ``(B, channels[-1], *patch_size / 2**n)``."""
        return self.net(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.feature_map(x).flatten(1)
        return features, self.fc(features).squeeze(1)
