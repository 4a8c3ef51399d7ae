"""Conditional patch discriminator (2D or 3D) for paired translation GANs.

The discriminator of the 3D conditional GAN for low-dose PET (Wang et al., NeuroImage 2018)
judges a (condition, candidate) pair — the low-dose input concatenated channel-wise with either
the full-dose scan or the generator's estimate — patch by patch, as in pix2pix (Isola et al.
2017) and Ea-GAN (Yu et al., IEEE TMI 2019, which adds a Sobel edge map as a third input).

A thin wrapper over MONAI's ``PatchDiscriminator`` (k4 convolutions, LeakyReLU 0.2, BatchNorm,
no norm on the first layer, a final 1-channel convolution). MONAI's network returns every
intermediate feature map with the logits last; ``forward`` returns the logits only (raw, no
sigmoid: the adversarial loss in ``medgen.losses`` applies its own link) and ``features`` the list.
"""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn


class ConditionalPatchDiscriminator(nn.Module):
    """Patch discriminator on ``cat([condition, candidate], dim=1)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of condition + candidate together (2 for low-dose + estimate;
            3 for Ea-GAN's dEa-GAN with an edge map).
        out_channels: logits channels (1).
        channels: filters of the first layer (doubled per layer); 64 in pix2pix/Ea-GAN.
        num_layers: strided layers after the first (3 = the 70×70-style PatchGAN); the receptive
            field and the output size shrink with each; a 3D input needs sides ≥ 2 ** (num_layers + 2).
        norm: MONAI norm name.
        kernel_size: 4 as in the papers.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: int = 64,
        num_layers: int = 3,
        norm: str = "batch",
        kernel_size: int = 4,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.net = PatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers_d=num_layers,
            kernel_size=kernel_size,
            activation=("leakyrelu", {"negative_slope": 0.2}),
            norm=norm,
            padding=(kernel_size - 1) // 2,
        )

    def output_side(self, side: int) -> int:
        """Side of the logits map for an input side ``side`` (< 1: the input is too small)."""
        for m in self.net.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                k, st, p = m.kernel_size[0], m.stride[0], m.padding[0]
                side = (side + 2 * p - k) // st + 1
                if side < 1:
                    return side
        return side

    def min_side(self) -> int:
        """The smallest input side this discriminator can judge."""
        side = 1
        while self.output_side(side) < 1:
            side += 1
        return side

    @staticmethod
    def pair(*tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat(tensors, dim=1)

    def features(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """All intermediate feature maps of the pair; the last one is the logits map."""
        x = self.pair(*tensors)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"discriminator expects {self.in_channels} channels in total, got {x.shape[1]}")
        return self.net(x)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Patch logits of the channel-wise concatenation of `tensors` (condition first)."""
        return self.features(*tensors)[-1]
