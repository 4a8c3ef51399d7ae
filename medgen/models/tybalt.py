"""Tybalt: a variational autoencoder on gene-expression tables (Way & Greene, PSB 2018).

"Extracting a biologically relevant latent space from cancer transcriptomes with variational
autoencoders" (reference code: greenelab/tybalt). Samples are min-max-scaled expression vectors
of the most variable genes (:class:`~medgen.data.expression.ExpressionTable`); the VAE
(:class:`~medgen.networks.tybalt_vae.TybaltVAE`) compresses each to a 100-d latent. Loss, per
sample and averaged over the batch::

    L = n_genes · BCE(x̂, x)  +  β · KL(q(z|x) ‖ N(0, I))

(the BCE summed over genes, the KL summed over latents). β warms up from 0 by ``kappa`` per
epoch and stays at 1 once there (the reference adds κ after every epoch while β ≤ 1, so with
κ = 1 it overshoots to 2; here it is capped). Under ``trainer.max_minutes`` β rises every step
over the same share of the run as in the paper's 50 epochs.

Outputs (``output_kind = "table"``): ``infer`` returns the latent means μ (the features the
paper analyses) and the reconstruction. Validation reports the reconstruction BCE, the KL and
their sum at β = 1 (the negative ELBO, the best-checkpoint metric) and, with labels, the
cross-validated kNN accuracy of the latent beside that of PCA with the same number of
components, and draws the latent space coloured by label.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgen.data.expression import ExpressionTable
from medgen.errors import ConfigError
from medgen.models.base import GenerativeModel
from medgen.models.registry import register_model
from medgen.networks.tybalt_vae import ENCODERS, TybaltVAE

PAPER_EPOCHS = 50  # Way & Greene: 50 epochs; the KL warm-up is stated per epoch of those


@register_model("tybalt")
class Tybalt(GenerativeModel):
    """Tybalt VAE (Way & Greene 2018).

    Args:
        in_features: genes in the input (set from the data: ``data.n_genes`` or fewer).
        latent_dim: latent size (100).
        hidden_dim: 0 for the paper's one-layer model; 300 for the reference's two-hidden-layer
            variant (n_genes -> 300 -> latent).
        encoder: ``"reference"`` (BatchNorm + ReLU on μ and log σ², as the reference) or
            ``"gaussian"`` (plain linear heads); see :mod:`medgen.networks.tybalt_vae`.
        kappa: β's increase per epoch (1: β = 0 in the first epoch, 1 from the second on; the
            reference's two-layer model used 0.01).
        lr, beta1, beta2: Adam (5e-4, Keras' 0.9 and 0.999).
        knn_neighbors: k of the validation kNN accuracy (5).
    """

    data_module = ExpressionTable
    metric_pairs: dict = {}  # no images: no PSNR/SSIM/FID
    output_kind = "table"
    value_range = (0.0, 1.0)
    best_metric = "val/loss"
    # infer() returns these tables; "input" ones have the input's genes and go back to its units
    table_outputs = {"latent": "features", "reconstruction": "input"}

    def __init__(self, in_features: int = 5000, latent_dim: int = 100, hidden_dim: int = 0,
                 encoder: str = "reference", kappa: float = 1.0, lr: float = 5e-4, beta1: float = 0.9,
                 beta2: float = 0.999, knn_neighbors: int = 5) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ConfigError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if kappa <= 0:
            raise ConfigError(f"model.kappa must be > 0, got {kappa}")
        if lr <= 0:
            raise ConfigError(f"model.lr must be > 0, got {lr}")
        if latent_dim < 1 or hidden_dim < 0 or knn_neighbors < 1:
            raise ConfigError(f"model.latent_dim and model.knn_neighbors must be >= 1 and model.hidden_dim >= 0, "
                              f"got {latent_dim}, {knn_neighbors} and {hidden_dim}")
        self.kappa = float(kappa)
        self.lr, self.betas = float(lr), (float(beta1), float(beta2))
        self.knn_neighbors = int(knn_neighbors)
        self.vae = TybaltVAE(int(in_features), int(latent_dim), int(hidden_dim), encoder)

    # --- the loss -----------------------------------------------------------------------
    @property
    def beta(self) -> float:
        """KL weight now: ``min(1, κ · epochs done)``; under ``max_minutes`` per step, the
        paper's 50 epochs mapped onto the run's share of its minutes."""
        if self.max_minutes:
            return min(1.0, self.kappa * PAPER_EPOCHS * self.progress)
        return min(1.0, self.kappa * self.epoch)  # epoch is 0-based: the first trains with β = 0

    def loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-batch means of the reconstruction term (BCE summed over genes) and the KL
        (summed over latents), with the model in its current mode."""
        logits, mu, logvar = self.vae(x)
        recon = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp()).float().sum(1)).mean()
        return {"recon": recon, "kl": kl}

    # --- optimisers and steps -------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.adam(self.vae.parameters(), self.lr, self.betas)}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        x = batch["x"]
        if x.shape[0] < 2:  # BatchNorm cannot normalise one sample (a last batch of one)
            return {}
        beta = self.beta
        with self.autocast():
            terms = self.loss_terms(x)
        loss = terms["recon"] + beta * terms["kl"]
        self.optimizer_step("vae", loss)
        return {"loss": float(loss.detach()), "recon": float(terms["recon"].detach()),
                "kl": float(terms["kl"].detach()), "beta": beta}

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One whole split ``x (1, N, G)``: its mean losses and, with labels, the kNN accuracies."""
        from medgen.metrics.latent import knn_accuracy, pca_features

        x = batch["x"][0]
        terms = self.loss_terms(x)
        mu, _ = self.vae.encode(x)
        out: dict[str, Any] = {"recon_bce": terms["recon"], "kl": terms["kl"], "loss": terms["recon"] + terms["kl"],
                               "latent": mu}
        labels = batch.get("label")
        if labels is not None:
            labels = labels[0]
            out["latent_labels"] = labels
            latent_acc = knn_accuracy(mu, labels, k=self.knn_neighbors)
            if latent_acc is not None:
                out["knn_accuracy"] = latent_acc
                out["pca_knn_accuracy"] = knn_accuracy(pca_features(x, mu.shape[1]), labels, k=self.knn_neighbors)
        return out

    def save_validation_figure(self, out: dict[str, Any], batch: dict[str, Any], path, title: str | None) -> None:
        from medgen.viz import save_latent_map

        save_latent_map(path, out["latent"], out.get("latent_labels"), class_names=batch.get("classes"), title=title)

    # --- inference --------------------------------------------------------------------------
    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x (N, G)`` in [0, 1] -> ``{"latent": μ (N, latent), "reconstruction": (N, G) in (0, 1)}``
        (the reconstruction decodes μ: the expected expression, no sampling noise)."""
        mu, _ = self.vae.encode(x)
        return {"latent": mu, "reconstruction": torch.sigmoid(self.vae.decode_logits(mu))}

    def exported_network(self) -> nn.Module:
        return self.vae
