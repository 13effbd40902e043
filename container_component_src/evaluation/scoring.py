"""Scoring rows with the trained model, and smoothing scores over time (shared with serving)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from container_component_src.data.segments import segment_starts
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


def extended_index(segments: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a series with `context` copies of each segment's first row before it, so every row
    has a full window that never reaches into the previous segment.

    Returns:
        The row index of each position of the extended series, and the positions of the original
        rows in it (in order).
    """
    segments = np.asarray(segments)
    rows = np.arange(segments.size)
    if context == 0 or segments.size == 0:
        return rows, rows
    firsts = segment_starts(segments)
    index = np.insert(rows, np.repeat(firsts, context), np.repeat(firsts, context))
    real = np.ones(index.size, dtype=bool)
    real[np.repeat(firsts + context * np.arange(firsts.size), context) + np.tile(np.arange(context), firsts.size)] = (
        False
    )
    return index, np.flatnonzero(real)


def score_rows(
    model: torch.jit.ScriptModule,
    values: np.ndarray,
    segments: np.ndarray | None = None,
    method: str = "score",
    progress: bool = False,
    device: str = "cpu",
    dtype: type = np.float64,
) -> np.ndarray:
    """Anomaly scores of scaled rows in time order, in batches, one per row.

    A windowed model scores each row from the window that ends at it; the first rows of each
    segment (gapless run of rows), which lack `context` rows before them, see copies of the
    segment's first row in their place.

    Args:
        model: The TorchScript model of a Model artifact, on `device`.
        values: Scaled rows, shape (rows, channels), in the model's channel order and time order.
        segments: Segment number of each row (see `data.segments.segment_ids`); default: one segment.
        method: "score", or "channel_scores" (each channel's share, shape (rows, channels)), or
            "raw_channel_nll" (each channel's NLL before calibration).
        progress: Show a progress bar.
        device: Where the model runs ("cpu" or "cuda").
        dtype: np.float64, or np.float32 for the model's own float32 values in half the memory.

    Returns:
        Scores, shape (rows,) or (rows, channels).
    """
    import torch
    from tqdm.auto import tqdm

    context = int(model.context)
    index, real = extended_index(np.zeros(len(values), np.int64) if segments is None else segments, context)
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    function = getattr(model, method)
    out = torch.float32 if dtype == np.float32 else torch.float64
    starts = range(context, len(index), SCORE_BATCH_ROWS)
    with torch.inference_mode():
        parts = [
            function(tensor[index[start - context : start + SCORE_BATCH_ROWS]].to(device)).to(out).cpu().numpy()
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress or len(starts) < 2)
        ]
    if not parts:
        return np.empty((0, values.shape[1]) if method != "score" else 0, dtype=dtype)
    # The extended series' first `context` positions are padding: part 0 starts at position `context`.
    return np.concatenate(parts)[real - context]


class ChunkScorer:
    """`score_rows` over a series given a chunk at a time, in time order: each call returns the
    chunk's scores, the same as scoring the whole series at once (the last `context` rows of the
    chunks before complete the windows of a chunk's first rows).

    Args:
        model: As `score_rows`.
        method: As `score_rows`.
        dtype: As `score_rows`.
    """

    def __init__(self, model: torch.jit.ScriptModule, method: str = "score", dtype: type = np.float64) -> None:
        self.model, self.method, self.context, self.dtype = model, method, int(model.context), dtype
        self.values: np.ndarray | None = None
        self.segments = np.empty(0, np.int64)

    def __call__(self, values: np.ndarray, segments: np.ndarray) -> np.ndarray:
        """Scores of the next chunk: scaled rows (rows, channels) and the segment of each row."""
        carried = 0 if self.values is None else len(self.values)
        if carried:
            values, segments = np.concatenate([self.values, values]), np.concatenate([self.segments, segments])
        scores = score_rows(self.model, values, segments, method=self.method, dtype=self.dtype)[carried:]
        cut = max(len(values) - self.context, 0)
        self.values, self.segments = values[cut:], segments[cut:]
        return scores


def split_shares(shares: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows' channel shares (a detector's `channel_scores`, shape (rows, channels)) as each row's
    score, summed as the detectors' `score` sums them (the same values to the bit), and each
    channel's sum over the rows.

    Returns:
        float64 scores, shape (rows,), and float64 channel sums, shape (channels,).
    """
    import torch

    tensor = torch.as_tensor(shares)
    return tensor.sum(dim=1).double().numpy(), tensor.sum(dim=0, dtype=torch.float64).numpy()


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
