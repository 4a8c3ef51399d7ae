"""A residual U-Net segmenter that also returns the features of its layers (2D or 3D).

The shape of MONAI's ``UNet`` (Kerfoot et al. 2018: residual units, strided convolutions down,
transposed convolutions up, skip connections by concatenation; the first unit already has
stride 2, which makes it cheap on a CPU) written level by level from MONAI's ``ResidualUnit``
and ``Convolution`` blocks, so that the output of every encoder level, the bottleneck and every
inner decoder level can be handed to a domain classifier: the "multi-connected" domain
discriminator of Kamnitsas et al., "Unsupervised domain adaptation in brain lesion segmentation
with adversarial networks", IPMI 2017, reads several layers of the segmenter (DeepMedic there),
since a shift between scanners shows in low-level features as much as in high-level ones.
(MONAI's ``UNet`` nests its levels inside ``SkipConnection`` blocks and returns only the logits.)
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn


class FeatureUNet(nn.Module):
    """Residual U-Net; ``forward`` gives logits, :meth:`forward_features` logits and features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 scan).
        out_channels: classes, background included (logits, no softmax).
        channels: widths per level, the last one the bottleneck's (at least two entries).
        strides: stride of each level but the bottleneck (``len(channels) - 1`` entries); the
            input's sides must be multiples of their product (:attr:`divisor`).
        num_res_units: convolutions per residual unit (MONAI's ``num_res_units``).
        norm: MONAI norm name (``"instance"``, as MONAI's UNet; ``"batch"``).
        dropout: dropout inside the units.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                 channels: Sequence[int] = (16, 32, 64, 128), strides: Sequence[int] | None = None,
                 num_res_units: int = 2, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {channels}")
        strides = [2] * (len(channels) - 1) if strides is None else [int(s) for s in strides]
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides needs {len(channels) - 1} entries (one per level but the bottleneck), "
                             f"got {strides}")
        self.spatial_dims, self.channels, self.strides = spatial_dims, channels, strides
        units = max(1, int(num_res_units))

        def unit(cin: int, cout: int, stride: int, last_conv_only: bool = False) -> nn.Module:
            return ResidualUnit(spatial_dims, cin, cout, strides=stride, kernel_size=3, subunits=units, act="PRELU",
                                norm=norm, dropout=dropout, last_conv_only=last_conv_only)

        ins = [in_channels] + channels[:-2]
        self.down = nn.ModuleList(unit(ins[i], channels[i], strides[i]) for i in range(len(strides)))
        self.bottom = unit(channels[-2], channels[-1], 1)
        self.up = nn.ModuleList()
        for i in range(len(strides)):
            top = i == 0
            cin = channels[i] + (channels[i + 1] if i == len(strides) - 1 else channels[i])
            cout = out_channels if top else channels[i - 1]
            self.up.append(nn.Sequential(
                Convolution(spatial_dims, cin, cout, strides=strides[i], kernel_size=3, act="PRELU", norm=norm,
                            dropout=dropout, is_transposed=True),
                unit(cout, cout, 1, last_conv_only=top),  # the top one ends in a bare conv: logits
            ))

    @property
    def divisor(self) -> int:
        """What the input's sides must divide by."""
        out = 1
        for s in self.strides:
            out *= s
        return out

    def feature_channels(self) -> list[int]:
        """Channels of the features :meth:`forward_features` returns, in its order."""
        return self.channels[:-1] + [self.channels[-1]] + [self.channels[i - 1] for i in range(len(self.strides) - 1, 0, -1)]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(logits, features)``: features of every encoder level (finest first), the bottleneck,
        and every decoder level below the output (coarsest first)."""
        skips = []
        h = x
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        h = self.bottom(h)
        features = skips + [h]
        for i in range(len(self.up) - 1, -1, -1):
            h = self.up[i](torch.cat([skips[i], h], dim=1))
            if i > 0:
                features.append(h)
        return h, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
