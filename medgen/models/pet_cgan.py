"""3D conditional GAN for full-dose PET estimation from low-dose PET.

Wang et al., "3D conditional generative adversarial networks for high-quality PET image
estimation at low dose", NeuroImage 174 (2018). A U-Net-like generator G maps a low-dose volume
x to an estimate G(x) of the full-dose volume y; a conditional discriminator D judges the pairs
(x, y) and (x, G(x)). Losses (the paper's, pix2pix-style)::

    L_D = ½ [BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)]
    L_G = BCE(D(x, G(x)), 1) + λ · |y − G(x)|₁          (λ large: the L1 term dominates)

Training is on patches; whole volumes are estimated with a Gaussian-weighted sliding window.

Variants (constructor flags):

* ``adversarial=False`` — the L1-only 3D U-Net, the paper's ablation (no D is built);
* ``refine=True`` — the paper's concatenated c-GANs: a second c-GAN (G₂, D₂) takes the first
  estimate as its input and refines it. Here both stages train in the same loop, stage 2 on the
  detached stage-1 estimate (the paper trains them one after the other);
* ``residual=True`` — G predicts a correction added to its input (residual learning; off in
  the paper). On a CPU budget it learns much faster, since G starts at the identity;
* ``flip_ensemble=True`` — average the estimates of every flip of the input at inference
  (+0.3-0.5 dB on the phantoms and the MNI simulation, for 8x the inference time);
* ``content_loss="mse"`` — λ·MSE instead of λ·L1: G then estimates the conditional mean of the
  full dose rather than its median: +0.19 dB on the phantoms (6-minute probes, 24.60 against
  24.41), since low-count Poisson noise is skewed and PSNR scores the mean;
* ``l1_warmup=f`` — for the first share f of the training budget (epochs or
  ``trainer.max_minutes``, whichever runs out first) G trains on λ·L1 alone and D is neither
  trained nor asked: the content-loss initialisation of SRGAN (Ledig et al. 2017). Why: with λ
  large the early steps are L1-dominated anyway, and D sits at chance (loss ≈ ln 2) until G's
  estimates are good, so training it then buys nothing and costs each step two to three times
  its L1-only price (4-5x more generator updates in the same minutes).

Tried and removed, with the measurements in benchmarks/RESULTS.md: a noise input z with averaged
draws (the generator learns to ignore z: 1, 4 and 16 draws within 0.001 dB), a full-resolution
input skip in the U-Net, and a separate learning rate for D.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medgen.data.paired import PairedVolumes
from medgen.errors import ConfigError
from medgen.losses.adversarial import AdversarialLoss
from medgen.models.paired import PairedTranslationModel
from medgen.models.registry import register_model
from medgen.networks.patch_discriminator import ConditionalPatchDiscriminator
from medgen.networks.unet_generator import UNetGenerator


class CascadedGenerator(nn.Module):
    """Generators applied one after the other (the concatenated c-GANs' inference path)."""

    def __init__(self, *stages: nn.Module) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for g in self.stages:
            x = g(x)
        return x


@register_model("pet-cgan")
class PetCGAN(PairedTranslationModel):
    """Low-dose -> full-dose PET c-GAN (Wang et al. 2018).

    Args:
        spatial_dims: 3 (the paper) or 2.
        in_channels / out_channels: 1 each for one PET volume.
        channels: generator widths per level; patches' sides must be multiples of
            ``2 ** len(channels)``.
        d_channels: discriminator filters in its first layer.
        d_layers: discriminator strided layers after the first.
        norm: normalisation in both networks (``"batch"`` as in the paper).
        residual: generator predicts a correction to its input (not in the paper).
        adversarial: False gives the L1-only U-Net ablation.
        lambda_l1: weight λ of the L1 estimation-error term.
        gan_loss: ``"bce"`` (the paper's sigmoid cross-entropy), ``"lsgan"``, ``"hinge"``.
        refine: add the second, concatenated c-GAN.
        lr, beta1, beta2: Adam for G and D.
        sw_overlap, sw_batch_size: Gaussian-weighted sliding-window inference.
        flip_ensemble: average the estimates of every flip of the input at inference
            (:mod:`medgen.models.tta`; ``2 ** spatial_dims`` passes, about +0.3-0.5 dB here);
            skipped in the engine's between-epoch validation, which only ranks checkpoints.
        content_loss: the estimation-error term weighted by ``lambda_l1``: ``"l1"`` (the
            paper's) or ``"mse"``. L1 pulls G towards the conditional *median* of the full dose,
            MSE towards its *mean*, which is what PSNR scores and what quantitation wants
            unbiased; at low counts Poisson noise is skewed and the two differ. MSE's gradient
            scales with the error, so it needs a larger λ for the same balance against the
            adversarial term (λ·2·|e| = 300 at a typical |e| = 0.03 in model space: λ ≈ 5000).
        l1_warmup: share of the training budget, in [0, 1), trained on λ·L1 alone before D
            joins (0: adversarial from the first step, as in the paper); ``best.pt`` is only
            taken from epochs that trained D. Ignored when ``adversarial=False``.
    """

    data_module = PairedVolumes
    metric_pairs = {"": ("prediction", "target"), "lowdose_": ("input", "target")}
    constant_pairs = ("lowdose_",)  # the low-dose input's numbers never change during a run
    value_range = (-1.0, 1.0)
    best_metric = "val/psnr"
    # Removed knobs (see the module docstring) at the values that meant "off": runs saved before
    # the removal still load (medgen.engine.build).
    retired_settings = {"noise_channels": 0, "samples": 1, "input_skip": False, "d_lr": None}

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512),
        d_channels: int = 64,
        d_layers: int = 3,
        norm: str = "batch",
        residual: bool = False,
        adversarial: bool = True,
        lambda_l1: float = 300.0,
        gan_loss: str = "bce",
        refine: bool = False,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        sw_overlap: float = 0.5,
        sw_batch_size: int = 4,
        flip_ensemble: bool = False,
        l1_warmup: float = 0.0,
        content_loss: str = "l1",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"model.spatial_dims must be 2 or 3, got {spatial_dims}")
        if lambda_l1 < 0:
            raise ConfigError(f"model.lambda_l1 must be >= 0, got {lambda_l1}")
        if not adversarial and lambda_l1 == 0:
            raise ConfigError("model.adversarial=false needs model.lambda_l1 > 0 (nothing to train otherwise)")
        self.check_shares(sw_overlap=sw_overlap, l1_warmup=l1_warmup)
        self.spatial_dims = spatial_dims
        self.adversarial = adversarial
        self.lambda_l1 = float(lambda_l1)
        self.refine = refine
        self.lr, self.betas = lr, (beta1, beta2)
        if self.lr <= 0:
            raise ConfigError(f"model.lr must be > 0, got {self.lr}")
        self.sw_overlap, self.sw_batch_size = sw_overlap, sw_batch_size
        self.flip_ensemble = flip_ensemble
        losses = {"l1": F.l1_loss, "mse": F.mse_loss}
        if content_loss not in losses:
            raise ConfigError(f"model.content_loss must be one of {', '.join(losses)}, got {content_loss!r}")
        self.content_loss, self._content_loss = content_loss, losses[content_loss]
        # The L1-only ablation is all warm-up: the setting has nothing to delay there (so the
        # config's value need not be overridden along with model.adversarial=false).
        self.l1_warmup = float(l1_warmup) if adversarial else 0.0
        try:
            self.adv_loss = AdversarialLoss(gan_loss)
        except ValueError as e:
            raise ConfigError(f"model.gan_loss: {e}") from None
        if gan_loss == "wgan-gp":
            raise ConfigError("model.gan_loss=wgan-gp is not supported by pet-cgan (use bce, lsgan or hinge)")

        def make_g(cin: int) -> UNetGenerator:
            return UNetGenerator(spatial_dims, cin, out_channels, channels, norm=norm, residual=residual)

        def make_d() -> ConditionalPatchDiscriminator:
            return ConditionalPatchDiscriminator(
                spatial_dims, in_channels + out_channels, 1, d_channels, d_layers, norm=norm
            )

        self.G = make_g(in_channels)
        self.D = make_d() if adversarial else None
        # Stage 2 of the concatenated c-GANs: input = the stage-1 estimate, D conditioned on it.
        self.G2 = make_g(out_channels) if refine else None
        self.D2 = (
            ConditionalPatchDiscriminator(spatial_dims, 2 * out_channels, 1, d_channels, d_layers, norm=norm)
            if refine and adversarial
            else None
        )

    # --- optimisers ---------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        nets = {"G": self.G, "D": self.D, "G2": self.G2, "D2": self.D2}
        return {name: self.adam(net.parameters(), self.lr, self.betas) for name, net in nets.items() if net is not None}

    # --- training -----------------------------------------------------------------------
    def _check_sides(self, x: torch.Tensor, what: str) -> None:
        div = self.G.divisor
        if any(s % div for s in x.shape[2:]):
            raise ConfigError(
                f"{what} sides {tuple(x.shape[2:])} must be multiples of {div} for a generator with "
                f"{len(self.G.channels)} levels (set data.patch_size or model.channels)"
            )

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        x, y = batch["source"], batch["target"]
        self._check_sides(x, "training patch")
        fake, logs = self._stage_step(self.G, self.D, "G", "D", x, y)
        if self.G2 is not None:
            _, logs2 = self._stage_step(self.G2, self.D2, "G2", "D2", fake, y)
            logs.update(logs2)
        return logs

    # --- inference (SlidingWindowInference: body box, windows, flip ensemble) ------------
    def exported_network(self) -> nn.Module:
        return CascadedGenerator(self.G, self.G2) if self.G2 is not None else self.G

    def window_divisor(self) -> int:
        return self.G.divisor

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = batch["source"]
        return {"prediction": self.infer(x), "target": batch["target"], "input": x}
