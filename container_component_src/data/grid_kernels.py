"""The grid kernels of preprocessing: samples -> per-period values on a regular grid (mean, min,
max, median, first or last), per-channel statistics of a grid, and gap filling.

Pure, vectorised numpy functions (numpy releases the GIL in each of them, so the tasks of
`data.preprocess` run side by side on threads). Grids are float32 and channel-major (channels x
rows); sums and statistics accumulate in float64. Numpy rather than a JIT compiler: compiled
loops were ~2.5x faster per sample, but importing the compiler and loading its cached machine
code cost 0.3 s in every process, more than the kernels' whole time on the default data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def resample(
    ts: np.ndarray,
    samples: np.ndarray,
    grid_start_ns: int,
    bins: int,
    period_ns: int,
    how: str,
    out: np.ndarray | None = None,
    rows: list[int] | None = None,
    work: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate one partition's samples onto its grid; periods without a value are NaN.

    Args:
        ts: Sample times (ns since epoch), usually sorted (sorted here, stably, when not).
        samples: Channels x samples, any numeric type; NaN is missing.
        grid_start_ns: Start of the grid (a multiple of `period_ns`).
        bins: Number of grid periods.
        period_ns: Period length.
        how: One of `AGGREGATE_RUNS`; NaN samples are ignored.
        out: Where to write the grid, shape (grid rows, bins), NaN-filled; a new float32 array of
            one row per channel when None.
        rows: The grid row of each channel, ascending (default: the first rows, in order).
        work: A float64 buffer of at least channels x samples to reuse for the samples (a new
            array of a few MB per call costs as much in page faults as the aggregation itself).

    Returns:
        The grid, and the count of non-NaN samples per grid row.

    Raises:
        ValueError: A sample lies outside the grid.
    """
    grid = np.full((samples.shape[0], bins), np.nan, dtype=np.float32) if out is None else out
    rows = list(range(samples.shape[0])) if rows is None else rows
    valid = np.zeros(grid.shape[0], dtype=np.int64)
    if ts.size == 0 or not rows:
        return grid, valid
    order = None
    if ts.size > 1 and (ts[1:] < ts[:-1]).any():
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
    if ts[0] < grid_start_ns or ts[-1] >= grid_start_ns + bins * period_ns:
        import pandas as pd  # only to say where: pandas costs a quarter of a second to import

        start, period = pd.Timestamp(grid_start_ns, tz="UTC"), pd.Timedelta(period_ns)
        raise ValueError(f"samples outside the grid {start} + {bins} x {period}")
    # Sorted samples: each period's first sample by a binary search of the period edges (no
    # division per sample); the periods with a sample are the runs.
    edges = np.searchsorted(ts, grid_start_ns + period_ns * np.arange(bins + 1))
    occupied = np.flatnonzero(edges[1:] > edges[:-1])
    starts = edges[occupied]
    runs = Runs(starts, edges[occupied + 1] - starts, occupied)
    # The samples in float64: the reductions then run without casting (numpy buffers a casting
    # reduction run by run: 2.3x slower), and float64 is what the sums need anyway.
    size = samples.size
    as_float = (work[:size] if work is not None and work.size >= size else np.empty(size)).reshape(samples.shape)
    np.copyto(as_float, samples if order is None else samples[:, order])
    values, counts = AGGREGATE_RUNS[how](runs, as_float)
    # Consecutive rows and every period occupied (the usual): slices, no index grid to build.
    target = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] == len(rows) - 1 else rows
    if runs.columns.size == bins:
        grid[target] = values
    elif isinstance(target, slice):
        grid[target, runs.columns] = values
    else:
        grid[np.ix_(rows, runs.columns)] = values
    valid[rows] = counts
    return grid, valid


@dataclass(frozen=True)
class Runs:
    """Consecutive samples that share a grid period.

    Attributes:
        starts: Each run's first sample.
        lengths: Each run's samples.
        columns: Each run's grid column.
    """

    starts: np.ndarray
    lengths: np.ndarray
    columns: np.ndarray


