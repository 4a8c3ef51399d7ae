"""AnoGAN / f-AnoGAN: unsupervised anomaly detection from a GAN trained on normal scans only.

* AnoGAN (Schlegl et al., IPMI 2017): a DCGAN learns the variety of normal anatomy (patches);
  a new image x is mapped to the latent space by optimising z for Γ = 500 steps on
  ``(1 − λ)·|x − G(z)|₁ + λ·|f(x) − f(G(z))|₁`` with λ = 0.1 and ``f`` an intermediate
  discriminator layer; ``|x − G(z)|`` is the anomaly map.
* f-AnoGAN (Schlegl et al., MedIA 2019): the GAN is a WGAN-GP (5 critic steps per generator
  step, gradient penalty 10, Adam 1e-4, β (0, 0.9)); then an encoder E is trained with G (and D)
  frozen on the izi_f loss ``MSE(x, G(E(x))) + κ·MSE(f(x), f(G(E(x))))``, κ = 1 (RMSProp 5e-5
  in the reference code), so mapping is one forward pass.

Training schedule in the engine's single loop: the first epochs train the GAN, the last
``encoder_fraction`` of the budget (at least one epoch when ``max_epochs >= 2``) trains the
encoder with G and D frozen and in eval mode. ``model.epoch``/``model.max_epochs`` and
``model.progress`` (kept by the engine) say which phase runs: under ``trainer.max_minutes`` the
encoder starts once ``1 - encoder_fraction`` of the minutes are spent, even if the epochs would
say it is early. ``gan_minutes`` instead switches to the encoder at
the first epoch that starts after that much wall time (then ``trainer.max_minutes`` ends
training; keep epochs short with ``trainer.steps_per_epoch``). Use ``optim.lr_policy: constant`` (the papers use constant rates;
a decaying schedule would starve the encoder phase).

Validation reconstructs each held-out normal volume patch-wise through the encoder (``G(E(x))``,
``val/psnr`` etc.), logs ``val/izif_loss`` and ``val/anomaly_score``. Scores of the validation
(held-out normal) subjects computed once the encoder has trained are kept per subject; the
threshold is their ``calibration_percentile`` (99 by default) and travels in the checkpoint via
``extra_state()``, so ``medgen score`` flags scans without a separate calibration step
(``scoring.calibrate_threshold`` recalibrates on any other set of normal scans).

Networks are built once the patch size is known (the engine sets ``roi_size = data.patch_size``;
``patch_size`` in the constructor does the same for use without the engine).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medgen.data.volumes import Volumes
from medgen.errors import ConfigError
from medgen.losses.adversarial import AdversarialLoss, gradient_penalty
from medgen.models.base import GenerativeModel
from medgen.models.registry import register_model
from medgen.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from medgen.networks.dcgan_encoder import DCGANEncoder

GANS = ("dcgan", "wgan-gp")


class FAnoGANReconstructor(nn.Module):
    """The exported network: patch x -> G(E(x)) (a pseudo-healthy reconstruction). With position
    channels, x carries them after the image channel and G also gets the patch's position."""

    def __init__(self, encoder: nn.Module, generator: nn.Module, position_channels: int = 0):
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.position_channels = position_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        if self.position_channels:
            z = torch.cat([z, patch_position(x[:, -self.position_channels:])], 1)
        return self.generator(z)


def patch_position(coords: torch.Tensor) -> torch.Tensor:
    """``(B, P, *patch)`` coordinate maps -> ``(B, P)``: the patch centre's position."""
    return coords.flatten(2).mean(2)


