"""Dask preprocessing: partitions -> a regular time grid of numeric channels, plus a quality report.

Stage 1 (one Dask task per partition) reads a partition and puts it on the grid, with per
channel statistics. The driver then drops channels that are mostly missing. Stage 2 fills short
gaps (using the neighbouring partitions' edges), drops the rows still incomplete and optionally
samples; the driver writes one sorted, time-indexed parquet file per partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from container_component_src import storage
from container_component_src.data.split_archive import TIMESTAMP_TYPE, parse_period, partition_range
from container_component_src.storage import InputError

Aggregation = Literal["mean", "min", "max", "median", "first", "last"]
AGGREGATIONS: tuple[str, ...] = ("mean", "min", "max", "median", "first", "last")


@dataclass(frozen=True)
class Partition:
    """What the footer of one partition file says."""

    url: str
    start_ns: int
    end_ns: int
    rows: int
    numeric: tuple[str, ...]
    other: tuple[str, ...]
    ts_min_ns: int
    ts_max_ns: int


@dataclass(frozen=True)
class PreprocessOptions:
    """How telemetry is put on the grid.

    Attributes:
        resample_period: Grid period (pandas notation, e.g. '1min'); must divide the partitions.
        aggregation: How samples within one grid period combine.
        max_gap_periods: Gaps up to this many periods are linearly interpolated.
        max_missing_share: Channels missing on more of the grid than this are dropped.
        sample_frac: Share of output rows kept (1.0 keeps all), sampled with `seed`.
        seed: Seed of the sampling.
    """

    resample_period: str = "1min"
    aggregation: Aggregation = "mean"
    max_gap_periods: int = 5
    max_missing_share: float = 0.5
    sample_frac: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        parse_period(self.resample_period, "--resample-period")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"--aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.max_gap_periods < 0:
            raise ValueError(f"--max-gap-periods must be >= 0, got {self.max_gap_periods}")
        if not 0.0 <= self.max_missing_share <= 1.0:
            raise ValueError(f"--max-missing-share must be in [0, 1], got {self.max_missing_share}")
        if not 0.0 < self.sample_frac <= 1.0:
            raise ValueError(f"--sample-frac must be in (0, 1], got {self.sample_frac}")


def resample(ts_ns: np.ndarray, values: np.ndarray, start_ns: int, n_bins: int, period_ns: int, how: str) -> np.ndarray:
    """Aggregate sorted samples into `n_bins` periods from `start_ns`; empty periods are NaN.

    Args:
        ts_ns: Sorted sample times (ns since epoch).
        values: Samples, shape (len(ts_ns), channels); NaN is a missing sample.
        start_ns: Start of the first period.
        n_bins: Number of periods.
        period_ns: Period length.
        how: One of AGGREGATIONS; NaN samples are ignored.

    Returns:
        Array of shape (n_bins, channels).
    """
    bins = (ts_ns - start_ns) // period_ns
    inside = (bins >= 0) & (bins < n_bins)
    bins, values = bins[inside], values[inside]
    out = np.full((n_bins, values.shape[1]), np.nan)
    if how == "mean":
        for j in range(values.shape[1]):
            valid = ~np.isnan(values[:, j])
            counts = np.bincount(bins[valid], minlength=n_bins)
            sums = np.bincount(bins[valid], weights=values[valid, j], minlength=n_bins)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, j] = np.where(counts > 0, sums / counts, np.nan)
    elif how in ("min", "max"):
        if bins.size:
            starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
            reduce = np.fmin if how == "min" else np.fmax
            out[bins[starts]] = reduce.reduceat(values, starts, axis=0)
    else:
        frame = pd.DataFrame(values).groupby(bins, sort=True).agg(how)
        out[frame.index.to_numpy()] = frame.to_numpy()
    return out


def partition_statistics(values: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel sums that combine across partitions into the quality report."""
    valid = ~np.isnan(values)
    filled = np.where(valid, values, 0.0)
    pairs = valid[1:] & valid[:-1]
    return {
        "raw_rows": np.full(values.shape[1], values.shape[0]),
        "raw_missing": (~valid).sum(axis=0),
        "sum": filled.sum(axis=0),
        "sumsq": (filled * filled).sum(axis=0),
        "min": np.where(valid.any(axis=0), np.nanmin(np.where(valid, values, np.inf), axis=0), np.nan),
        "max": np.where(valid.any(axis=0), np.nanmax(np.where(valid, values, -np.inf), axis=0), np.nan),
        "flat": (pairs & (values[1:] == values[:-1])).sum(axis=0),
        "pairs": pairs.sum(axis=0),
        "grid_bins": np.full(values.shape[1], grid.shape[0]),
        "grid_missing": np.isnan(grid).sum(axis=0),
    }


