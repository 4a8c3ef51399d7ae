import math

import pytest
import torch

from medgen.networks.sobel import SobelEdges, sobel_kernels


@pytest.mark.parametrize("dims", [2, 3])
def test_step_edge_matches_the_hand_computed_response(dims):
    # Background -1 and a step up by h = 0.1 half-way along the first axis, constant along the
    # others. Next to the step the first-axis kernel sees the smoothed plane on each side:
    # 3D: 16 weights x h / 4; 2D: 4 weights x h / 1 -- |g| = 0.4 either way, other axes 0.
    side, h = 12, 0.1
    x = torch.full((1, 1) + (side,) * dims, -1.0)
    x[:, :, side // 2:] += h
    out = SobelEdges(dims)(x)
    interior = (slice(None), slice(None)) + (slice(2, side - 2),) * (dims - 1)
    for i in (side // 2 - 1, side // 2):  # the two voxels either side of the step
        values = out[(0, 0, i) + interior[2:]]
        assert torch.allclose(values, torch.full_like(values, 2 * math.tanh(0.4) - 1), atol=1e-5)
    flat = out[(0, 0, slice(1, side // 2 - 1)) + interior[2:]]  # inside the background: no edge
    assert torch.allclose(flat, torch.full_like(flat, -1.0), atol=1e-5)
    # padding with -1: a background volume has no edge at its border
    assert torch.allclose(SobelEdges(dims)(torch.full_like(x, -1.0)), torch.full_like(x, -1.0), atol=1e-5)


def test_kernels_are_the_unnormalised_directional_sobel():
    k = sobel_kernels(3)
    assert k.shape == (3, 1, 3, 3, 3)
    assert k[0, 0, 0].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]] and k[0, 0, 1].abs().sum() == 0
    assert torch.equal(k[0, 0, 2], -k[0, 0, 0])
    assert torch.equal(k[1, 0], k[0, 0].permute(1, 0, 2)) and torch.equal(k[2, 0], k[0, 0].permute(1, 2, 0))
    assert sobel_kernels(2)[0, 0].tolist() == [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]


@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_flow_to_the_input(dims):
    x = (torch.rand((2, 1) + (10,) * dims) * 2 - 1).requires_grad_(True)
    SobelEdges(dims)(x).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_constant_input_has_finite_gradients():
    x = torch.zeros((1, 1, 6, 6, 6), requires_grad=True)  # |g| = 0 inside: sqrt's gradient must stay finite
    SobelEdges(3)(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_the_separable_form_equals_the_reference_convolution(dims):
    torch.manual_seed(0)
    x = (torch.rand((2, 1) + (9, 11, 7)[:dims]) * 2 - 1).requires_grad_(True)
    sobel = SobelEdges(dims)
    fast, slow = sobel(x), sobel.reference(x)
    assert torch.allclose(fast, slow, atol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.sum(), x)
    (g_slow,) = torch.autograd.grad(slow.sum(), x)
    assert torch.allclose(g_fast, g_slow, atol=1e-4)
