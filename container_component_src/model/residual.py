"""The classical detectors of evaluation as models: a row's weighted squared error from its
projection on a few principal directions of the validation rows (PCA), or from zero (the raw
signal, in training standard deviations). Both live in the weighted space (each channel times the
square root of its weight), so that a channel of weight 0 has no part in either: not in the
error, and not in the directions the other channels' errors are measured from. One
implementation scores them in evaluation and, when the deploy gate finds one ahead of the VAE, in
the model server: the same rule in both places.

They have the VAE's serving interface (`context`, `score`, `channel_scores`), so a published
folder holding one is served, smoke-tested and explained exactly like the VAE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class ResidualDetector(torch.nn.Module):
    """Squared residual of weighted scaled rows after removing their projection on `components`.

    Args:
        mean: Each channel's center (zeros for the raw signal: scaled rows are centered already).
        components: Orthonormal directions in the weighted space, shape (channels, k); k = 0 for
            the raw signal.
        weights: Each channel's weight in the score (the VAE's `channel_weight`).
        bounds: Each channel's lowest and highest input (the VAE's `input_low` and `input_high`:
            a channel left out of the score is clamped to its training range before the
            projection, so that it cannot raise the other channels' errors); None: unbounded.
    """

    def __init__(
        self,
        mean: np.ndarray,
        components: np.ndarray,
        weights: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        channels = len(mean)
        self.context = 0  # a point detector: it scores every row on its own
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float64)))
        self.register_buffer(
            "components", torch.as_tensor(np.asarray(components, dtype=np.float64).reshape(channels, -1))
        )
        self.register_buffer("channel_weight", torch.as_tensor(np.asarray(weights, dtype=np.float64)))
        low, high = bounds if bounds is not None else (np.full(channels, -np.inf), np.full(channels, np.inf))
        self.register_buffer("input_low", torch.as_tensor(np.asarray(low, dtype=np.float64)))
        self.register_buffer("input_high", torch.as_tensor(np.asarray(high, dtype=np.float64)))
        self.bounded_inputs = bool(np.isfinite(low).any() or np.isfinite(high).any())

    @torch.jit.export
    def channel_scores(self, series: Tensor) -> Tensor:
        """Each channel's share of the score, shape (rows, channels); rows sum to `score`."""
        series = series.double()
        if self.bounded_inputs:
            series = torch.maximum(torch.minimum(series, self.input_high), self.input_low)
        centred = (series - self.mean) * self.channel_weight.sqrt()
        residual = centred - (centred @ self.components) @ self.components.T
        return residual.square()

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
        """The parameters, as JSON (what evaluation hands the deploy step; an unbounded input is null)."""

        def finite(values: Tensor) -> list[float | None]:
            return [value if np.isfinite(value) else None for value in values.tolist()]

        return {
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "weights": self.channel_weight.tolist(),
            "input_low": finite(self.input_low),
            "input_high": finite(self.input_high),
            "space": "weighted",
        }

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ResidualDetector:
        """The detector `to_dict` described (one written before inputs had bounds: unbounded).

        Raises:
            ValueError: Principal directions of unequally weighted channels fitted before they
                were fitted in the weighted space (they would score differently now).
        """
        channels = len(params["mean"])
        unequal = len(set(params["weights"])) > 1
        if params.get("space") != "weighted" and unequal and np.asarray(params["components"]).size:
            raise ValueError("its principal directions were fitted before the weighted space: evaluate again")
        low = [-np.inf if v is None else v for v in params.get("input_low", [None] * channels)]
        high = [np.inf if v is None else v for v in params.get("input_high", [None] * channels)]
        return cls(
            np.asarray(params["mean"]),
            np.asarray(params["components"]),
            np.asarray(params["weights"]),
            (np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)),
        )

    @classmethod
    def principal(
        cls,
        count: int,
        total: np.ndarray,
        products: np.ndarray,
        weights: np.ndarray,
        explained: float = 0.9,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> ResidualDetector:
        """PCA of `count` rows given by their sum (`total`) and the sum of their outer products
        (`products`), so that rows can be streamed, in the weighted space: the fewest principal
        directions that explain `explained` of the weighted variance, at most one fewer than the
        channels of weight > 0 (so that a row always has an error to show). `bounds` as the
        constructor's (the rows summed within them)."""
        weights = np.asarray(weights, dtype=np.float64)
        mean = total / max(count, 1)
        covariance = (products - count * np.outer(mean, mean)) / max(count - 1, 1)
        # The weighted channels' block alone: a direction never leans on a channel of weight 0.
        weighted = np.flatnonzero(weights > 0)
        root = np.sqrt(weights[weighted])
        variances, found = np.linalg.eigh(covariance[np.ix_(weighted, weighted)] * np.outer(root, root))
        order = np.argsort(variances)[::-1]
        variances = np.clip(variances[order], 0, None)
        share = np.cumsum(variances) / variances.sum() if variances.sum() > 0 else np.ones(len(weighted))
        kept = max(min(int(np.searchsorted(share, explained) + 1), len(weighted) - 1), 0)
        directions = np.zeros((len(total), kept))
        directions[weighted] = found[:, order[:kept]]
        return cls(mean, directions, weights, bounds)

    @classmethod
    def raw_signal(cls, weights: np.ndarray, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> ResidualDetector:
        """The raw signal given the model's channel handling: the weighted sum of squared scaled values."""
        weights = np.asarray(weights, dtype=np.float64)
        return cls(np.zeros(len(weights)), np.zeros((len(weights), 0)), weights, bounds)