# (runs, samples: channels x samples, float64, NaN missing) -> (channels x runs, non-NaN per channel)
Aggregate = Callable[[Runs, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _reduce_runs(ufunc: np.ufunc, samples: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """`ufunc.reduceat` of each channel's runs, channels x runs: channel by channel and without
    `out`, as numpy 2.4 releases the GIL only in such a call (a 2-D one, or one given `out`,
    holds it throughout: the tasks' threads queued for it). Same work either way."""
    out = np.empty((samples.shape[0], starts.size), dtype=samples.dtype)
    for k, row in enumerate(samples):
        out[k] = ufunc.reduceat(row, starts)
    return out


def _present(samples: np.ndarray) -> np.ndarray | None:
    """The mask of non-NaN samples, or None when all are."""
    missing = np.isnan(samples)
    return ~missing if missing.any() else None


def _mean_runs(runs: Runs, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run's mean of its non-NaN samples, channels x runs, and the non-NaN samples per channel.

    One pass sums every run; only the runs whose sum came out NaN (a missing sample in them) are
    summed again without their NaN, so a few gaps cost a few runs, not a pass over every sample.
    """
    totals = _reduce_runs(np.add, samples, runs.starts)
    counts = np.broadcast_to(runs.lengths, totals.shape)
    channel, run = np.nonzero(np.isnan(totals))
    if channel.size:
        # The samples of every gapped run of every channel, gathered once, run after run.
        sizes = runs.lengths[run]
        offsets = np.cumsum(sizes) - sizes
        first = channel * samples.shape[1] + runs.starts[run]
        picked = samples.ravel()[np.repeat(first - offsets, sizes) + np.arange(offsets[-1] + sizes[-1])]
        present = ~np.isnan(picked)
        counts = counts.copy()
        totals[channel, run] = np.add.reduceat(np.where(present, picked, 0), offsets)
        counts[channel, run] = np.add.reduceat(present, offsets, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / counts, counts.sum(axis=1)  # 0 / 0: NaN, a period without a value


def _valid_counts(samples: np.ndarray) -> np.ndarray:
    present = _present(samples)
    return np.full(samples.shape[0], samples.shape[1]) if present is None else present.sum(axis=1)


def _extreme_runs(reduce: np.ufunc) -> Aggregate:
    """Like `_mean_runs`, for `np.fmin` or `np.fmax`, which skip NaN (all NaN gives NaN)."""

    def aggregate(runs: Runs, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _reduce_runs(reduce, samples, runs.starts), _valid_counts(samples)

    return aggregate


def _edge_runs(last: bool) -> Aggregate:
    """Like `_mean_runs`, for the first (or the last) non-NaN sample of each run."""

    def aggregate(runs: Runs, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = _present(samples)
        size = samples.shape[1]
        if present is None:
            picks = runs.starts + runs.lengths - 1 if last else runs.starts
            return samples[:, picks], _valid_counts(samples)
        positions = np.arange(size)
        if last:
            picks = _reduce_runs(np.maximum, np.where(present, positions, -1), runs.starts)
        else:
            picks = _reduce_runs(np.minimum, np.where(present, positions, size), runs.starts)
        found = (picks >= 0) & (picks < size)
        values = np.take_along_axis(samples, np.clip(picks, 0, size - 1), axis=1)
        return np.where(found, values, np.nan), present.sum(axis=1)

    return aggregate


def _median_runs(runs: Runs, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like `_mean_runs`, for the median: per channel, one sort by (run, value), NaN last in a run."""
    run = np.repeat(np.arange(runs.starts.size), runs.lengths)
    medians = np.full((samples.shape[0], runs.starts.size), np.nan)
    counts = np.zeros(samples.shape[0], dtype=np.int64)
    for k, channel in enumerate(samples):
        ordered = channel[np.lexsort((channel, run))]
        present = _present(channel)
        per_run = runs.lengths if present is None else np.add.reduceat(present, runs.starts, dtype=np.int64)
        has = per_run > 0
        low = runs.starts + np.maximum(per_run - 1, 0) // 2
        high = runs.starts + per_run // 2
        medians[k, has] = (ordered[low[has]] + ordered[high[has]]) / 2
        counts[k] = per_run.sum()
    return medians, counts


AGGREGATE_RUNS: dict[str, Aggregate] = {
    "mean": _mean_runs,
    "min": _extreme_runs(np.fmin),
    "max": _extreme_runs(np.fmax),
    "median": _median_runs,
    "first": _edge_runs(last=False),
    "last": _edge_runs(last=True),
}


def grid_statistics(
    grid: np.ndarray, raw_rows: int, raw_valid: np.ndarray, breaks: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-channel statistics of gridded telemetry (channels x bins), before gap filling.

    Mean and spread are kept as count, mean and sum of squared deviations, which merge exactly
    and stably across batches (`merge_statistics`).

    Args:
        grid: Channels x bins.
        raw_rows: Raw samples behind the grid.
        raw_valid: Non-NaN raw samples per channel.
        breaks: True at a bin that does not follow the previous one in time (no pair across it).
    """
    channels, bins = grid.shape
    present = ~np.isnan(grid)
    n = np.count_nonzero(present, axis=1)
    zeroed = np.where(present, grid, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, zeroed.sum(axis=1, dtype=np.float64) / n, 0.0)
    deviations = zeroed - mean[:, None]  # float64
    np.multiply(deviations, present, out=deviations)
    m2 = np.einsum("ij,ij->i", deviations, deviations)
    follows = ~breaks[1:] if breaks is not None else np.ones(max(bins - 1, 0), dtype=np.bool_)
    pairs = present[:, 1:] & present[:, :-1] & follows
    extremes = (
        (np.fmin.reduce(grid, axis=1), np.fmax.reduce(grid, axis=1)) if bins else (np.full(channels, np.nan),) * 2
    )
    return {
        "raw_rows": np.full(channels, raw_rows),
        "raw_valid": raw_valid,
        "n": n.astype(np.int64),
        "mean": mean,
        "m2": m2,
        "min": extremes[0].astype(np.float64),
        "max": extremes[1].astype(np.float64),
        # NaN equals nothing, so equal neighbours are both present.
        "flat": np.count_nonzero((grid[:, 1:] == grid[:, :-1]) & follows, axis=1).astype(np.int64),
        "pairs": np.count_nonzero(pairs, axis=1).astype(np.int64),
        # Periods where no channel has data (an outage, a pause between recordings) count against none.
        "grid_bins": np.full(channels, int(np.count_nonzero(present.any(axis=0)))),
    }


def merge_statistics(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Combine two partitions' statistics (Chan et al.'s parallel mean and variance)."""
    n = a["n"] + b["n"]
    safe_n = np.maximum(n, 1)
    delta = b["mean"] - a["mean"]
    merged = {key: a[key] + b[key] for key in ("raw_rows", "raw_valid", "flat", "pairs", "grid_bins")}
    merged.update(
        n=n,
        mean=a["mean"] + delta * b["n"] / safe_n,
        m2=a["m2"] + b["m2"] + delta * delta * a["n"] * b["n"] / safe_n,
        min=np.fmin(a["min"], b["min"]),
        max=np.fmax(a["max"], b["max"]),
    )
    return merged


def fill_gaps(
    values: np.ndarray, max_gap: int, breaks: np.ndarray | None = None, before: int = 0, after: int = 0
) -> int:
    """Linearly interpolate, in place, NaN runs of at most `max_gap` rows with values on both sides.

    Args:
        values: Grid values, channel-major (channels, rows); the first `before` and last
            `after` rows are context from neighbouring partitions.
        max_gap: Longest run of missing rows to fill.
        breaks: True at a row that does not follow the previous one in time: no run across it is filled.
        before: Leading context rows (filled like the rest, never counted).
        after: Trailing context rows (filled like the rest, never counted).

    Returns:
        The number of cells filled outside the context rows.
    """
    rows = values.shape[1]
    # Rows in the same stretch of time share a count of breaks so far.
    stretch = np.cumsum(breaks) if breaks is not None else None
    filled = 0
    for row in values:
        known = np.flatnonzero(~np.isnan(row))
        if known.size < 2:
            continue
        left, right = known[:-1], known[1:]
        gaps = right - left - 1
        fill = (gaps > 0) & (gaps <= max_gap)
        if stretch is not None:
            fill &= stretch[left] == stretch[right]
        if not fill.any():
            continue
        left, right, gaps = left[fill], right[fill], gaps[fill]
        # Every missing row of the filled gaps: its gap's left neighbour and its step into the gap.
        owner = np.repeat(np.arange(gaps.size), gaps)
        step = np.arange(owner.size) - np.repeat(np.cumsum(gaps) - gaps, gaps) + 1
        at = left[owner] + step
        low, high = row[left][owner], row[right][owner]
        row[at] = low + (high - low) * (step / (gaps + 1)[owner])
        filled += int(((at >= before) & (at < rows - after)).sum())
    return filled