def fill_gaps(values: np.ndarray, max_gap: int, before: int = 0, after: int = 0) -> tuple[np.ndarray, int]:
    """Linearly interpolate NaN runs of at most `max_gap` rows that have values on both sides.

    Args:
        values: Grid values, shape (rows, channels); the first `before` rows are context only.
        max_gap: Longest run of missing rows to fill.
        before: Leading context rows (from the previous partition), never counted as filled.
        after: Trailing context rows (from the next partition), never counted as filled.

    Returns:
        The filled array and the number of cells filled.
    """
    out = values.copy()
    filled = 0
    if max_gap == 0:
        return out, 0
    positions = np.arange(values.shape[0])
    for j in range(values.shape[1]):
        missing = np.isnan(values[:, j])
        if not missing.any() or missing.all():
            continue
        run_id = np.cumsum(np.r_[True, missing[1:] != missing[:-1]])
        run_length = np.bincount(run_id)[run_id]
        valid_pos = positions[~missing]
        bounded = (positions > valid_pos[0]) & (positions < valid_pos[-1])
        fill = missing & bounded & (run_length <= max_gap)
        fill[:before] = False
        fill[values.shape[0] - after :] = False
        if fill.any():
            out[fill, j] = np.interp(positions[fill], valid_pos, values[~missing, j])
            filled += int(fill.sum())
    return out, filled


def inspect_partitions(urls: list[str], timestamp_column: str) -> list[Partition]:
    """Read the footers of the partition files (or folders of them) in `urls`, sorted by time."""
    files: list[str] = []
    for url in urls:
        storage.require(url, "partition input")
        fs, path = storage.filesystem(url)
        files += storage.list_files(url, ".parquet") if fs.isdir(path) else [url]
    if not files:
        raise InputError(f"no partition file in {', '.join(urls)}")
    partitions = [_inspect(url, timestamp_column) for url in files]
    return sorted(partitions, key=lambda p: p.start_ns)


def _inspect(url: str, timestamp_column: str) -> Partition:
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        meta = pq.ParquetFile(handle).metadata
    schema = meta.schema.to_arrow_schema()
    if meta.num_rows == 0:
        raise InputError(f"partition {url} holds no rows")
    if timestamp_column not in schema.names:
        raise InputError(f"partition {url} has no timestamp column '{timestamp_column}'")
    start, end = partition_range(schema.metadata, url)
    numeric = tuple(
        f.name
        for f in schema
        if f.name != timestamp_column and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
    )
    other = tuple(f.name for f in schema if f.name != timestamp_column and f.name not in numeric)
    ts_index = schema.get_field_index(timestamp_column)
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(ts_index).statistics
        if stats is None or not stats.has_min_max:
            lows, highs = [start.value], [end.value - 1]
            break
        lows.append(pd.Timestamp(stats.min).value)
        highs.append(pd.Timestamp(stats.max).value)
    return Partition(url, start.value, end.value, meta.num_rows, numeric, other, min(lows), max(highs))


