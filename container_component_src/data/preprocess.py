"""Dask preprocessing: partitions -> a regular time grid of numeric channels, plus a quality report.

Stage 1 (one Dask task per batch of consecutive partitions) reads the partitions and puts them
on the grid, with per-channel statistics. The driver merges the statistics and drops channels
that are mostly missing. Stage 2 fills short gaps (using the neighbouring batches' edges), drops
the rows still incomplete and optionally samples; the driver writes one sorted, time-indexed
parquet file per batch. Arrays are channel-major (channels x rows) throughout.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
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


def resample(
    ts_chunks: list[np.ndarray],
    column_chunks: list[list[np.ndarray] | None],
    segment_starts_ns: np.ndarray,
    segment_bins: np.ndarray,
    period_ns: int,
    how: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate samples onto grid segments; empty periods are NaN.

    Samples arrive in chunks (as Arrow decodes them), processed without copying them together.

    Args:
        ts_chunks: Sample times (ns since epoch) per chunk; sorted overall, each inside a segment.
        column_chunks: Per channel, its samples per chunk (None: channel absent); NaN is missing.
        segment_starts_ns: Start of each grid segment (sorted, multiples of `period_ns`).
        segment_bins: Number of periods of each segment.
        period_ns: Period length.
        how: One of AGGREGATIONS; NaN samples are ignored.

    Returns:
        The segments' grids side by side, shape (channels, segment_bins.sum()), and the count
        of non-NaN samples per channel.
    """
    n_bins = int(segment_bins.sum())
    first_bin = segment_starts_ns // period_ns
    offsets = np.r_[0, np.cumsum(segment_bins)[:-1]]
    positions = [_grid_positions(ts, first_bin, offsets, period_ns) for ts in ts_chunks]
    valid = np.zeros(len(column_chunks), dtype=np.int64)
    if how not in ("mean", "min", "max"):
        return _resample_with_pandas(positions, column_chunks, n_bins, how, valid)
    grid = np.zeros((len(column_chunks), n_bins))
    counts = np.zeros(n_bins, dtype=np.int64)
    if how == "mean":
        runs = [_runs(position) for position in positions]
        for j, chunks in enumerate(column_chunks):
            counts[:] = 0
            for samples, (bounds, run_positions) in zip(chunks or [], runs, strict=False):
                # A period split across two chunks accumulates both parts.
                valid[j] += _add_runs(bounds, run_positions, samples, grid[j], counts)
            with np.errstate(invalid="ignore", divide="ignore"):
                grid[j] = np.where(counts > 0, grid[j] / counts, np.nan)
        return grid, valid
    # Samples are sorted, so each period is a contiguous run of a chunk: reduce runs in one call.
    runs = []
    for position in positions:
        starts = np.flatnonzero(np.r_[True, position[1:] != position[:-1]])
        runs.append((starts, position[starts], np.diff(np.r_[starts, position.size])))
    reduce = np.fmin if how == "min" else np.fmax
    for j, chunks in enumerate(column_chunks):
        grid[j] = np.inf if how == "min" else -np.inf
        counts[:] = 0
        for samples, (starts, present, lengths) in zip(chunks or [], runs, strict=False):
            if not samples.size:
                continue
            chunk_counts = lengths - np.add.reduceat(np.isnan(samples), starts, dtype=np.int64)
            grid[j, present] = reduce(grid[j, present], reduce.reduceat(samples, starts))
            counts[present] += chunk_counts
            valid[j] += int(chunk_counts.sum())
        grid[j] = np.where(counts > 0, grid[j], np.nan)
    return grid, valid


@numba.njit(nogil=True, cache=True)
def _grid_positions(ts: np.ndarray, first_bin: np.ndarray, offsets: np.ndarray, period_ns: int) -> np.ndarray:
    """Column of each sample in the side-by-side segment grids; `ts` is sorted, so one pass with a
    moving segment pointer replaces a binary search per sample."""
    positions = np.empty(ts.size, dtype=np.int64)
    segment = 0
    for i in range(ts.size):
        bin_ = ts[i] // period_ns
        while segment + 1 < first_bin.size and first_bin[segment + 1] <= bin_:
            segment += 1
        positions[i] = offsets[segment] + bin_ - first_bin[segment]
    return positions


