"""U-Net generator for paired image-to-image translation (2D or 3D).

The generator of the 3D conditional GAN for low-dose PET (Wang et al., NeuroImage 2018,
"3D conditional generative adversarial networks for high-quality PET image estimation at low
dose"): a U-Net-like encoder-decoder whose skip connections concatenate encoder features into
the decoder. It is the pix2pix U-Net (Isola et al. 2017) made spatial_dims-generic, which is
also Ea-GAN's generator (Yu et al., IEEE TMI 2019):

* encoder: ``kernel_size`` (4) convolutions with stride 2, BatchNorm (not on the first layer),
  LeakyReLU(0.2);
* decoder: transposed convolutions with stride 2, BatchNorm, ReLU, each followed by the
  concatenation of the encoder features of the same resolution;
* output: a transposed convolution to ``out_channels`` and ``tanh`` (model space is [-1, 1]).

``residual=True`` makes the network predict a correction added to its input,
``y = x + body(x)`` (no output squashing: a correction is not bounded), the residual learning
of denoising CNNs (Zhang et al., DnCNN 2017); its last layer starts at zero, so training starts
from the identity. The paper's generator is ``residual=False``.

Built from MONAI's ``Convolution`` block, so one class serves 2D and 3D.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn


class UNetGenerator(nn.Module):
    """pix2pix-style U-Net; input sides must be divisible by ``2 ** len(channels)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (e.g. 1 low-dose PET volume).
        out_channels: output channels.
        channels: encoder widths, one per resolution level (each level halves the size).
        kernel_size: kernel of the strided (transposed) convolutions; 4 as in the papers.
        norm: MONAI norm name, e.g. ``"batch"`` or ``"instance"``.
        dropout: dropout in the three innermost decoder levels (pix2pix uses 0.5 at 2D 256²;
            0 here by default, as noise in a denoiser's output is unwanted).
        out_activation: ``"tanh"`` or ``None``; applied to the output when ``residual`` is False.
        residual: predict ``x + body(x)`` (requires ``in_channels >= out_channels``; the first
            ``out_channels`` input channels are the ones corrected).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 4,
        norm: str = "batch",
        dropout: float = 0.0,
        out_activation: str | None = "tanh",
        residual: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError("channels needs at least two levels")
        if residual and in_channels < out_channels:
            raise ValueError("residual=True needs in_channels >= out_channels")
        if out_activation not in (None, "tanh"):
            raise ValueError(f"out_activation {out_activation!r} not one of None, 'tanh'")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(int(c) for c in channels)
        self.residual = residual
        self.out_activation = out_activation
        pad = (kernel_size - 1) // 2  # k4 s2 p1 halves / doubles exactly
        lrelu = ("leakyrelu", {"negative_slope": 0.2})

        def down(cin: int, cout: int, use_norm: bool) -> nn.Module:
            return Convolution(
                spatial_dims, cin, cout, strides=2, kernel_size=kernel_size, padding=pad,
                act=lrelu, norm=norm if use_norm else None, bias=not use_norm,
            )

        def up(cin: int, cout: int, drop: float) -> nn.Module:
            return Convolution(
                spatial_dims, cin, cout, strides=2, kernel_size=kernel_size, padding=pad,
                output_padding=0, is_transposed=True, act="relu", norm=norm, dropout=drop, bias=False,
            )

        ch = self.channels
        self.down = nn.ModuleList(down(in_channels if i == 0 else ch[i - 1], ch[i], i > 0) for i in range(len(ch)))
        # Decoder level i upsamples to the resolution of encoder level i-1 and concatenates it.
        n = len(ch)
        ups = []
        for i in range(n - 1, 0, -1):
            cin = ch[i] if i == n - 1 else ch[i] * 2
            ups.append(up(cin, ch[i - 1], dropout if i >= n - 3 else 0.0))
        self.up = nn.ModuleList(ups)
        self.final = Convolution(
            spatial_dims, ch[0] * 2, out_channels, strides=2, kernel_size=kernel_size, padding=pad,
            output_padding=0, is_transposed=True, conv_only=True, bias=True,
        )
        if residual:  # start at the identity: the first estimate is the input itself
            nn.init.zeros_(self.final.conv.weight)
            nn.init.zeros_(self.final.conv.bias)

    @property
    def divisor(self) -> int:
        """Every input side must be a multiple of this."""
        return 2 ** len(self.channels)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        bad = [s for s in x.shape[2:] if s % self.divisor]
        if bad:
            raise ValueError(f"UNetGenerator input sides {tuple(x.shape[2:])} must be multiples of {self.divisor}")
        skips = []
        h = x
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        h = skips.pop()
        for layer in self.up:
            h = torch.cat([layer(h), skips.pop()], dim=1)
        return self.final(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual:
            return x[:, : self.out_channels] + y
        if self.out_activation == "tanh":
            return torch.tanh(y)
        return y
