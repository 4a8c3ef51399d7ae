"""Multi-connected domain classifier (Kamnitsas et al., IPMI 2017), 2D or 3D.

Kamnitsas et al., "Unsupervised domain adaptation in brain lesion segmentation with adversarial
networks": the domain discriminator is fed from several layers of the segmenter at once
("multi-connected": intermediate and final layers), because the features that betray the
scanner are not only the last ones. Each input feature map is resampled to a common size (the
coarsest input's, by adaptive average pooling; interpolation upwards for any smaller one),
the maps are concatenated along channels, and a small CNN ends in global average pooling and one
logit (source vs target). It is trained through a gradient reversal layer
(:mod:`medgen.networks.gradient_reversal`, Ganin & Lempitsky 2015), applied by the caller.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn


class MultiConnectedDomainClassifier(nn.Module):
    """Several feature maps -> one domain logit per item.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of each input feature map, in the order they are passed.
        channels: widths of the convolutions after the concatenation (3x3(x3), stride 1).
        norm: MONAI norm name or ``None``; ``"batch"`` (default) makes the logit independent of
            the features' scale. Without it the reversed gradient teaches the segmenter to inflate
            its features until the logits and the BCE explode (measured: domain BCE 0.65 -> 10^6
            within minutes, and the segmentation collapsed). A training batch holds both domains'
            patches, so the batch statistics are those of the mixture. (Instance norm would
            remove the per-channel means that global pooling reads.)
    """

    def __init__(self, spatial_dims: int = 3, in_channels: Sequence[int] = (16, 32), channels: Sequence[int] = (64, 64),
                 norm: str | None = "batch") -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = [int(c) for c in in_channels]
        if not self.in_channels:
            raise ValueError("the domain classifier needs at least one feature map")
        layers = []
        cin = sum(self.in_channels)
        for c in channels:
            layers.append(Convolution(spatial_dims, cin, int(c), kernel_size=3, act=("leakyrelu", {"negative_slope": 0.2}),
                                      norm=norm))
            cin = int(c)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: maps ``(B, C_k, *spatial_k)`` -> logits ``(B,)`` (target = 1)."""
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}")
        size = min((tuple(f.shape[2:]) for f in features), key=lambda s: torch.Size(s).numel())
        resampled = []
        for f in features:
            if tuple(f.shape[2:]) == size:
                resampled.append(f)
            elif all(a >= b for a, b in zip(f.shape[2:], size)):
                pool = F.adaptive_avg_pool3d if self.spatial_dims == 3 else F.adaptive_avg_pool2d
                resampled.append(pool(f, size))
            else:  # a map smaller along some axis than the smallest one: interpolate to the size
                resampled.append(F.interpolate(f, size=size, mode="trilinear" if self.spatial_dims == 3 else "bilinear",
                                               align_corners=False))
        h = self.body(torch.cat(resampled, dim=1))
        return self.head(h.flatten(2).mean(-1))[:, 0]