def plan_grid(partitions: list[Partition], period_ns: int) -> list[tuple[int, int]]:
    """Return (grid start, bin count) per partition: each partition's range, clipped to the data."""
    for p in partitions:
        if p.start_ns % period_ns or (p.end_ns - p.start_ns) % period_ns:
            raise ValueError(
                f"--resample-period {pd.Timedelta(period_ns)} does not divide the partitions "
                f"({pd.Timedelta(p.end_ns - p.start_ns)} from {pd.Timestamp(p.start_ns, tz='UTC')}): pick one that does"
            )
    first = min(p.ts_min_ns for p in partitions) // period_ns * period_ns
    last = max(p.ts_max_ns for p in partitions) // period_ns * period_ns + period_ns
    grids = []
    for p in partitions:
        lo, hi = max(p.start_ns, first), min(p.end_ns, last)
        grids.append((lo, max(0, (hi - lo) // period_ns)))
    return grids


def _grid_partition(
    partition: Partition,
    channels: list[str],
    grid_start: int,
    n_bins: int,
    period_ns: int,
    how: str,
    timestamp_column: str,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Stage 1 task: read one partition and put it on its grid."""
    fs, path = storage.filesystem(partition.url)
    present = [c for c in channels if c in partition.numeric]
    table = pq.read_table(path, filesystem=fs, columns=[timestamp_column, *present])
    ts = table.column(timestamp_column).cast(TIMESTAMP_TYPE).to_numpy().astype("int64")
    values = np.full((table.num_rows, len(channels)), np.nan)
    for j, name in enumerate(channels):
        if name in present:
            values[:, j] = table.column(name).to_numpy(zero_copy_only=False).astype("float64", copy=False)
    if np.any(ts[1:] < ts[:-1]):
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
    grid = resample(ts, values, grid_start, n_bins, period_ns, how)
    return grid, partition_statistics(values, grid)


def _finish_partition(
    index: int,
    current: np.ndarray,
    previous: np.ndarray | None,
    following: np.ndarray | None,
    keep: np.ndarray,
    grid_start: int,
    period_ns: int,
    options: PreprocessOptions,
) -> tuple[int, pd.DataFrame, dict[str, int]]:
    """Stage 2 task: fill short gaps (with neighbour context), drop incomplete rows, sample."""
    context = options.max_gap_periods + 1
    head = previous[-context:, keep] if previous is not None else np.empty((0, keep.sum()))
    tail = following[:context, keep] if following is not None else np.empty((0, keep.sum()))
    stacked = np.vstack([head, current[:, keep], tail])
    filled, n_filled = fill_gaps(stacked, options.max_gap_periods, before=len(head), after=len(tail))
    values = filled[len(head) : len(head) + current.shape[0]]
    complete = ~np.isnan(values).any(axis=1)
    times = pd.DatetimeIndex(grid_start + period_ns * np.arange(current.shape[0]), tz="UTC")
    rows = complete
    if options.sample_frac < 1.0:
        rng = np.random.default_rng([options.seed, index])
        rows = complete & (rng.random(complete.size) < options.sample_frac)
    counts = {
        "grid_rows": int(current.shape[0]),
        "filled_cells": n_filled,
        "dropped_incomplete_rows": int((~complete).sum()),
        "sampled_out_rows": int((complete & ~rows).sum()),
        "output_rows": int(rows.sum()),
    }
    return index, pd.DataFrame(values[rows].astype("float32"), index=times[rows]), counts


def quality_report(
    channels: list[str], stats: list[dict[str, np.ndarray]], max_missing_share: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Combine partition statistics into a per-channel report and the mask of channels kept."""
    total = {key: np.sum([s[key] for s in stats], axis=0) for key in stats[0] if key not in ("min", "max")}
    lows = np.array([s["min"] for s in stats])
    highs = np.array([s["max"] for s in stats])
    valid = total["raw_rows"] - total["raw_missing"]
    report: dict[str, Any] = {}
    keep = np.zeros(len(channels), dtype=bool)
    for j, name in enumerate(channels):
        n = int(valid[j])
        mean = total["sum"][j] / n if n else float("nan")
        var = max(total["sumsq"][j] / n - mean * mean, 0.0) if n else float("nan")
        grid_missing = float(total["grid_missing"][j] / max(total["grid_bins"][j], 1))
        reason = None
        if n == 0:
            reason = "no value at all"
        elif grid_missing > max_missing_share:
            reason = f"missing on {grid_missing:.0%} of the grid (> {max_missing_share:.0%})"
        keep[j] = reason is None
        report[name] = {
            "raw_missing_share": float(total["raw_missing"][j] / max(total["raw_rows"][j], 1)),
            "grid_missing_share": grid_missing,
            "min": float(np.nanmin(lows[:, j])) if n else None,
            "max": float(np.nanmax(highs[:, j])) if n else None,
            "mean": float(mean) if n else None,
            "std": float(np.sqrt(var)) if n else None,
            "flat_line_share": float(total["flat"][j] / total["pairs"][j]) if total["pairs"][j] else None,
            "dropped": reason,
        }
    return report, keep


def run_preprocess(
    partition_urls: list[str],
    out_url: str,
    quality_report_url: str,
    client: Any,
    options: PreprocessOptions,
    timestamp_column: str = "normalizedTime",
) -> dict[str, Any]:
    """Put partitioned telemetry on a regular grid with Dask and write it with its quality report.

    Args:
        partition_urls: Partition files, or folders of them (outputs of split-archive).
        out_url: Folder for the time-indexed parquet output (one file per partition).
        quality_report_url: JSON file for the data-quality report.
        client: A connected `distributed.Client`.
        options: Grid, gap and sampling options.
        timestamp_column: Name of the timestamp column (and of the output index).

    Returns:
        The quality report.

    Raises:
        InputError: No partition, no numeric channel, or no usable channel.
    """
    options.validate()
    period_ns = parse_period(options.resample_period, "--resample-period").value
    partitions = inspect_partitions(partition_urls, timestamp_column)
    channels = list(dict.fromkeys(c for p in partitions for c in p.numeric))
    non_numeric = sorted({c for p in partitions for c in p.other})
    if not channels:
        raise InputError(
            f"no numeric channel in {partitions[0].url} and the other partitions "
            f"(non-numeric columns: {', '.join(non_numeric) or 'none'})"
        )
    grids = plan_grid(partitions, period_ns)
    stage1 = [
        client.submit(
            _grid_partition, p, channels, start, n, period_ns, options.aggregation, timestamp_column, pure=False
        )
        for p, (start, n) in zip(partitions, grids, strict=True)
    ]
    stats = list(_gather(client, [client.submit(itemgetter(1), f) for f in stage1], "grid partitions"))
    report, keep = quality_report(channels, stats, options.max_missing_share)
    if not keep.any():
        raise InputError(
            f"no usable channel in {partitions[0].url} and the other partitions: every channel is all NaN "
            f"or missing on more than {options.max_missing_share:.0%} of the grid"
        )
    grid_arrays = [client.submit(itemgetter(0), f) for f in stage1]
    stage2 = []
    for i, (start, _) in enumerate(grids):
        adjacent_prev = i > 0 and partitions[i - 1].end_ns == partitions[i].start_ns
        adjacent_next = i + 1 < len(grids) and partitions[i].end_ns == partitions[i + 1].start_ns
        stage2.append(
            client.submit(
                _finish_partition,
                i,
                grid_arrays[i],
                grid_arrays[i - 1] if adjacent_prev else None,
                grid_arrays[i + 1] if adjacent_next else None,
                keep,
                start,
                period_ns,
                options,
                pure=False,
            )
        )
    kept = [c for c, k in zip(channels, keep, strict=True) if k]
    counts: dict[str, int] = {}
    with storage.atomic_directory(out_url) as out_dir:
        for index, frame, part_counts in _gather(client, stage2, "fill and write"):
            frame.columns = kept
            frame.index.name = timestamp_column
            storage.write_parquet(frame, storage.join(out_dir, f"part-{index:05d}.parquet"))
            for key, value in part_counts.items():
                counts[key] = counts.get(key, 0) + value
    if counts["output_rows"] == 0:
        raise InputError(f"no complete row left after gap handling in {partitions[0].url} and the other partitions")
    summary = {
        "resample_period": options.resample_period,
        "aggregation": options.aggregation,
        "partitions": len(partitions),
        "raw_rows": int(sum(p.rows for p in partitions)),
        **counts,
        "channels_kept": kept,
        "non_numeric_columns_dropped": non_numeric,
        "channels": report,
    }
    storage.write_json(summary, quality_report_url)
    return summary


def _gather(client: Any, futures: list[Any], description: str):
    """Yield future results as they complete, with a progress bar."""
    from distributed import as_completed

    for future in tqdm(as_completed(futures), total=len(futures), desc=description, unit="partition"):
        yield future.result()
