"""The point-wise VAE: a plain, scriptable `nn.Module` (training lives in `system.py`)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """MLP encoder to the latent mean and log-variance; MLP decoder to the mean of a Gaussian
    per channel, whose log-variance is a learned parameter per channel.

    Args:
        n_features: Number of channels.
        hidden_sizes: Widths of the hidden layers of the encoder (the decoder mirrors them).
        latent_dim: Size of the latent space.
    """

    def __init__(self, n_features: int, hidden_sizes: list[int], latent_dim: int) -> None:
        super().__init__()
        self.encoder = _mlp([n_features, *hidden_sizes])
        self.to_mean = nn.Linear(hidden_sizes[-1], latent_dim)
        self.to_logvar = nn.Linear(hidden_sizes[-1], latent_dim)
        self.decoder = _mlp([latent_dim, *reversed(hidden_sizes), n_features])
        self.log_var_x = nn.Parameter(torch.zeros(n_features))
        self.act = nn.SiLU()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.act(self.encoder(x))
        return self.to_mean(hidden), self.to_logvar(hidden).clamp(-12.0, 12.0)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction mean from the latent mean (no sampling), latent mean and log-variance."""
        mean, logvar = self.encode(x)
        return self.decode(mean), mean, logvar

    def channel_nll(self, x: Tensor, x_mean: Tensor) -> Tensor:
        """Negative log-likelihood of each value under N(x_mean, exp(log_var_x)), shape (rows, channels)."""
        log_var = self.log_var_x.clamp(-12.0, 12.0)
        return 0.5 * (math.log(2.0 * math.pi) + log_var + (x - x_mean) ** 2 / log_var.exp())

    def nll(self, x: Tensor, x_mean: Tensor) -> Tensor:
        """Negative log-likelihood of each row, shape (rows,)."""
        return self.channel_nll(x, x_mean).sum(dim=1)

    @torch.jit.export
    def score(self, x: Tensor) -> Tensor:
        """Anomaly score of each row: its negative log-likelihood, decoded from the latent mean."""
        x_mean, _, _ = self.forward(x)
        return self.nll(x, x_mean)

    @torch.jit.export
    def channel_scores(self, x: Tensor) -> Tensor:
        """Each channel's share of the anomaly score, shape (rows, channels); rows sum to `score`."""
        x_mean, _, _ = self.forward(x)
        return self.channel_nll(x, x_mean)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) of each row, shape (rows,)."""
    return -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(dim=1)
