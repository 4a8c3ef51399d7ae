"""Edge-aware GAN (Ea-GAN) for cross-modality MR synthesis, with pix2pix-3D as its baseline.

Yu et al., "Ea-GANs: Edge-Aware Generative Adversarial Networks for Cross-Modality MR Image
Synthesis", IEEE TMI 38(7), 2019 (reference code: by-lab/Ea-GANs). A 3D pix2pix U-Net G maps a
registered source contrast x (T1) to the missing one y (T2, FLAIR); a conditional PatchGAN D
judges it. Losses, LSGAN on D's raw outputs::

    L_D = ½ [(D(x, y) − 1)² + D(x, G(x))²]
    L_G = (D(x, G(x)) − 1)² + λ_L1 · |G(x) − y|₁ + λ_edge(t) · |S(G(x)) − S(y)|₁

where S is the Sobel edge map (:class:`~medgen.networks.sobel.SobelEdges`). ``variant``:

* ``pix2pix`` — no edge term; D sees [x, image] (pix2pix-3D, the baseline);
* ``gea`` — the edge term in G's loss; D sees [x, image] (gEa-GAN);
* ``dea`` — the edge term, and D also sees the edge map: [x, image, S(image)] (dEa-GAN, the
  paper's best and the default).

λ_edge ramps linearly: 0 in epoch 1, λ_edge·(e−1)/20 in epoch e, λ_edge from epoch 21 on (the
reference's ``rise_sobelLoss``). Under ``trainer.max_minutes`` it ramps over the same share of
the run: the paper trains 150 epochs (100 constant, 50 decaying), so the first 20/150 of the
minutes. G gets D's gradient: the reference passes G's D input through the image pool (rebuilt
from ``.data``), so its G never receives an adversarial gradient; here it does.
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
from medgen.networks.sobel import SobelEdges
from medgen.networks.unet_generator import UNetGenerator

VARIANTS = ("pix2pix", "gea", "dea")
PAPER_EPOCHS = 150  # the reference's --niter 100 --niter_decay 50


@register_model("eagan")
class EaGAN(PairedTranslationModel):
    """Source MR contrast -> target MR contrast (Yu et al. 2019).

    Args:
        spatial_dims: 3 (the paper) or 2.
        in_channels / out_channels: 1 each (one source contrast, one target).
        variant: ``"dea"`` (default), ``"gea"`` or ``"pix2pix"`` (see the module docstring).
        channels: generator widths per level (the reference's ``unet_128``: 64, 128, 256, 512,
            512, 512, 512 for 128³ inputs); patches' sides must be multiples of ``2 ** len``.
        dropout: dropout in the three innermost decoder levels (0.5: the reference's
            ``--use_dropout``).
        d_channels / d_layers: PatchGAN width and strided layers (64 and 3).
        norm: normalisation in both networks (``"batch"``, as the reference).
        lambda_l1: weight of the voxel L1 term (300).
        lambda_edge: final weight of the edge L1 term (100; ignored by ``pix2pix``).
        edge_ramp_epochs: epochs over which λ_edge rises from 0 (20; 0: full weight at once).
        label_smoothing: D's targets real ~ U(0.7, 1.2), fake ~ U(0, 0.3) (the reference's
            ``--labelSmooth``).
        lr, beta1, beta2: Adam for G and D (2e-4, 0.5, 0.999; decay via ``optim.lr_policy``).
        l1_warmup: share of the budget trained on the content terms alone before D joins (0, as
            the paper; a CPU budget gains from a head start).
        sw_overlap, sw_batch_size, flip_ensemble: whole-volume Gaussian sliding-window inference.
    """

    data_module = PairedVolumes
    metric_pairs = {"": ("prediction", "target"), "edge_": ("prediction_edges", "target_edges")}
    value_range = (-1.0, 1.0)
    best_metric = "val/psnr"
    content_loss = "l1"

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        variant: str = "dea",
        channels: Sequence[int] = (64, 128, 256, 512, 512, 512, 512),
        dropout: float = 0.5,
        d_channels: int = 64,
        d_layers: int = 3,
        norm: str = "batch",
        lambda_l1: float = 300.0,
        lambda_edge: float = 100.0,
        edge_ramp_epochs: int = 20,
        label_smoothing: bool = False,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        l1_warmup: float = 0.0,
        sw_overlap: float = 0.5,
        sw_batch_size: int = 4,
        flip_ensemble: bool = False,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"model.variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if lambda_l1 < 0 or lambda_edge < 0:
            raise ConfigError(f"model.lambda_l1 and model.lambda_edge must be >= 0, got {lambda_l1} and {lambda_edge}")
        if edge_ramp_epochs < 0:
            raise ConfigError(f"model.edge_ramp_epochs must be >= 0, got {edge_ramp_epochs}")
        if lr <= 0:
            raise ConfigError(f"model.lr must be > 0, got {lr}")
        self.check_shares(l1_warmup=l1_warmup, sw_overlap=sw_overlap)
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        self.spatial_dims = spatial_dims
        self.variant = variant
        self.lambda_l1, self.lambda_edge = float(lambda_l1), float(lambda_edge)
        self.edge_ramp_epochs = int(edge_ramp_epochs)
        self.lr, self.betas = lr, (beta1, beta2)
        self.l1_warmup = float(l1_warmup)
        self.sw_overlap, self.sw_batch_size, self.flip_ensemble = sw_overlap, sw_batch_size, flip_ensemble
        self._content_loss = F.l1_loss
        self.adv_loss = AdversarialLoss("lsgan", smooth_labels=label_smoothing)
        self.sobel = SobelEdges(spatial_dims)
        self.G = UNetGenerator(spatial_dims, in_channels, out_channels, channels, norm=norm, dropout=dropout)
        d_in = in_channels + out_channels + (1 if variant == "dea" else 0)
        self.D = ConditionalPatchDiscriminator(spatial_dims, d_in, 1, d_channels, d_layers, norm=norm)

    # --- the edge term ------------------------------------------------------------------
    @property
    def edge_weight(self) -> float:
        """λ_edge now: 0 for pix2pix; else ramped (epochs, or the share of ``max_minutes``)."""
        if self.variant == "pix2pix" or self.lambda_edge == 0:
            return 0.0
        if self.edge_ramp_epochs == 0:
            return self.lambda_edge
        if self.max_minutes:
            rise = self.progress * PAPER_EPOCHS / self.edge_ramp_epochs
        else:
            rise = self.epoch / self.edge_ramp_epochs  # epoch is 0-based: epoch 1 trains with 0
        return self.lambda_edge * min(1.0, rise)

    def edges(self, image: torch.Tensor) -> torch.Tensor:
        return self.sobel(image.float())

    def d_inputs(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.variant == "dea":
            return (x, image, self.edges(image).to(image.dtype))
        return (x, image)

    def extra_g_terms(self, x: torch.Tensor, fake: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.variant == "pix2pix":
            return {}
        return {"edge_l1": self.edge_weight * F.l1_loss(self.edges(fake), self.edges(y).detach())}

    # --- optimisers and steps -------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(self.G.parameters(), self.lr, self.betas),
                "D": self.adam(self.D.parameters(), self.lr, self.betas)}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        # patch sides were checked when the model was built (check_patch)
        _, logs = self._stage_step(self.G, self.D, "G", "D", batch["source"], batch["target"])
        logs["edge_weight"] = self.edge_weight
        return logs

    # --- inference (SlidingWindowInference: body box, windows, flip ensemble) ------------
    def exported_network(self) -> nn.Module:
        return self.G

    def window_divisor(self) -> int:
        return self.G.divisor

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        x, y = batch["source"], batch["target"]
        prediction = self.infer(x)
        return {"prediction": prediction, "target": y, "input": x,
                "prediction_edges": self.edges(prediction), "target_edges": self.edges(y)}
