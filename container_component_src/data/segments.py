"""Time segments: the gapless runs of rows on a regular grid. Scaling (per-segment references),
the model's batches (windows never cross a gap) and evaluation (scoring and smoothing restart in
each segment) all number rows the same way, so the numbering lives here, below all three."""

from __future__ import annotations

import numpy as np
import pandas as pd

from container_component_src.data.labels import to_ns


def segment_ids(times: pd.DatetimeIndex) -> np.ndarray:
    """Number each run of rows on a regular grid: a new segment starts after a longer step
    (more than 1.5x the median step)."""
    if len(times) < 2:
        return np.zeros(len(times), dtype=np.int64)
    steps = np.diff(to_ns(times))
    return np.concatenate(([0], np.cumsum(steps > 1.5 * np.median(steps))))


def segment_starts(segments: np.ndarray) -> np.ndarray:
    """Index of the first row of each segment (`segments` non-decreasing, not empty)."""
    return np.flatnonzero(np.concatenate(([True], segments[1:] != segments[:-1])))
