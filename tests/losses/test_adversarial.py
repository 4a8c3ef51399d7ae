"""Adversarial losses against hand-computed values, and the WGAN-GP penalty on a known critic."""

import math

import pytest
import torch

from medgen.losses.adversarial import AdversarialLoss, gradient_penalty


def test_bce_on_logits_matches_the_formula():
    loss = AdversarialLoss("bce")
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731 - BCE with logits: softplus(-x) for 1, softplus(x) for 0
    expected_d = (softplus(-2.0) + softplus(0.0)) / 2 + (softplus(-1.0) + softplus(1.0)) / 2
    assert float(loss.d_loss(real, fake)) == pytest.approx(expected_d)
    assert float(loss.g_loss(fake)) == pytest.approx((softplus(1.0) + softplus(-1.0)) / 2)  # non-saturating


def test_lsgan_has_no_output_activation():
    loss = AdversarialLoss("lsgan")  # pix2pix/CycleGAN/Ea-GAN's: raw outputs, targets 1 and 0
    real, fake = torch.tensor([0.5, 1.5]), torch.tensor([-0.5, 0.25])
    assert float(loss.d_loss(real, fake)) == pytest.approx((0.25 + 0.25) / 2 + (0.25 + 0.0625) / 2)
    assert float(loss.g_loss(fake)) == pytest.approx((2.25 + 0.5625) / 2)


def test_wgan_and_hinge_values():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([0.5, -2.0])
    w = AdversarialLoss("wgan-gp")
    assert float(w.d_loss(real, fake)) == pytest.approx(-2.0 + -0.75)
    assert float(w.g_loss(fake)) == pytest.approx(0.75)
    h = AdversarialLoss("hinge")
    assert float(h.d_loss(real, fake)) == pytest.approx(0.0 + (1.5 + 0.0) / 2)  # relu(1-r) + relu(1+f)
    assert float(h.g_loss(fake)) == pytest.approx(0.75)


def test_lists_of_outputs_are_averaged_and_unknown_kinds_refused():
    loss = AdversarialLoss("lsgan")
    a, b = torch.zeros(3), torch.ones(3)
    assert float(loss.g_loss([a, b])) == pytest.approx((1.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="vanilla"):
        AdversarialLoss("vanilla")


def test_gradient_penalty_of_a_linear_critic():
    torch.manual_seed(0)
    w = torch.tensor([3.0, 4.0])  # ||∇D|| = 5 everywhere: penalty (5 - 1)^2 = 16
    critic = lambda x: x @ w  # noqa: E731
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    assert float(gradient_penalty(critic, real, fake)) == pytest.approx(16.0)
    unit = lambda x: x @ (w / 5)  # noqa: E731 - a 1-Lipschitz critic pays nothing
    assert float(gradient_penalty(unit, real, fake)) == pytest.approx(0.0, abs=1e-10)
