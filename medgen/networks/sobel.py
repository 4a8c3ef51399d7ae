"""The Sobel edge map of Ea-GAN (Yu et al., "Ea-GANs: Edge-Aware Generative Adversarial
Networks for Cross-Modality MR Image Synthesis", IEEE TMI 38(7), 2019), differentiable, 2D or 3D.

As the reference code (by-lab/Ea-GANs, ``sobelLayer``) defines it, for a batch in model space
[-1, 1]:

1. pad every side by one voxel with the constant -1 (the background of model space, so the
   border of a patch is not an edge unless tissue touches it);
2. convolve with one unnormalised kernel per axis: the central difference ``[1, 0, -1]`` along
   that axis times the smoothing ``[1, 2, 1]`` along each other axis;
3. divide by 4 (3D; the 2D kernels sum to a quarter of the 3D ones on each side, so 2D divides
   by 1 and a step gives the same response in both);
4. take the L2 norm over the directions and squash it: ``tanh(|g|) * 2 - 1``, in [-1, 1).

A step of height h across one axis therefore gives ``|g| = 4 h`` next to the step. Each kernel
is separable, so the layer computes it as shifted differences and sums (the same numbers as the
convolution, :meth:`SobelEdges.reference`, at a third of its CPU cost in a training step).
MONAI's ``SobelGradients`` normalises its kernels and reflect-pads, so its maps differ; it is
not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD_VALUE = -1.0
_SCALE = {3: 4.0, 2: 1.0}


def sobel_kernels(spatial_dims: int) -> torch.Tensor:
    """``(spatial_dims, 1, 3, ..., 3)``: one unnormalised directional kernel per axis."""
    if spatial_dims not in _SCALE:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    smooth = torch.tensor([1.0, 2.0, 1.0])
    diff = torch.tensor([1.0, 0.0, -1.0])
    kernels = []
    for axis in range(spatial_dims):
        k = torch.ones((1,) * spatial_dims)
        for a in range(spatial_dims):
            shape = [1] * spatial_dims
            shape[a] = 3
            k = k * (diff if a == axis else smooth).reshape(shape)
        kernels.append(k)
    return torch.stack(kernels)[:, None]


class SobelEdges(nn.Module):
    """``(B, 1, *spatial)`` -> the squashed Sobel magnitude ``(B, 1, *spatial)`` in [-1, 1).

    A fixed (not trained) layer: gradients flow to the input, as G's edge term needs.
    """

    def __init__(self, spatial_dims: int = 3) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.register_buffer("kernels", sobel_kernels(spatial_dims), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != 1:
            raise ValueError(f"SobelEdges({self.spatial_dims}D) expects (B, 1, *spatial), got {tuple(x.shape)}")
        padded = F.pad(x, (1, 1) * self.spatial_dims, mode="constant", value=PAD_VALUE)
        axes = range(2, 2 + self.spatial_dims)
        squared = 0
        for axis in axes:  # each kernel is separable: a difference along `axis`, smoothing along the others
            g = padded
            for other in axes:
                g = _difference(g, other) if other == axis else _smooth(g, other)
            squared = squared + g * g
        magnitude = torch.sqrt(squared / _SCALE[self.spatial_dims] ** 2 + 1e-12)
        return torch.tanh(magnitude) * 2.0 - 1.0

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same map by one convolution with :func:`sobel_kernels` (the reference's way; 2-3x
        slower on a CPU than the separable form, whose equality the tests check)."""
        conv = F.conv3d if self.spatial_dims == 3 else F.conv2d
        padded = F.pad(x, (1, 1) * self.spatial_dims, mode="constant", value=PAD_VALUE)
        grads = conv(padded, self.kernels.to(dtype=x.dtype)) / _SCALE[self.spatial_dims]
        return torch.tanh(torch.sqrt((grads * grads).sum(dim=1, keepdim=True) + 1e-12)) * 2.0 - 1.0


def _shifted(x: torch.Tensor, axis: int, start: int) -> torch.Tensor:
    return x.narrow(axis, start, x.shape[axis] - 2)


def _difference(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``x[i-1] - x[i+1]`` along ``axis`` (the kernel [1, 0, -1] correlated), one voxel shorter each side."""
    return _shifted(x, axis, 0) - _shifted(x, axis, 2)


def _smooth(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``x[i-1] + 2 x[i] + x[i+1]`` along ``axis``."""
    return _shifted(x, axis, 0) + 2 * _shifted(x, axis, 1) + _shifted(x, axis, 2)
