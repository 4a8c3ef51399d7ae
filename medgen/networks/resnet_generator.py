"""ResNet generator for unpaired image-to-image translation (2D or 3D).

CycleGAN's generator (Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017; reference: junyanz/pytorch-CycleGAN-and-pix2pix
``ResnetGenerator``), after Johnson et al. 2016, as Wolterink et al. ("Deep MR to CT synthesis
using unpaired data", SASHIMI 2017) used it for MR -> CT::

    pad 3, conv7 -> ngf, norm, ReLU
    2 x [conv3 stride 2 -> 2x channels, norm, ReLU]              (ngf -> 2 ngf -> 4 ngf)
    n_blocks x [pad 1, conv3, norm, ReLU, pad 1, conv3, norm] + skip
    2 x [transposed conv3 stride 2 (output padding 1) -> channels / 2, norm, ReLU]
    pad 3, conv7 -> out_channels, tanh

Instance norm without affine parameters (so the convolutions keep their bias, as the reference
does with instance norm), no dropout; 6 blocks for 128² inputs and 9 for 256² (the presets
:data:`PRESETS`). Padding ``reflect`` (the reference) or ``replicate`` (ganslate's 3D ResNet).
Weights N(0, 0.02), biases 0 (the reference's ``init_type normal``). The two stride-2 levels
need input sides divisible by 4. Layer factories by ``spatial_dims`` make one class serve 2D
slices and 3D patches.
"""

from __future__ import annotations

import torch
from torch import nn

PRESETS = {"resnet_6blocks": 6, "resnet_9blocks": 9}
PADDINGS = ("reflect", "replicate")


def _conv(dims: int):
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _conv_t(dims: int):
    return nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d


def _norm(dims: int, channels: int) -> nn.Module:
    # affine=False, no running statistics: the reference's instance norm (train and test alike).
    return (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)(channels, affine=False, track_running_stats=False)


def _pad(dims: int, padding: str, amount: int) -> nn.Module:
    if padding == "reflect":
        return (nn.ReflectionPad3d if dims == 3 else nn.ReflectionPad2d)(amount)
    return (nn.ReplicationPad3d if dims == 3 else nn.ReplicationPad2d)(amount)


class ResidualBlock(nn.Module):
    """``x + [pad, conv3, norm, ReLU, pad, conv3, norm](x)`` at constant width."""

    def __init__(self, dims: int, channels: int, padding: str = "reflect") -> None:
        super().__init__()
        conv = _conv(dims)
        self.body = nn.Sequential(
            _pad(dims, padding, 1), conv(channels, channels, 3), _norm(dims, channels), nn.ReLU(True),
            _pad(dims, padding, 1), conv(channels, channels, 3), _norm(dims, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """CycleGAN ResNet generator; input sides must be divisible by :attr:`divisor` (4).

    Args:
        spatial_dims: 2 or 3.
        in_channels / out_channels: 1 each for one modality to another.
        ngf: filters of the first layer (64 in the paper); the inner ones have 2 and 4 times as many.
        n_blocks: residual blocks at the lowest resolution (6 at 128², 9 at 256²; see :data:`PRESETS`).
        padding: ``"reflect"`` (the reference) or ``"replicate"`` (ganslate's 3D generator).
    """

    divisor = 4  # two stride-2 levels

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1, ngf: int = 64,
                 n_blocks: int = 9, padding: str = "reflect") -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"ngf must be >= 1 and n_blocks >= 0, got {ngf} and {n_blocks}")
        d = self.spatial_dims = spatial_dims
        conv, conv_t = _conv(d), _conv_t(d)
        layers: list[nn.Module] = [_pad(d, padding, 3), conv(in_channels, ngf, 7), _norm(d, ngf), nn.ReLU(True)]
        width = ngf
        for _ in range(2):
            layers += [conv(width, 2 * width, 3, stride=2, padding=1), _norm(d, 2 * width), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(d, width, padding) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [conv_t(width, width // 2, 3, stride=2, padding=1, output_padding=1), _norm(d, width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [_pad(d, padding, 3), conv(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"ResNetGenerator needs input sides divisible by {self.divisor}, got {tuple(x.shape[2:])}")
        return self.net(x)


def _init_normal(m: nn.Module) -> None:
    """The reference's ``init_type normal``: conv weights N(0, 0.02), biases 0."""
    if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
