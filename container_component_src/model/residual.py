"""The classical detectors of evaluation as models: a row's weighted squared error from its
projection on a few principal directions of the validation rows (PCA), or from zero (the raw
signal, in training standard deviations). One implementation scores them in evaluation and, when
the deploy gate finds one ahead of the VAE, in the model server: the same rule in both places.

They have the VAE's serving interface (`context`, `score`, `channel_scores`), so a published
folder holding one is served, smoke-tested and explained exactly like the VAE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class ResidualDetector(torch.nn.Module):
    """Weighted squared residual of scaled rows after removing their projection on `components`.

    Args:
        mean: Each channel's center (zeros for the raw signal: scaled rows are centered already).
        components: Orthonormal directions, shape (channels, k); k = 0 for the raw signal.
        weights: Each channel's weight in the score (the VAE's `channel_weight`).
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray, weights: np.ndarray) -> None:
        super().__init__()
        channels = len(mean)
        self.context = 0  # a point detector: it scores every row on its own
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float64)))
        self.register_buffer(
            "components", torch.as_tensor(np.asarray(components, dtype=np.float64).reshape(channels, -1))
        )
        self.register_buffer("channel_weight", torch.as_tensor(np.asarray(weights, dtype=np.float64)))

    @torch.jit.export
    def channel_scores(self, series: Tensor) -> Tensor:
        """Each channel's share of the score, shape (rows, channels); rows sum to `score`."""
        centred = series.double() - self.mean
        residual = centred - (centred @ self.components) @ self.components.T
        return residual.square() * self.channel_weight

    @torch.jit.export
    def score(self, series: Tensor) -> Tensor:
        """Anomaly score of every row, shape (rows,), float64."""
        return self.channel_scores(series).sum(dim=1)

    def forward(self, series: Tensor) -> Tensor:
        return self.score(series)

    @torch.jit.ignore
    def scores(self, values: np.ndarray) -> np.ndarray:
        """`score` of a numpy matrix of scaled rows, as float64 numpy."""
        with torch.inference_mode():
            return self.score(torch.from_numpy(np.asarray(values))).numpy()

    @torch.jit.ignore
    def to_dict(self) -> dict[str, Any]:
        """The parameters, as JSON (what evaluation hands the deploy step)."""
        return {
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "weights": self.channel_weight.tolist(),
        }

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ResidualDetector:
        """The detector `to_dict` described."""
        return cls(np.asarray(params["mean"]), np.asarray(params["components"]), np.asarray(params["weights"]))

    @classmethod
    def principal(
        cls, count: int, total: np.ndarray, products: np.ndarray, weights: np.ndarray, explained: float = 0.9
    ) -> ResidualDetector:
        """PCA of `count` rows given by their sum (`total`) and the sum of their outer products
        (`products`), so that rows can be streamed: the fewest principal directions that explain
        `explained` of the variance, at most channels - 1 (so that a row always has an error)."""
        channels = len(total)
        mean = total / max(count, 1)
        covariance = (products - count * np.outer(mean, mean)) / max(count - 1, 1)
        variances, directions = np.linalg.eigh(covariance)
        order = np.argsort(variances)[::-1]
        variances, directions = np.clip(variances[order], 0, None), directions[:, order]
        share = np.cumsum(variances) / variances.sum() if variances.sum() > 0 else np.ones(channels)
        kept = min(int(np.searchsorted(share, explained) + 1), channels - 1)
        return cls(mean, directions[:, :kept], weights)

    @classmethod
    def raw_signal(cls, weights: np.ndarray) -> ResidualDetector:
        """The raw signal given the model's channel handling: the weighted sum of squared scaled values."""
        weights = np.asarray(weights, dtype=np.float64)
        return cls(np.zeros(len(weights)), np.zeros((len(weights), 0)), weights)
