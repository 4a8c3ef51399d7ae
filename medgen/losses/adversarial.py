"""Adversarial losses on raw discriminator outputs (logits / critic values, no activation).

* ``bce``   — the original GAN (Goodfellow 2014), non-saturating generator loss (DCGAN, AnoGAN);
* ``lsgan`` — least squares (Mao 2017) on raw outputs, targets 1/0, as pix2pix/CycleGAN/Ea-GAN
  use it (note: MONAI's PatchAdversarialLoss adds a LeakyReLU unless told not to);
* ``wgan-gp`` — Wasserstein critic (Gulrajani 2017); add :func:`gradient_penalty` for D;
* ``hinge`` — hinge loss (Lim & Ye 2017; Miyato 2018).

``d_loss(real, fake)`` is the discriminator's loss; ``g_loss(fake)`` the generator's.
Both accept a tensor or a list of tensors (multi-scale / patch outputs are averaged).

``smooth_labels=True`` (bce and lsgan) gives D noisy targets, as Ea-GAN's reference does: real
~ U(0.7, 1.2), fake ~ U(0, 0.3), one draw per call. Only D's loss: smoothing keeps D from growing
over-confident, while G's target stays 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

KINDS = ("bce", "lsgan", "wgan-gp", "hinge")


def _as_list(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [x] if torch.is_tensor(x) else list(x)


SMOOTH_REAL = (0.7, 1.2)
SMOOTH_FAKE = (0.0, 0.3)


class AdversarialLoss:
    def __init__(self, kind: str = "lsgan", smooth_labels: bool = False):
        if kind not in KINDS:
            raise ValueError(f"adversarial loss {kind!r} not one of {KINDS}")
        if smooth_labels and kind not in ("bce", "lsgan"):
            raise ValueError(f"label smoothing needs bce or lsgan targets, not {kind!r}")
        self.kind = kind
        self.smooth_labels = smooth_labels

    def _target(self, out: torch.Tensor, real: bool, for_generator: bool) -> torch.Tensor:
        if self.smooth_labels and not for_generator:
            low, high = SMOOTH_REAL if real else SMOOTH_FAKE
            value = low + (high - low) * float(torch.rand(()))
            if self.kind == "bce":
                value = min(value, 1.0)  # a probability
            return torch.full_like(out, value)
        return torch.ones_like(out) if real else torch.zeros_like(out)

    def _term(self, out: torch.Tensor, real: bool, for_generator: bool = False) -> torch.Tensor:
        out = out.float()
        k = self.kind
        if k == "bce":
            return F.binary_cross_entropy_with_logits(out, self._target(out, real, for_generator))
        if k == "lsgan":
            return F.mse_loss(out, self._target(out, real, for_generator))
        if k == "wgan-gp":
            return -out.mean() if real else out.mean()
        # hinge
        if for_generator:
            return -out.mean()
        return F.relu(1.0 - out).mean() if real else F.relu(1.0 + out).mean()

    def d_loss(self, real_out, fake_out) -> torch.Tensor:
        real = _as_list(real_out)
        fake = _as_list(fake_out)
        terms = [self._term(r, True) + self._term(f, False) for r, f in zip(real, fake)]
        return torch.stack(terms).mean()

    def g_loss(self, fake_out) -> torch.Tensor:
        terms = [self._term(f, True, for_generator=True) for f in _as_list(fake_out)]
        return torch.stack(terms).mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty E[(||∇D(x̂)||₂ − 1)²] on random interpolates x̂ (Gulrajani et al. 2017).

    `critic` maps a batch to one value per sample (or a tensor whose mean per sample is used).
    """
    b = real.shape[0]
    alpha = torch.rand((b,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    if isinstance(out, (list, tuple)):
        out = out[-1]
    out = out.reshape(b, -1).mean(dim=1)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.reshape(b, -1).norm(2, dim=1) - 1.0) ** 2).mean()
