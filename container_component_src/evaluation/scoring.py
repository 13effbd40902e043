"""Scoring rows with the trained model, and smoothing scores over time (shared with serving)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from container_component_src.data.labels import to_ns
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

if TYPE_CHECKING:
    import torch

SCORE_BATCH_ROWS = 65_536


def channel_matrix(frame: pd.DataFrame, channels: list[str], source: str) -> np.ndarray:
    """The `channels` columns of `frame` as a C-contiguous float32 matrix, checked for gaps.

    Raises:
        InputError: A channel is missing, or a value is NaN or infinite.
    """
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise InputError(f"{source} lacks channel(s) {', '.join(missing)}")
    values = np.ascontiguousarray(frame[channels].to_numpy(np.float32))
    if not np.isfinite(values).all():
        bad = [c for c, ok in zip(channels, np.isfinite(values).all(axis=0), strict=True) if not ok]
        raise InputError(f"{source} has NaN or infinite values in {', '.join(bad)}")
    return values


def score_rows(
    model: torch.jit.ScriptModule,
    values: np.ndarray,
    per_channel: bool = False,
    progress: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """Anomaly scores (negative log-likelihood) of scaled rows, in batches.

    Args:
        model: The TorchScript VAE of a Model artifact, on `device`.
        values: Scaled rows, shape (rows, channels), in the model's channel order.
        per_channel: Return each channel's share of the score, shape (rows, channels).
        progress: Show a progress bar.
        device: Where the model runs ("cpu" or "cuda").

    Returns:
        float64 scores, shape (rows,) or (rows, channels).
    """
    import torch
    from tqdm.auto import tqdm

    method = model.channel_scores if per_channel else model.score
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    batches = range(0, len(tensor), SCORE_BATCH_ROWS)
    with torch.inference_mode():
        parts = [
            method(tensor[start : start + SCORE_BATCH_ROWS].to(device)).double().cpu().numpy()
            for start in tqdm(batches, desc="scoring", unit="batch", disable=not progress or len(batches) < 2)
        ]
    if not parts:
        return np.empty((0, values.shape[1]) if per_channel else 0)
    return np.concatenate(parts)


def segment_ids(times: pd.DatetimeIndex) -> np.ndarray:
    """Number each run of rows on a regular grid: a new segment starts after a longer step."""
    if len(times) < 2:
        return np.zeros(len(times), dtype=np.int64)
    steps = np.diff(to_ns(times))
    return np.concatenate(([0], np.cumsum(steps > 1.5 * np.median(steps))))


def smooth_scores(scores: np.ndarray, window: int, segments: np.ndarray) -> np.ndarray:
    """Trailing rolling median of `scores` over `window` rows, restarted in every segment
    (so a median never mixes rows on either side of a gap). A window of 1 returns the scores.

    Raises:
        ValueError: `window` below 1.
    """
    if window < 1:
        raise OptionError(f"--smoothing-window must be at least 1, got {window}")
    if window == 1:
        return np.asarray(scores, dtype=np.float64)
    rolling = pd.Series(scores, dtype=np.float64).groupby(segments, sort=False).rolling(window, min_periods=1)
    return rolling.median().droplevel(0).sort_index().to_numpy()
