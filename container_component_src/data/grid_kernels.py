"""The compiled grid kernels of preprocessing: samples -> per-period values on a regular grid
(mean, min, max, median, first or last), per-channel statistics of a grid, and gap filling.

Pure functions on numpy arrays (numba, releasing the GIL); `data.preprocess` runs them in Dask
tasks. Grids are float32 and channel-major (channels x rows); sums and statistics accumulate in
float64.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd


def resample(
    ts: np.ndarray,
    columns: list[np.ndarray | None],
    grid_start_ns: int,
    bins: int,
    period_ns: int,
    how: str,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate one partition's samples onto its grid; periods without a value are NaN.

    Args:
        ts: Sample times (ns since epoch), usually sorted (sorted here when not).
        columns: Per channel, its samples (None: channel absent); NaN is missing.
        grid_start_ns: Start of the grid (a multiple of `period_ns`).
        bins: Number of grid periods.
        period_ns: Period length.
        how: One of AGGREGATIONS; NaN samples are ignored.
        out: Where to write the grid, shape (channels, bins), NaN-filled; a new float32 array when None.

    Returns:
        The grid, shape (channels, bins), and the count of non-NaN samples per channel.

    Raises:
        ValueError: A sample lies outside the grid.
    """
    grid = np.full((len(columns), bins), np.nan, dtype=np.float32) if out is None else out
    valid = np.zeros(len(columns), dtype=np.int64)
    bounds, run_columns, status = _period_runs(ts, grid_start_ns // period_ns, bins, period_ns)
    if status == _UNSORTED:
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        columns = [None if c is None else c[order] for c in columns]
        bounds, run_columns, status = _period_runs(ts, grid_start_ns // period_ns, bins, period_ns)
    if status == _OUTSIDE:
        raise ValueError(
            f"samples outside the grid {pd.Timestamp(grid_start_ns, tz='UTC')} + {bins} x {pd.Timedelta(period_ns)}"
        )
    aggregate_runs = _AGGREGATE_RUNS[how]
    for j, samples in enumerate(columns):
        if samples is not None:
            valid[j] = aggregate_runs(bounds, run_columns, samples, grid[j])
    return grid, valid


_UNSORTED, _OUTSIDE = 1, 2


@numba.njit(nogil=True, cache=True)
def _period_runs(ts: np.ndarray, first_bin: int, bins: int, period_ns: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Split sorted sample times into runs that share a grid period, in one pass with a division
    only per run: the first sample of each run (plus the end), each run's grid column, and a
    status (0, or _UNSORTED, or _OUTSIDE the grid)."""
    bounds = np.empty(ts.size + 1, dtype=np.int64)
    run_columns = np.empty(ts.size, dtype=np.int64)
    runs = 0
    period_end = 0
    for i in range(ts.size):
        t = ts[i]
        if i > 0 and t < ts[i - 1]:
            return bounds[:1], run_columns[:0], 1
        if i == 0 or t >= period_end:
            column = t // period_ns - first_bin
            if column < 0 or column >= bins:
                return bounds[:1], run_columns[:0], 2
            bounds[runs] = i
            run_columns[runs] = column
            runs += 1
            period_end = (column + first_bin + 1) * period_ns
    bounds[runs] = ts.size
    return bounds[: runs + 1], run_columns[:runs], 0


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _mean_runs(bounds: np.ndarray, run_columns: np.ndarray, samples: np.ndarray, out: np.ndarray) -> int:
    """Write each run's mean of its non-NaN samples to its grid column; return how many samples
    were not NaN. Branch-free (a NaN adds zero), so the loop vectorises and never mispredicts;
    reassociation lets it, and the NaN test stays exact."""
    added = 0
    for r in range(run_columns.size):
        total, count = 0.0, 0
        for i in range(bounds[r], bounds[r + 1]):
            value = samples[i]
            present = value == value
            total += value if present else 0.0
            count += present
        if count:
            out[run_columns[r]] = total / count
        added += count
    return added


@numba.njit(nogil=True, cache=True)
def _min_runs(bounds: np.ndarray, run_columns: np.ndarray, samples: np.ndarray, out: np.ndarray) -> int:
    """Like `_mean_runs`, for the minimum."""
    added = 0
    for r in range(run_columns.size):
        best, count = np.inf, 0
        for i in range(bounds[r], bounds[r + 1]):
            if samples[i] == samples[i]:
                best = min(best, samples[i])
                count += 1
        if count:
            out[run_columns[r]] = best
        added += count
    return added


@numba.njit(nogil=True, cache=True)
def _max_runs(bounds: np.ndarray, run_columns: np.ndarray, samples: np.ndarray, out: np.ndarray) -> int:
    """Like `_mean_runs`, for the maximum."""
    added = 0
    for r in range(run_columns.size):
        best, count = -np.inf, 0
        for i in range(bounds[r], bounds[r + 1]):
            if samples[i] == samples[i]:
                best = max(best, samples[i])
                count += 1
        if count:
            out[run_columns[r]] = best
        added += count
    return added


@numba.njit(nogil=True, cache=True)
def _median_runs(bounds: np.ndarray, run_columns: np.ndarray, samples: np.ndarray, out: np.ndarray) -> int:
    """Like `_mean_runs`, for the median."""
    added = 0
    buffer = np.empty(0, dtype=samples.dtype)
    for r in range(run_columns.size):
        start, stop = bounds[r], bounds[r + 1]
        if buffer.size < stop - start:
            buffer = np.empty(stop - start, dtype=samples.dtype)
        count = 0
        for i in range(start, stop):
            if samples[i] == samples[i]:
                buffer[count] = samples[i]
                count += 1
        if count:
            out[run_columns[r]] = np.median(buffer[:count])
        added += count
    return added


@numba.njit(nogil=True, cache=True)
def _first_runs(bounds: np.ndarray, run_columns: np.ndarray, samples: np.ndarray, out: np.ndarray) -> int:
    """Like `_mean_runs`, for the first non-NaN sample."""
    added = 0
    for r in range(run_columns.size):
        count = 0
        for i in range(bounds[r], bounds[r + 1]):
            if samples[i] == samples[i]:
                if count == 0:
                    out[run_columns[r]] = samples[i]
                count += 1
        added += count
    return added


@numba.njit(nogil=True, cache=True)
def _last_runs(bounds: np.ndarray, run_columns: np.ndarray, samples: np.ndarray, out: np.ndarray) -> int:
    """Like `_mean_runs`, for the last non-NaN sample."""
    added = 0
    for r in range(run_columns.size):
        for i in range(bounds[r], bounds[r + 1]):
            if samples[i] == samples[i]:
                out[run_columns[r]] = samples[i]
                added += 1
    return added


_AGGREGATE_RUNS = {
    "mean": _mean_runs,
    "min": _min_runs,
    "max": _max_runs,
    "median": _median_runs,
    "first": _first_runs,
    "last": _last_runs,
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
    channels = grid.shape[0]
    stats = {name: np.zeros(channels, dtype=np.int64) for name in ("n", "flat", "pairs")}
    stats |= {name: np.zeros(channels) for name in ("mean", "m2", "min", "max")}
    if breaks is None:
        breaks = np.zeros(grid.shape[1], dtype=np.bool_)
    observed = _grid_statistics(np.ascontiguousarray(grid), breaks, *(stats[k] for k in STAT_ORDER))
    return {
        "raw_rows": np.full(channels, raw_rows),
        "raw_valid": raw_valid,
        **stats,
        # Periods where no channel has data (an outage, a pause between recordings) count against none.
        "grid_bins": np.full(channels, observed),
    }


STAT_ORDER = ("n", "mean", "m2", "min", "max", "flat", "pairs")


@numba.njit(nogil=True, cache=True)
def _grid_statistics(
    grid: np.ndarray,
    breaks: np.ndarray,
    n: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    flat: np.ndarray,
    pairs: np.ndarray,
) -> int:
    """Fill the per-channel statistics in one compiled pass per channel; return the bins where
    any channel has a value."""
    channels, bins = grid.shape
    for j in range(channels):
        count, total, lo, hi = 0, 0.0, np.inf, -np.inf
        for b in range(bins):
            value = grid[j, b]
            if value == value:
                count += 1
                total += value
                lo, hi = min(lo, value), max(hi, value)
                if b > 0 and not breaks[b]:
                    previous = grid[j, b - 1]
                    if previous == previous:
                        pairs[j] += 1
                        if previous == value:
                            flat[j] += 1
        average = total / count if count else 0.0
        squares = 0.0
        for b in range(bins):
            value = grid[j, b]
            if value == value:
                squares += (value - average) ** 2
        n[j], mean[j], m2[j] = count, average, squares
        low[j], high[j] = (lo, hi) if count else (np.nan, np.nan)
    observed = 0
    for b in range(bins):
        for j in range(channels):
            if grid[j, b] == grid[j, b]:
                observed += 1
                break
    return observed


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
    if breaks is None:
        breaks = np.zeros(values.shape[1], dtype=np.bool_)
    return _fill_gaps(values, max_gap, breaks, before, values.shape[1] - after)


@numba.njit(nogil=True, cache=True)
def _fill_gaps(values: np.ndarray, max_gap: int, breaks: np.ndarray, counted_from: int, counted_to: int) -> int:
    """One pass per channel, remembering the last value seen since the last break."""
    filled = 0
    channels, rows = values.shape
    for j in range(channels):
        last = -1
        for i in range(rows):
            if breaks[i]:
                last = -1
            value = values[j, i]
            if value != value:
                continue
            gap = i - last - 1
            if last >= 0 and 0 < gap <= max_gap:
                left = values[j, last]
                for k in range(1, gap + 1):
                    values[j, last + k] = left + (value - left) * (k / (gap + 1))
                    if counted_from <= last + k < counted_to:
                        filled += 1
            last = i
    return filled