def _runs(position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions as runs: the first sample of each run (plus the end) and its position."""
    starts = np.flatnonzero(np.r_[True, position[1:] != position[:-1]])
    return np.r_[starts, position.size], position[starts]


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _add_runs(
    bounds: np.ndarray, run_positions: np.ndarray, samples: np.ndarray, sums: np.ndarray, counts: np.ndarray
) -> int:
    """Add each run's non-NaN samples to the sum and count of its grid position; return how many
    there were. Reassociation lets the compiler vectorise each run's sum; NaN checks stay exact."""
    added = 0
    for r in range(run_positions.size):
        total, count = 0.0, 0
        for i in range(bounds[r], bounds[r + 1]):
            value = samples[i]
            if value == value:
                total += value
                count += 1
        sums[run_positions[r]] += total
        counts[run_positions[r]] += count
        added += count
    return added


def _resample_with_pandas(
    positions: list[np.ndarray], column_chunks: list[list[np.ndarray] | None], n_bins: int, how: str, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Median, first and last: pandas group-by over the concatenated samples."""
    position = np.concatenate(positions)
    grid = np.full((len(column_chunks), n_bins), np.nan)
    for j, chunks in enumerate(column_chunks):
        if chunks is None:
            continue
        samples = pd.Series(np.concatenate(chunks))
        valid[j] = samples.notna().sum()
        aggregated = samples.groupby(position, sort=True).agg(how)
        grid[j, aggregated.index.to_numpy()] = aggregated.to_numpy()
    return grid, valid


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
    observed = _grid_statistics(np.ascontiguousarray(grid, dtype=np.float64), breaks, *(stats[k] for k in STAT_ORDER))
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


def fill_gaps(values: np.ndarray, max_gap: int, before: int = 0, after: int = 0) -> tuple[np.ndarray, int]:
    """Linearly interpolate NaN runs of at most `max_gap` rows that have values on both sides.

    Args:
        values: Grid values, channel-major (channels, rows); the first `before` and last
            `after` rows are context from neighbouring partitions.
        max_gap: Longest run of missing rows to fill.
        before: Leading context rows (filled like the rest, never counted).
        after: Trailing context rows (filled like the rest, never counted).

    Returns:
        The filled array and the number of cells filled outside the context rows.
    """
    out = values.copy()
    missing = np.isnan(values)
    if max_gap == 0 or not missing.any():
        return out, 0
    # Every maximal NaN run of every channel at once: +1 where a run starts, -1 after it ends.
    edges = np.diff(np.pad(missing, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    lengths = ends - starts
    fillable = (lengths <= max_gap) & (starts > 0) & (ends < values.shape[1])
    rows, starts, ends, lengths = rows[fillable], starts[fillable], ends[fillable], lengths[fillable]
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cell_rows, cell_cols = np.repeat(rows, lengths), np.repeat(starts, lengths) + step
    left, right = values[rows, starts - 1], values[rows, ends]
    weight = (step + 1) / np.repeat(lengths + 1, lengths)
    out[cell_rows, cell_cols] = np.repeat(left, lengths) + weight * np.repeat(right - left, lengths)
    counted = (cell_cols >= before) & (cell_cols < values.shape[1] - after)
    return out, int(counted.sum())


def inspect_partitions(urls: list[str], timestamp_column: str) -> list[Partition]:
    """Read the footers of the partition files (or folders of them) in `urls`, sorted by time."""
    files: list[str] = []
    for url in urls:
        storage.require(url, "partition input")
        fs, path = storage.filesystem(url)
        files += storage.list_files(url, ".parquet") if fs.isdir(path) else [url]
    if not files:
        raise InputError(f"no partition file in {', '.join(urls)}")
    # Footer reads wait on I/O and release the GIL: read many at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        partitions = list(pool.map(functools.partial(_inspect, timestamp_column=timestamp_column), files))
    return sorted(partitions, key=lambda p: p.start_ns)


def _inspect(url: str, timestamp_column: str) -> Partition:
    fs, path = storage.arrow_filesystem(url)
    meta = pq.read_metadata(path, filesystem=fs)
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


def plan_batches(partitions: list[Partition], n_workers: int, max_rows: int = 1_000_000) -> list[list[int]]:
    """Group consecutive partitions into Dask tasks: about eight per worker, at most `max_rows` rows each."""
    target = min(max_rows, max(1, sum(p.rows for p in partitions) // (8 * max(n_workers, 1))))
    batches: list[list[int]] = [[]]
    rows = 0
    for i, partition in enumerate(partitions):
        if batches[-1] and rows + partition.rows > target:
            batches.append([])
            rows = 0
        batches[-1].append(i)
        rows += partition.rows
    return batches


def _read_batch(
    partitions: list[Partition], channels: list[str], timestamp_column: str
) -> tuple[list[np.ndarray], list[list[np.ndarray] | None]]:
    """Sample times (ns) and samples per channel (None if absent) of partitions, in sorted chunks.

    One pyarrow dataset scan reads all of them, decoding files and columns in parallel; the
    chunks are numpy views of Arrow's buffers where the data allows.
    """
    fs, _ = storage.arrow_filesystem(partitions[0].url)
    present = [c for c in channels if any(c in p.numeric for p in partitions)]
    schema = pa.schema([pa.field(timestamp_column, TIMESTAMP_TYPE)] + [pa.field(c, pa.float32()) for c in present])
    paths = [storage.arrow_filesystem(p.url)[1] for p in partitions]
    table = pads.dataset(paths, schema=schema, format="parquet", filesystem=fs).to_table()
    ts_chunks = [chunk.to_numpy().view("int64") for chunk in table.column(timestamp_column).chunks]
    column_chunks = [
        [chunk.to_numpy(zero_copy_only=False) for chunk in table.column(name).chunks] if name in present else None
        for name in channels
    ]
    non_empty = [t for t in ts_chunks if t.size]
    ordered = all(np.all(t[1:] >= t[:-1]) for t in non_empty) and all(
        a[-1] <= b[0] for a, b in itertools.pairwise(non_empty)
    )
    if not ordered:
        ts = np.concatenate(ts_chunks)
        order = np.argsort(ts, kind="stable")
        ts_chunks = [ts[order]]
        column_chunks = [None if c is None else [np.concatenate(c)[order]] for c in column_chunks]
    return ts_chunks, column_chunks


Piece = tuple[int, np.ndarray]  # (grid start in ns, values on the grid: channels x bins)


def _grid_batch(
    batch: list[tuple[Partition, int, int]], channels: list[str], period_ns: int, how: str, timestamp_column: str
) -> tuple[list[Piece], dict[str, np.ndarray]]:
    """Stage 1 task: read consecutive partitions and put each on its grid, with statistics."""
    partitions = [p for p, _, _ in batch]
    starts = np.array([start for _, start, _ in batch], dtype=np.int64)
    bins = np.array([n for _, _, n in batch], dtype=np.int64)
    ts, columns = _read_batch(partitions, channels, timestamp_column)
    grid, raw_valid = resample(ts, columns, starts, bins, period_ns, how)
    split = np.split(grid, np.cumsum(bins)[:-1], axis=1)
    pieces = [(int(start), piece) for start, piece in zip(starts, split, strict=True)]
    breaks = np.zeros(grid.shape[1], dtype=np.bool_)
    follows = starts[:-1] + bins[:-1] * period_ns == starts[1:]
    breaks[np.cumsum(bins)[:-1][~follows]] = True
    return pieces, grid_statistics(grid, sum(t.size for t in ts), raw_valid, breaks)


def _edge_pieces(pieces: list[Piece]) -> list[Piece]:
    """The first and last piece of a batch (one piece when the batch has one)."""
    return [pieces[0], pieces[-1]] if len(pieces) > 1 else pieces


def _adjacent(a: Piece, b: Piece, period_ns: int) -> bool:
    return a[0] + a[1].shape[1] * period_ns == b[0]


def _finish_batch(
    index: int,
    pieces: list[Piece],
    previous: list[Piece] | None,
    following: list[Piece] | None,
    keep: np.ndarray,
    period_ns: int,
    options: PreprocessOptions,
    columns: list[str],
    index_name: str,
    out_url: str,
) -> dict[str, int]:
    """Stage 2 task: fill short gaps (with neighbouring batches' edges), drop incomplete rows,
    sample, and write the batch's part file."""
    before = previous[-1] if previous and _adjacent(previous[-1], pieces[0], period_ns) else None
    after = following[0] if following and _adjacent(pieces[-1], following[0], period_ns) else None
    sequence = [p for p in (before, *pieces, after) if p is not None]
    runs: list[list[Piece]] = [[sequence[0]]]
    for piece in sequence[1:]:
        if _adjacent(runs[-1][-1], piece, period_ns):
            runs[-1].append(piece)
        else:
            runs.append([piece])
    times, blocks, n_filled = [], [], 0
    for run in runs:
        n_before = run[0][1].shape[1] if run[0] is before else 0
        n_after = run[-1][1].shape[1] if run[-1] is after else 0
        stacked = np.hstack([grid[keep] for _, grid in run])
        filled, count = fill_gaps(stacked, options.max_gap_periods, n_before, n_after)
        core = filled[:, n_before : filled.shape[1] - n_after]
        if core.shape[1]:
            first = run[1][0] if run[0] is before else run[0][0]
            times.append(first + period_ns * np.arange(core.shape[1]))
            blocks.append(core)
            n_filled += count
    values = np.hstack(blocks)
    complete = ~np.isnan(values).any(axis=0)
    rows = complete
    if options.sample_frac < 1.0:
        rng = np.random.default_rng([options.seed, index])
        rows = complete & (rng.random(complete.size) < options.sample_frac)
    counts = {
        "grid_rows": int(values.shape[1]),
        "filled_cells": n_filled,
        "dropped_incomplete_rows": int((~complete).sum()),
        "sampled_out_rows": int((complete & ~rows).sum()),
        "output_rows": int(rows.sum()),
    }
    index_values = pd.DatetimeIndex(np.concatenate(times)[rows], tz="UTC", name=index_name)
    frame = pd.DataFrame(values[:, rows].T.astype("float32"), index=index_values, columns=columns)
    storage.write_parquet(frame, storage.join(out_url, f"part-{index:05d}.parquet"))
    return counts


def quality_report(
    channels: list[str], stats: dict[str, np.ndarray], max_missing_share: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Turn merged statistics into a per-channel report and the mask of channels kept.

    Missing shares are of the raw samples and of the grid periods where any channel has data; the
    other figures describe the gridded
    series before gap filling (what the model sees), which keeps preprocessing to one pass over
    the raw samples.
    """
    report: dict[str, Any] = {}
    keep = np.zeros(len(channels), dtype=bool)
    for j, name in enumerate(channels):
        n = int(stats["n"][j])
        grid_missing = float(1 - n / max(stats["grid_bins"][j], 1))
        reason = None
        if stats["raw_valid"][j] == 0:
            reason = "no value at all"
        elif grid_missing > max_missing_share:
            reason = f"missing on {grid_missing:.0%} of the grid (> {max_missing_share:.0%})"
        keep[j] = reason is None
        report[name] = {
            "raw_missing_share": float(1 - stats["raw_valid"][j] / max(stats["raw_rows"][j], 1)),
            "grid_missing_share": grid_missing,
            "min": float(stats["min"][j]) if n else None,
            "max": float(stats["max"][j]) if n else None,
            "mean": float(stats["mean"][j]) if n else None,
            "std": float(np.sqrt(stats["m2"][j] / n)) if n else None,
            "flat_line_share": float(stats["flat"][j] / stats["pairs"][j]) if stats["pairs"][j] else None,
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
        out_url: Folder for the time-indexed parquet output (one file per batch of partitions).
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
    batches = plan_batches(partitions, len(client.scheduler_info()["workers"]))
    stage1 = [
        client.submit(
            _grid_batch,
            [(partitions[i], *grids[i]) for i in batch],
            channels,
            period_ns,
            options.aggregation,
            timestamp_column,
            pure=False,
        )
        for batch in batches
    ]
    batch_stats = _gather(client, [client.submit(itemgetter(1), f) for f in stage1], "grid", len(partitions), batches)
    stats = functools.reduce(merge_statistics, batch_stats)
    report, keep = quality_report(channels, stats, options.max_missing_share)
    if not keep.any():
        raise InputError(
            f"no usable channel in {partitions[0].url} and the other partitions: every channel is all NaN "
            f"or missing on more than {options.max_missing_share:.0%} of the grid"
        )
    pieces = [client.submit(itemgetter(0), f) for f in stage1]
    # Neighbouring batches lend only their edge partitions, as gap-filling context.
    edges = [client.submit(_edge_pieces, f) for f in pieces]
    kept = [c for c, k in zip(channels, keep, strict=True) if k]
    counts: dict[str, int] = {}
    with storage.atomic_directory(out_url) as out_dir:
        stage2 = [
            client.submit(
                _finish_batch,
                i,
                pieces[i],
                edges[i - 1] if i > 0 else None,
                edges[i + 1] if i + 1 < len(pieces) else None,
                keep,
                period_ns,
                options,
                kept,
                timestamp_column,
                out_dir,
                pure=False,
            )
            for i in range(len(batches))
        ]
        for part_counts in _gather(client, stage2, "fill and write", len(partitions), batches):
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


def _gather(client: Any, futures: list[Any], description: str, total: int, batches: list[list[int]]) -> Iterator[Any]:
    """Yield the batches' results as they complete, with a progress bar counting partitions."""
    from distributed import as_completed

    sizes = {future.key: len(batch) for future, batch in zip(futures, batches, strict=True)}
    with tqdm(total=total, desc=description, unit="partition") as bar:
        for future in as_completed(futures):
            yield future.result()
            bar.update(sizes[future.key])
