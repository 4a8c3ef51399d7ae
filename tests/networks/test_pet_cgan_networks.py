"""Generator and conditional patch discriminator of the PET c-GAN (also used by Ea-GAN)."""

import pytest
import torch

from medgen.networks.patch_discriminator import ConditionalPatchDiscriminator
from medgen.networks.unet_generator import UNetGenerator


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_generator_shapes_and_tanh_range(dims, size):
    g = UNetGenerator(dims, in_channels=2, out_channels=1, channels=(4, 8, 16))
    x = torch.randn((2, 2) + (size,) * dims) * 5
    y = g(x)
    assert y.shape == (2, 1) + (size,) * dims
    assert y.abs().max() <= 1.0  # tanh output: model space [-1, 1]
    assert g.divisor == 8


def test_generator_non_cubic_input():
    g = UNetGenerator(3, 1, 1, channels=(4, 8))
    assert g(torch.randn(1, 1, 8, 12, 16)).shape == (1, 1, 8, 12, 16)


def test_generator_rejects_sides_not_divisible():
    g = UNetGenerator(3, 1, 1, channels=(4, 8, 16))
    with pytest.raises(ValueError, match="multiples of 8"):
        g(torch.randn(1, 1, 16, 16, 12))


def test_residual_generator_starts_from_its_input():
    g = UNetGenerator(3, 1, 1, channels=(4, 8), residual=True)  # last layer zero-initialised
    x = torch.randn(1, 1, 8, 8, 8) * 3  # not squashed by tanh
    assert torch.allclose(g(x), x)
    with pytest.raises(ValueError):
        UNetGenerator(3, 1, 2, residual=True)


def test_skip_connections_carry_encoder_features():
    # Channels of the decoder input = upsampled + skipped encoder features.
    g = UNetGenerator(3, 1, 1, channels=(4, 8, 16))
    assert g.final.conv.in_channels == 2 * 4
    assert g.up[-1].conv.out_channels == 4


@pytest.mark.parametrize("dims,size,expected", [(2, 64, 6), (3, 32, 2)])
def test_discriminator_patch_logits(dims, size, expected):
    d = ConditionalPatchDiscriminator(dims, in_channels=2, channels=4, num_layers=3)
    cond = torch.randn((2, 1) + (size,) * dims)
    cand = torch.randn((2, 1) + (size,) * dims)
    logits = d(cond, cand)
    # k4 s2 p1 halves 3 times (initial + 2 strided), then two k4 s1 p1 layers each remove 1.
    assert logits.shape == (2, 1) + (expected,) * dims
    feats = d.features(cond, cand)
    assert len(feats) == 3 + 2 and feats[-1].shape == logits.shape
    # raw logits (no sigmoid / LeakyReLU on the output): both signs occur
    assert (logits < 0).any() and (logits > 0).any()


def test_discriminator_is_conditional():
    torch.manual_seed(0)
    d = ConditionalPatchDiscriminator(3, in_channels=2, channels=4, num_layers=2).eval()
    cand = torch.randn(1, 1, 16, 16, 16)
    a = d(torch.zeros_like(cand), cand)
    b = d(torch.randn_like(cand), cand)
    assert not torch.allclose(a, b)  # the condition changes the verdict
    with pytest.raises(ValueError, match="2 channels"):
        d(cand)