@register_model("anogan")
class AnoGAN(GenerativeModel):
    """AnoGAN (``gan="dcgan"``) or f-AnoGAN (``gan="wgan-gp"``, the default) with izi_f encoder.

    Args:
        latent_dim: size of z (z ~ N(0, I)).
        generator_channels: generator channels, coarse to fine (one ×2 upsampling each).
        discriminator_channels: discriminator/encoder channels, fine to coarse.
        gan: ``"dcgan"`` (AnoGAN: BCE, BatchNorm in D) or ``"wgan-gp"`` (f-AnoGAN: critic with
            layer norm, gradient penalty).
        n_critic: critic updates per generator update (WGAN-GP).
        gp_weight: gradient-penalty weight (WGAN-GP).
        lr, betas: Adam for G and D; ``None`` = the paper's (DCGAN 2e-4, (0.5, 0.999);
            WGAN-GP 1e-4, (0.0, 0.9)).
        encoder_lr: RMSProp rate of the encoder (reference code: 5e-5).
        encoder_fraction: last fraction of the budget (epochs, or minutes under a time budget)
            that trains the encoder (G, D frozen).
        gan_minutes: instead of ``encoder_fraction``: train the GAN for this many minutes of
            wall time (checked at each epoch start), then the encoder until training ends
            (``trainer.max_minutes``/``max_epochs``) -- for time-budgeted CPU runs.
        latent_bound: encoder output, ``None`` (linear, izi_f) or ``"tanh"``.
        kappa: weight of the feature term of the izi_f loss (κ = 1).
        search_steps: Γ, AnoGAN latent-search steps (500).
        lam: λ, weight of the feature term in the latent search (0.1).
        search_lr: Adam rate of the latent search.
        overlap: fraction of overlap between scoring patches.
        feature_weight: blend of the (upsampled) discriminator-feature residual into the map
            (0 = the residual |x − G(z)| only).
        top_percent: scan score = mean of this % of the highest (smoothed) map voxels in the mask
            (0.25 %: small lesions are not drowned by the brain's normal residual; chosen over
            1 % and 0.1 % on a validation set of phantoms, see benchmarks/RESULTS.md).
        smooth_sigma: Gaussian sigma (voxels) applied to the map before the top-% aggregation: a
            lesion is a coherent blob, reconstruction noise is not, so smoothing raises the
            lesion's contrast against scattered single-voxel residuals.
        calibration_percentile: percentile of held-out normal scores used as the threshold.
        position_channels: set by the data (``data.position=true``): the patch's position in the
            brain (coordinate maps normalised to the brain mask's box) is an input of E and D and
            G's condition, so that the model knows *where* a patch is: a dark blob where white
            matter belongs is an anomaly, the same blob beside a ventricle is not (issue 27).
        polarity: which residual the map and the score read (``both`` |x − G(z)|, ``bright``
            x above its reconstruction, ``dark`` below it: T1 black holes); validation calibrates a
            threshold for each, so ``medgen score --polarity`` may choose another.
        score_batch_size: patches per forward pass when scoring.
        patch_size: build the networks now for this patch size (otherwise when ``roi_size`` is set).
    """

    data_module = Volumes
    metric_pairs = {"": ("prediction", "target")}
    value_range = (-1.0, 1.0)
    best_metric = "val/psnr"

    def __init__(
        self,
        latent_dim: int = 128,
        generator_channels: Sequence[int] = (128, 64, 32),
        discriminator_channels: Sequence[int] = (32, 64, 128),
        gan: str = "wgan-gp",
        n_critic: int = 5,
        gp_weight: float = 10.0,
        lr: float | None = None,
        betas: Sequence[float] | None = None,
        encoder_lr: float = 5e-5,
        encoder_fraction: float = 0.3,
        gan_minutes: float | None = None,
        latent_bound: str | None = None,
        kappa: float = 1.0,
        search_steps: int = 500,
        lam: float = 0.1,
        search_lr: float = 0.05,
        overlap: float = 0.5,
        feature_weight: float = 0.0,
        top_percent: float = 0.25,
        smooth_sigma: float = 1.0,
        calibration_percentile: float = 99.0,
        polarity: str = "both",
        position_channels: int = 0,
        score_batch_size: int = 16,
        patch_size: Sequence[int] | None = None,
    ):
        if gan not in GANS:
            raise ConfigError(f"gan {gan!r} not one of {GANS}")
        if not 0.0 <= encoder_fraction < 1.0:
            raise ConfigError(f"encoder_fraction must be in [0, 1), got {encoder_fraction}")
        from medgen.models.anogan.scoring import POLARITIES

        if polarity not in POLARITIES:
            raise ConfigError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
        self._roi: tuple[int, ...] | None = None
        super().__init__()
        self.latent_dim = latent_dim
        self.generator_channels = tuple(generator_channels)
        self.discriminator_channels = tuple(discriminator_channels)
        self.gan = gan
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        paper = {"dcgan": (2e-4, (0.5, 0.999)), "wgan-gp": (1e-4, (0.0, 0.9))}[gan]
        self.lr = paper[0] if lr is None else lr
        self.betas = tuple(paper[1] if betas is None else betas)
        self.encoder_lr = encoder_lr
        self.encoder_fraction = encoder_fraction
        self.gan_minutes = gan_minutes
        self._started: float | None = None  # wall clock of the first epoch (gan_minutes)
        self.encoder_from_epoch: int | None = None  # first encoder epoch, fixed once reached
        self.latent_bound = latent_bound
        self.kappa = kappa
        self.search_steps = search_steps
        self.lam = lam
        self.search_lr = search_lr
        self.overlap = overlap
        self.feature_weight = feature_weight
        self.top_percent = top_percent
        self.smooth_sigma = smooth_sigma
        self.calibration_percentile = calibration_percentile
        self.polarity = polarity
        self.position_channels = int(position_channels)
        self.score_batch_size = score_batch_size
        # BCE for AnoGAN's DCGAN; the Wasserstein critic loss for f-AnoGAN.
        self.adversarial = AdversarialLoss("bce" if gan == "dcgan" else "wgan-gp")
        self._critic_steps = 0
        self._last_g_loss: float | None = None  # reported from the first generator update on
        self.encoder_steps = 0  # encoder updates so far (scoring warns when 0)
        # polarity -> {held-out normal subject -> score} (encoder mode)
        self.val_scores: dict[str, dict[str, float]] = {}
        self.thresholds: dict[str, float] = {}  # scoring.threshold_key(mode, polarity) -> threshold
        self.calibration_source: dict[str, str] = {}  # same keys -> "validation" | "manual"
        if patch_size is not None:
            self.roi_size = tuple(patch_size)

    # --- networks, built for the patch size ---------------------------------------------------
    @property
    def roi_size(self) -> tuple[int, ...] | None:
        return self._roi

    @roi_size.setter
    def roi_size(self, value: Sequence[int] | None) -> None:
        if value is None:
            return
        value = tuple(int(v) for v in value)
        if value == self._roi:
            return
        if self._roi is not None:
            raise ValueError(f"networks already built for patch size {self._roi}, not {value}")
        self._roi = value
        dims = len(value)
        pc = self.position_channels
        self.generator = DCGANGenerator(dims, self.latent_dim + pc, value, self.generator_channels, norm="batch")
        # DCGAN keeps BatchNorm in D; a WGAN-GP critic must not (per-sample gradient penalty).
        d_norm = "batch" if self.gan == "dcgan" else "layer"
        self.discriminator = DCGANDiscriminator(dims, value, self.discriminator_channels, in_channels=1 + pc,
                                                norm=d_norm)
        self.encoder = DCGANEncoder(dims, self.latent_dim, value, self.discriminator_channels, in_channels=1 + pc,
                                    norm="batch", latent_bound=self.latent_bound)

    def _require_networks(self) -> None:
        if self._roi is None:
            raise RuntimeError("AnoGAN networks not built: set model.roi_size (the patch size) first")

    # --- phases ----------------------------------------------------------------------------
    @property
    def encoder_epochs(self) -> int:
        if self.max_epochs < 2:
            return 0
        n = int(round(self.encoder_fraction * self.max_epochs))
        return min(max(n, 1 if self.encoder_fraction > 0 else 0), self.max_epochs - 1)

    @property
    def phase(self) -> str:
        """``"gan"`` first, ``"encoder"`` for the last ``encoder_epochs`` or once the engine's
        ``progress`` (which also counts a time budget) reaches ``1 - encoder_fraction``; with
        ``gan_minutes``, from the first epoch that starts after that time."""
        if self.gan_minutes is not None:
            return "encoder" if self.encoder_from_epoch is not None and self.epoch >= self.encoder_from_epoch else "gan"
        if not self.encoder_epochs:
            return "gan"
        late = self.epoch >= self.max_epochs - self.encoder_epochs or self.progress >= 1.0 - self.encoder_fraction
        return "encoder" if late else "gan"

    def on_epoch_start(self, epoch: int) -> None:
        if self.gan_minutes is None or self.encoder_from_epoch is not None:
            return
        now = time.monotonic()
        if self._started is None:
            self._started = now
        if (now - self._started) / 60.0 >= self.gan_minutes or 0 < epoch == self.max_epochs - 1:
            self.encoder_from_epoch = epoch  # the last epoch trains the encoder in any case

    # --- contract --------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self._require_networks()
        return {
            "D": self.adam(self.discriminator.parameters(), self.lr, self.betas),
            "G": self.adam(self.generator.parameters(), self.lr, self.betas),
            "E": torch.optim.RMSprop(self.encoder.parameters(), lr=self.encoder_lr),
        }

    def sample_z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    # --- the networks with the patch's position (when position_channels) ------------------
    def _coords(self, x: torch.Tensor, coords: torch.Tensor | None) -> torch.Tensor | None:
        if not self.position_channels:
            return None
        if coords is None:
            raise ValueError("this model reads patch positions (data.position=true) but got no coordinate maps")
        return coords.to(x.device, x.dtype)

    def with_position(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        """E's and D's input: the image, and the coordinate maps when the model reads them."""
        c = self._coords(x, coords)
        return x if c is None else torch.cat([x, c], 1)

    def generate(self, z: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        """G(z), conditioned on the patches' positions when the model reads them."""
        c = self._coords(z, coords)
        return self.generator(z if c is None else torch.cat([z, patch_position(c)], 1))

    def encode(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.with_position(x, coords))

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        self._require_networks()
        x = batch["image"].to(self.device, torch.float32)
        coords = batch.get("coords")
        if self.phase == "encoder":
            return self.encoder_step(x, coords)
        return self.gan_step(x, coords)

    def gan_step(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> dict[str, float]:
        """One discriminator/critic update; a generator update every ``n_critic`` (WGAN-GP).
        With positions, each fake takes a real patch's position: D judges the pair."""
        G, D = self.generate, self.discriminator
        n = x.shape[0]
        real = self.with_position(x, coords)
        with self.autocast():
            fake = self.with_position(G(self.sample_z(n), coords), coords)
            real_logit = D(real)[1]
            fake_logit = D(fake.detach())[1]
            loss_d = self.adversarial.d_loss(real_logit, fake_logit)
        out = {"d_loss": float(loss_d.detach())}
        if self.gan == "wgan-gp":
            gp = gradient_penalty(D, real, fake)
            loss_d = loss_d + self.gp_weight * gp
            out["gp"] = float(gp.detach())
            out["wasserstein"] = float((real_logit.mean() - fake_logit.mean()).detach())
        self.optimizer_step("D", loss_d)
        self._critic_steps += 1
        if self.gan == "dcgan" or self._critic_steps % self.n_critic == 0:
            with self.frozen(D), self.autocast():
                loss_g = self.adversarial.g_loss(D(self.with_position(G(self.sample_z(n), coords), coords))[1])
            self.optimizer_step("G", loss_g)
            self._last_g_loss = float(loss_g.detach())
        if self._last_g_loss is not None:
            out["g_loss"] = self._last_g_loss
        return out

    def izif_loss(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """f-AnoGAN izi_f: ``MSE(x, G(E(x))) + κ·MSE(f(x), f(G(E(x))))``; returns (loss, img, feat)."""
        rec = self.generate(self.encode(x, coords), coords)
        f_rec = self.discriminator(self.with_position(rec, coords))[0]
        with torch.no_grad():
            f_x = self.discriminator(self.with_position(x, coords))[0]
        img = F.mse_loss(rec, x)
        feat = F.mse_loss(f_rec, f_x)
        return img + self.kappa * feat, img, feat

    def encoder_step(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> dict[str, float]:
        """One encoder update with G and D frozen (eval mode: BatchNorm running statistics)."""
        self.generator.eval()
        self.discriminator.eval()
        with self.frozen(self.generator, self.discriminator), self.autocast():
            loss, img, feat = self.izif_loss(x, coords)
        self.optimizer_step("E", loss)
        self.encoder_steps += 1
        return {"izif_loss": float(loss.detach()), "izif_img": float(img.detach()), "izif_feat": float(feat.detach())}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        from medgen.models.anogan import scoring

        self._require_networks()
        x = batch["image"].to(self.device, torch.float32)
        # The data module's mask: the foreground (what `medgen score` uses for a new scan) or,
        # with data.mask_key (e.g. brain_mask), that mask (`medgen score` then looks for the same
        # mask beside each scan), so calibration and scoring measure the same thing.
        mask = batch.get("mask")
        if mask is None:
            mask = scoring.model_space_mask(x[0])
        else:
            mask = torch.as_tensor(mask)[0].reshape(x.shape[2:]).bool()
        # Before the encoder has trained, G(E(x)) says nothing and no score calibrates anything:
        # the first validation (which only has to fail early) tiles without overlap, 8x fewer
        # 3D patches (a whole 1 mm head took ~40 s of a 20-minute run with overlap).
        coords = batch.get("coords")
        out = scoring.anomaly_map(self, x[0], mask, "encoder", tile_everywhere=True,
                                  overlap=0.0 if self.encoder_steps == 0 else None,
                                  coords=None if coords is None else torch.as_tensor(coords)[0])
        scores = {pol: scoring.scan_score(scoring.polarity_map(out, pol), mask, self.top_percent, self.smooth_sigma)
                  for pol in scoring.POLARITIES}
        if self.encoder_steps > 0:
            subject = batch.get("subject", ["?"])
            subject = subject[0] if isinstance(subject, (list, tuple)) else str(subject)
            for pol, score in scores.items():
                self.val_scores.setdefault(pol, {})[str(subject)] = score
        return {
            "prediction": out["recon"][None],
            "target": x,
            "anomaly_map": scoring.polarity_map(out, self.polarity)[None],  # shown in the validation slice grid
            "izif_loss": out["izif"],
            "anomaly_score": scores[self.polarity],
        }

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Pseudo-healthy reconstruction ``G(E(x))`` of whole volumes ``(B, C, *sp)``, patch-wise
        (positions, if the model reads them, from each volume's foreground).

        Anomaly maps come from :func:`medgen.models.anogan.scoring.score_volume` (``medgen score``).
        """
        from medgen.models.anogan import scoring

        self._require_networks()
        out = []
        for v in x:
            coords = scoring.position_maps(scoring.model_space_mask(v)) if self.position_channels else None
            out.append(scoring.anomaly_map(self, v, None, "encoder", tile_everywhere=True, coords=coords)["recon"])
        return torch.stack(out)

    def exported_network(self) -> nn.Module:
        self._require_networks()
        return FAnoGANReconstructor(self.encoder, self.generator, self.position_channels)

    # --- threshold ---------------------------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """Calibrated encoder-mode threshold of the model's polarity (None before calibration)."""
        from medgen.models.anogan.scoring import threshold_key

        return self.thresholds.get(threshold_key("encoder", self.polarity))

    def threshold_for(self, mode: str = "encoder", polarity: str | None = None) -> float | None:
        """The calibrated threshold of `mode` and `polarity` (default the model's), or None."""
        from medgen.models.anogan.scoring import threshold_key

        return self.thresholds.get(threshold_key(mode, polarity or self.polarity))

    def calibrate(self, normal_scores: Sequence[float], mode: str = "encoder", percentile: float | None = None,
                  polarity: str | None = None) -> float:
        """Set the threshold of `mode` and `polarity` (default the model's) from held-out normal
        scores; returns it."""
        from medgen.models.anogan.scoring import calibrate_threshold, threshold_key

        key = threshold_key(mode, polarity or self.polarity)
        t = calibrate_threshold(normal_scores, self.calibration_percentile if percentile is None else percentile)
        self.thresholds[key] = t
        self.calibration_source[key] = "manual"
        return t

    def extra_state(self) -> dict[str, Any]:
        # The validation subjects are held-out normal scans: their latest scores calibrate the
        # encoder-mode threshold of each polarity, unless calibrate() set it explicitly.
        from medgen.models.anogan.scoring import calibrate_threshold, threshold_key

        for pol, scores in self.val_scores.items():
            key = threshold_key("encoder", pol)
            if scores and self.calibration_source.get(key, "validation") == "validation":
                self.thresholds[key] = calibrate_threshold(list(scores.values()), self.calibration_percentile)
                self.calibration_source[key] = "validation"
        return {
            "thresholds": dict(self.thresholds),
            "calibration_source": dict(self.calibration_source),
            "val_scores": {pol: dict(v) for pol, v in self.val_scores.items()},
            "calibration_percentile": self.calibration_percentile,
            "encoder_steps": self.encoder_steps,
            "critic_steps": self._critic_steps,
            "encoder_from_epoch": self.encoder_from_epoch,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.thresholds = {str(k): float(v) for k, v in (state.get("thresholds") or {}).items()}
        self.calibration_source = {str(k): str(v) for k, v in (state.get("calibration_source") or {}).items()}
        scores = state.get("val_scores") or {}
        if scores and not all(isinstance(v, dict) for v in scores.values()):
            scores = {"both": scores}  # saved before polarities: the absolute residual's scores
        self.val_scores = {str(p): {str(k): float(v) for k, v in d.items()} for p, d in scores.items()}
        self.encoder_steps = int(state.get("encoder_steps", 0))
        self._critic_steps = int(state.get("critic_steps", 0))
        e = state.get("encoder_from_epoch")
        self.encoder_from_epoch = None if e is None else int(e)
