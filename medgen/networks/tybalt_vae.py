"""The Tybalt variational autoencoder for gene expression (Way & Greene, PSB 2018).

Reference code: greenelab/tybalt, ``scripts/nbconverted/tybalt_vae.py`` (one layer) and
``tybalt_twohidden.py`` (two layers). Encoder heads for μ and log σ² read the input (or a
hidden layer); the decoder mirrors the encoder and ends in a sigmoid, so reconstructions lie in
(0, 1) like the min-max-scaled inputs.

``encoder``:

* ``"reference"`` -- each head is Dense -> BatchNorm -> ReLU, as in the reference. μ ≥ 0 and
  log σ² ≥ 0 (σ ≥ 1, the prior's scale or wider), so the posterior can never be tighter than
  the prior: the latent codes the data only through μ's mean shift, a strong regulariser.
* ``"gaussian"`` -- plain Dense heads (a textbook Gaussian encoder): signed μ and σ < 1 where the
  data are informative.

``hidden_dim``: 0 for the one-layer model (n_genes -> latent), e.g. 300 for the reference's two
layers (n_genes -> 300 -> latent, decoder latent -> 300 -> n_genes with a ReLU).

Keras defaults carried over: Glorot-uniform weights with zero biases; BatchNorm momentum 0.99
(PyTorch's 0.01) and epsilon 1e-3.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODERS = ("reference", "gaussian")


def _dense(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _batchnorm(n: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(n, eps=1e-3, momentum=0.01)


def _head(n_in: int, latent_dim: int, encoder: str) -> nn.Module:
    if encoder == "reference":
        return nn.Sequential(_dense(n_in, latent_dim), _batchnorm(latent_dim), nn.ReLU())
    return _dense(n_in, latent_dim)


class TybaltVAE(nn.Module):
    """``forward(x) -> (logits, mu, logvar)``: decoder logits (sigmoid for the reconstruction),
    and the posterior's mean and log-variance, for ``x`` of shape ``(N, in_features)`` in [0, 1].

    Args:
        in_features: genes in the input.
        latent_dim: size of z (100 in the paper).
        hidden_dim: 0 (one layer, the paper's Tybalt) or the width of a hidden layer (300).
        encoder: ``"reference"`` or ``"gaussian"`` (see the module docstring).
    """

    def __init__(self, in_features: int, latent_dim: int = 100, hidden_dim: int = 0, encoder: str = "reference"):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if in_features < 1 or latent_dim < 1 or hidden_dim < 0:
            raise ValueError(f"in_features and latent_dim must be >= 1 and hidden_dim >= 0, got "
                             f"{in_features}, {latent_dim}, {hidden_dim}")
        self.in_features, self.latent_dim, self.hidden_dim = int(in_features), int(latent_dim), int(hidden_dim)
        if hidden_dim:
            self.hidden = nn.Sequential(_dense(in_features, hidden_dim), _batchnorm(hidden_dim), nn.ReLU())
            self.decoder = nn.Sequential(_dense(latent_dim, hidden_dim), nn.ReLU(), _dense(hidden_dim, in_features))
        else:
            self.hidden = nn.Identity()
            self.decoder = _dense(latent_dim, in_features)
        width = hidden_dim or in_features
        self.mu_head = _head(width, latent_dim, encoder)
        self.logvar_head = _head(width, latent_dim, encoder)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(x)
        return self.mu_head(h), self.logvar_head(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = μ + σ·ε, ε ~ N(0, I) (the reference's epsilon_std = 1)."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode_logits(self.reparameterize(mu, logvar)), mu, logvar
