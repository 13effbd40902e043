"""Time segments: the gapless runs of rows on a regular grid. Scaling (per-segment references),
the model's batches (windows never cross a gap) and evaluation (scoring and smoothing restart in
each segment) all number rows the same way, so the numbering lives here, below all three."""

from __future__ import annotations

from collections.abc import Iterable

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


def median_step_ns(times_ns: Iterable[np.ndarray]) -> float:
    """The median step between consecutive times, over batches of times in order: what
    `segment_ids` compares each step with, in memory of the distinct steps (a regular grid has few:
    its period and the lengths of its gaps). 0.0 for fewer than two times."""
    counts: dict[int, int] = {}
    last: int | None = None
    for times in times_ns:
        if times.size == 0:
            continue
        steps = np.diff(times) if last is None else np.diff(times, prepend=last)
        last = int(times[-1])
        for step, count in zip(*np.unique(steps, return_counts=True), strict=True):
            counts[int(step)] = counts.get(int(step), 0) + int(count)
    total = sum(counts.values())
    if total == 0:
        return 0.0
    values = np.array(sorted(counts), dtype=np.int64)
    cumulative = np.cumsum([counts[v] for v in values])
    low, high = (values[np.searchsorted(cumulative, k, side="right")] for k in ((total - 1) // 2, total // 2))
    return (float(low) + float(high)) / 2


class SegmentNumbering:
    """`segment_ids` over batches of one series in time order: a batch's numbers continue those
    of the batch before.

    Args:
        median_step: The series' median step in nanoseconds (see `median_step_ns`).
    """

    def __init__(self, median_step: float) -> None:
        self.limit = 1.5 * median_step
        self.last_time: int | None = None
        self.last_id = 0

    def __call__(self, times_ns: np.ndarray) -> np.ndarray:
        if times_ns.size == 0:
            return np.zeros(0, dtype=np.int64)
        if self.last_time is None:
            ids = np.concatenate(([0], np.cumsum(np.diff(times_ns) > self.limit)))
        else:
            ids = self.last_id + np.cumsum(np.diff(times_ns, prepend=self.last_time) > self.limit)
        self.last_time, self.last_id = int(times_ns[-1]), int(ids[-1])
        return ids.astype(np.int64)
