"""Preprocessing: partitions -> a regular time grid of numeric channels, plus a quality report.

Stage 1 (one task per batch of consecutive partitions, on threads of this process or on the
workers of a Dask cluster) reads the partitions and puts them
on the grid with the compiled kernels of `data.grid_kernels`, with per-channel statistics, and
writes the grid beside the output (memory never holds more than the batches being worked on). The
driver merges the statistics and drops channels that are mostly missing. Stage 2 reads a grid
back, fills short gaps (using the neighbouring batches' edges), drops the rows still incomplete,
optionally samples, and writes one sorted, time-indexed parquet file per batch.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from container_component_src import storage
from container_component_src.choices import Aggregation, choice
from container_component_src.data.grid_kernels import (
    fill_gaps,
    grid_statistics,
    merge_statistics,
    resample,
)
from container_component_src.data.partitions import (
    MANIFEST_NAME,
    TIMESTAMP_TYPE,
    Partition,
    inspect_partitions,
    iso_utc,
)
from container_component_src.data.spans import describe_span, parse_span
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

if TYPE_CHECKING:
    from container_component_src.cluster.dask import Tasks


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
    aggregation: Aggregation = Aggregation.mean
    max_gap_periods: int = 5
    max_missing_share: float = 0.5
    sample_frac: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        parse_span(self.resample_period, "--resample-period")
        choice(Aggregation, self.aggregation, "--aggregation")
        if self.max_gap_periods < 0:
            raise OptionError(f"--max-gap-periods must be >= 0, got {self.max_gap_periods}")
        if not 0.0 <= self.max_missing_share <= 1.0:
            raise OptionError(f"--max-missing-share must be in [0, 1], got {self.max_missing_share}")
        if not 0.0 < self.sample_frac <= 1.0:
            raise OptionError(f"--sample-frac must be in (0, 1], got {self.sample_frac}")


def plan_grid(partitions: list[Partition], period_ns: int) -> list[tuple[int, int]]:
    """Return (grid start, bin count) per partition: each partition's range, clipped to the data."""
    for p in partitions:
        if p.start_ns % period_ns or (p.end_ns - p.start_ns) % period_ns:
            raise OptionError(
                f"--resample-period {describe_span(period_ns)} does not divide the partitions "
                f"({describe_span(p.end_ns - p.start_ns)} from {iso_utc(p.start_ns)}): pick one that does"
            )
    first = min(p.ts_min_ns for p in partitions) // period_ns * period_ns
    last = max(p.ts_max_ns for p in partitions) // period_ns * period_ns + period_ns
    grids = []
    for p in partitions:
        lo, hi = max(p.start_ns, first), min(p.end_ns, last)
        grids.append((lo, max(0, (hi - lo) // period_ns)))
    return grids


# The grid of one partition at most: a task allocates it whole (channels x periods, float32).
MAX_PARTITION_GRID_BYTES = 2**30


def check_grid_size(grids: list[tuple[int, int]], channels: int, resample_period: str) -> None:
    """Refuse a grid period so short that one partition's grid would not fit in memory, before
    anything is allocated.

    Raises:
        OptionError: Names the option, the grid's rows and its size.
    """
    largest = max((bins for _, bins in grids), default=0)
    size = largest * channels * np.dtype(np.float32).itemsize
    if size > MAX_PARTITION_GRID_BYTES:
        raise OptionError(
            f"--resample-period {resample_period}: one partition would be {largest:,} grid rows x {channels} "
            f"channel(s), {size / 2**30:,.1f} GiB: give a longer period (or shorter partitions, "
            "split-archive's --partition-period)"
        )


# Grid cells (channels x periods) of a task at most: a task holds a few float32 copies of its grid
# (stage 2: the grid with its context, the rows kept, the Arrow table) and one partition's raw
# samples at a time, so this bounds a task's memory whatever the archive: 32 MiB a copy.
BATCH_GRID_CELLS = 2**23
# ... and at least 1 MiB of grid, when there is that much: a task's fixed costs (its files, its
# scheduling) stay small against its work on small data.
MIN_BATCH_GRID_CELLS = 2**18


def plan_batches(
    grids: list[tuple[int, int]], channels: int, threads: int, max_cells: int = BATCH_GRID_CELLS
) -> list[list[int]]:
    """Group consecutive partitions into tasks: about eight per thread (so that threads finish
    together), each of `MIN_BATCH_GRID_CELLS` to `max_cells` grid cells (a partition larger than
    that is a task of its own). Fewer, larger tasks also mean fewer output files."""
    cells = [bins * channels for _, bins in grids]
    target = min(max_cells, max(MIN_BATCH_GRID_CELLS, sum(cells) // (8 * max(threads, 1))))
    batches: list[list[int]] = [[]]
    size = 0
    for i, n in enumerate(cells):
        if batches[-1] and size + n > target:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += n
    return batches


def _read_partition(
    partition: Partition, fs: pafs.FileSystem, channels: list[str], timestamp_column: str
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Sample times (ns), samples (the channels it has x times; nulls are NaN) and which of
    `channels` those are, of one partition file.

    Decoded on the calling thread only: the tasks are the parallelism, and one small file stays
    in cache from decoding to gridding. A file whose CRC-32C the manifest recorded is read whole
    and checked against it (one pass at ~12 GB/s; verifying every page's CRC-32 while decoding
    cost a third of the decoding); any other file has its page checksums verified.

    Raises:
        InputError: The file is unreadable, does not match its recorded CRC-32C, or has empty
            timestamps.
    """
    rows = [j for j, c in enumerate(channels) if c in partition.numeric]
    present = [channels[j] for j in rows]
    try:
        if partition.crc32c is None:
            source = pq.ParquetFile(
                fs.open_input_file(partition.path), pre_buffer=True, page_checksum_verification=True
            )
        else:
            with fs.open_input_file(partition.path) as handle:
                data = handle.read_buffer()
            if storage.crc32c(data) != partition.crc32c:
                raise InputError(
                    f"partition {partition.url} does not match the CRC-32C split-archive recorded for it in "
                    f"{MANIFEST_NAME}: it is corrupted or was changed since; split its archive again"
                )
            source = pq.ParquetFile(pa.BufferReader(data))
        # One buffer per column (a column has a chunk per row group): one call for them all.
        table = source.read([timestamp_column, *present], use_threads=False).combine_chunks()
        times = table.column(timestamp_column)
        if times.type != TIMESTAMP_TYPE:
            times = times.cast(TIMESTAMP_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise InputError(f"partition {partition.url} is not readable: {exc}") from exc
    if times.null_count:
        missing = times.null_count
        raise InputError(f"partition {partition.url}: column '{timestamp_column}' has {missing} empty timestamps")
    return _times_ns(times), _samples(table.select(present)), rows


def _times_ns(times: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column without nulls as int64 ns, a view of Arrow's buffer when it has one
    chunk (pyarrow's own `to_numpy` imports pandas, a quarter of a second in every process)."""
    array = times.chunk(0) if times.num_chunks == 1 else times.combine_chunks()
    if len(array) == 0:
        return np.empty(0, np.int64)
    return np.frombuffer(array.buffers()[1], np.int64, count=len(array), offset=array.offset * 8)


def _samples(table: pa.Table) -> np.ndarray:
    """The numeric columns of a table (one chunk each) as one channels x rows array, nulls as NaN:
    one call into Arrow instead of one conversion per column."""
    if table.num_columns == 0 or table.num_rows == 0:
        return np.empty((table.num_columns, table.num_rows))
    tensor = table.to_batches()[0].to_tensor(null_to_nan=True, row_major=False)
    return np.asarray(tensor).T


Piece = tuple[int, np.ndarray]  # (grid start in ns, values on the grid: channels x bins)


@dataclass(frozen=True)
class GriddedBatch:
    """Stage 1 output: consecutive partitions on their grids, side by side.

    Attributes:
        starts_ns: Grid start of each partition.
        bins: Grid periods of each partition.
        values: Channels x bins.sum(), float32.
    """

    starts_ns: np.ndarray
    bins: np.ndarray
    values: np.ndarray

    def times(self, period_ns: int) -> np.ndarray:
        """Time (ns) of every grid column."""
        offsets = np.repeat(self.starts_ns - np.r_[0, np.cumsum(self.bins)[:-1]] * period_ns, self.bins)
        return offsets + period_ns * np.arange(self.values.shape[1])

    def breaks(self, period_ns: int) -> np.ndarray:
        """True at a column that does not follow the previous one in time."""
        breaks = np.zeros(self.values.shape[1], dtype=np.bool_)
        follows = self.starts_ns[:-1] + self.bins[:-1] * period_ns == self.starts_ns[1:]
        breaks[np.cumsum(self.bins)[:-1][~follows]] = True
        return breaks

    def edges(self, period_ns: int, bins: int) -> tuple[Piece, Piece]:
        """The first and the last `bins` columns, each within its partition, as gap-filling context
        for the neighbouring batches: a gap longer than `bins - 1` is never filled, so no fill
        needs more."""
        first, last = min(bins, int(self.bins[0])), min(bins, int(self.bins[-1]))
        end_ns = int(self.starts_ns[-1] + self.bins[-1] * period_ns)
        return (
            (int(self.starts_ns[0]), self.values[:, :first].copy()),
            (end_ns - last * period_ns, self.values[:, self.values.shape[1] - last :].copy()),
        )


def _grid_batch(
    batch: list[tuple[Partition, int, int]],
    channels: list[str],
    period_ns: int,
    how: str,
    timestamp_column: str,
    grid_url: str,
    context_bins: int,
) -> tuple[tuple[Piece, Piece], dict[str, np.ndarray]]:
    """Stage 1 task: read consecutive partitions one by one and put each on its grid, with
    statistics; write the grid to `grid_url` (what stage 2 reads) and return its edge partitions
    (the neighbours' gap-filling context) and the statistics. Nothing row-sized stays in memory
    between the stages: a worker holds the batches it is working on, whatever the rows."""
    gridded = GriddedBatch(
        starts_ns=np.array([start for _, start, _ in batch], dtype=np.int64),
        bins=np.array([n for _, _, n in batch], dtype=np.int64),
        values=np.full((len(channels), sum(n for _, _, n in batch)), np.nan, dtype=np.float32),
    )
    fs, _ = storage.arrow_filesystem(batch[0][0].url, memory_map=False)
    raw_rows, raw_valid, offset = 0, np.zeros(len(channels), dtype=np.int64), 0
    work = np.empty(len(channels) * max(partition.rows for partition, _, _ in batch))
    for partition, start, n in batch:
        ts, samples, rows = _read_partition(partition, fs, channels, timestamp_column)
        try:
            grid = gridded.values[:, offset : offset + n]
            _, valid = resample(ts, samples, start, n, period_ns, how, out=grid, rows=rows, work=work)
        except ValueError as exc:
            raise InputError(f"partition {partition.url}: {exc}") from exc
        raw_rows += ts.size
        raw_valid += valid
        offset += n
    stats = grid_statistics(gridded.values, raw_rows, raw_valid, gridded.breaks(period_ns))
    with storage.atomic_write(grid_url) as handle:
        np.save(handle, gridded.values)  # its times are the plan's: the driver passes them on
    return gridded.edges(period_ns, context_bins), stats


def _add_boundary_pairs(stats: dict[str, np.ndarray], edges: list[tuple[Piece, Piece]], period_ns: int) -> None:
    """Count the pairs of neighbouring values that straddle two batches (each batch counts only
    its own), so that the flat-line share does not depend on how the partitions were batched."""
    for (_, (last_start, last)), ((first_start, first), _) in itertools.pairwise(edges):
        if last.shape[1] and first.shape[1] and last_start + last.shape[1] * period_ns == first_start:
            before, after = last[:, -1], first[:, 0]
            both = ~np.isnan(before) & ~np.isnan(after)
            stats["pairs"] = stats["pairs"] + both
            stats["flat"] = stats["flat"] + (both & (before == after))


def _load_grid(grid_url: str) -> np.ndarray:
    """Read the values of a grid that stage 1 wrote, and remove it.

    Raises:
        InputError: It is not there: the worker that wrote it has a filesystem of its own.
    """
    fs, path = storage.filesystem(grid_url)
    if not fs.exists(path):
        raise InputError(
            f"the Dask worker that gridded {grid_url} wrote it where this worker cannot read: workers in other "
            "pods cannot share this pod's folders; give --scratch, an object-storage folder"
        )
    with fs.open(path, "rb") as handle:
        values = np.load(handle)
    fs.rm(path)
    return values


def _finish_batch(
    index: int,
    grid: tuple[list[int], list[int], str],
    previous: tuple[Piece, Piece] | None,
    following: tuple[Piece, Piece] | None,
    keep: np.ndarray,
    period_ns: int,
    options: PreprocessOptions,
    columns: list[str],
    index_name: str,
    out_url: str,
) -> dict[str, int]:
    """Stage 2 task: read the batch's grid (`grid`: its partitions' grid starts and bins, and the
    file stage 1 wrote), fill short gaps (with the neighbouring batches' edges as context), drop
    incomplete rows, sample, and write the batch's part file."""
    starts_ns, bins, grid_url = grid
    batch = GriddedBatch(np.array(starts_ns, dtype=np.int64), np.array(bins, dtype=np.int64), _load_grid(grid_url))
    # A neighbour's edge partition is context only when it touches this batch in time.
    last_before = previous[1] if previous else None
    first_after = following[0] if following else None
    end_ns = int(batch.starts_ns[-1] + batch.bins[-1] * period_ns)
    touches = last_before is not None and last_before[0] + last_before[1].shape[1] * period_ns == batch.starts_ns[0]
    before = last_before[1] if touches else None
    after = first_after[1] if first_after is not None and first_after[0] == end_ns else None
    n_before = 0 if before is None else before.shape[1]
    n_after = 0 if after is None else after.shape[1]
    values = np.concatenate([part[keep] for part in (before, batch.values, after) if part is not None], axis=1)
    breaks = np.concatenate([np.zeros(n_before, np.bool_), batch.breaks(period_ns), np.zeros(n_after, np.bool_)])
    n_filled = fill_gaps(values, options.max_gap_periods, breaks, n_before, n_after)
    core = values[:, n_before : values.shape[1] - n_after]
    complete = ~np.isnan(core).any(axis=0)
    rows = complete
    if options.sample_frac < 1.0:
        rng = np.random.default_rng([options.seed, index])
        rows = complete & (rng.random(complete.size) < options.sample_frac)
    counts = {
        "grid_rows": int(core.shape[1]),
        "filled_cells": n_filled,
        "dropped_incomplete_rows": int((~complete).sum()),
        "sampled_out_rows": int((complete & ~rows).sum()),
        "output_rows": int(rows.sum()),
    }
    if counts["output_rows"] < core.shape[1]:
        core = core[:, rows]
    table = time_indexed_table(batch.times(period_ns)[rows], core, columns, index_name)
    storage.write_table(table, storage.join(out_url, f"part-{index:05d}.parquet"))
    return counts


def time_indexed_table(times_ns: np.ndarray, values: np.ndarray, columns: list[str], index_name: str) -> pa.Table:
    """Channel-major values and their UTC times as a table that pandas reads back time-indexed,
    built column by column without a row-major copy."""
    schema = _time_indexed_schema(tuple(columns), index_name, values.dtype.str)
    columns_and_time = zip([*values, times_ns.astype(np.int64, copy=False)], schema, strict=True)
    arrays = [_wrap(column, field.type) for column, field in columns_and_time]
    return pa.Table.from_arrays(arrays, schema=schema)


def _wrap(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A numpy vector as an Arrow array of `kind` sharing its memory (`pa.array` would first check
    whether it is a pandas Series, importing pandas)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(kind, values.size, [None, pa.py_buffer(values)])


@functools.cache
def _time_indexed_schema(columns: tuple[str, ...], index_name: str, dtype: str) -> pa.Schema:
    """The schema, pandas metadata included, of a frame of `columns` indexed by UTC times: what
    `pa.Schema.from_pandas` writes, built without importing pandas (a quarter of a second)."""
    kind = np.dtype(dtype).name
    fields = [{"name": c, "field_name": c, "pandas_type": kind, "numpy_type": kind, "metadata": None} for c in columns]
    index = {
        "name": index_name,
        "field_name": index_name,
        "pandas_type": "datetimetz",
        "numpy_type": "datetime64[ns]",
        "metadata": {"timezone": "UTC"},
    }
    pandas = {
        "index_columns": [index_name],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [*fields, index],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": version("pandas"),
    }
    schema = pa.schema(
        [*(pa.field(c, pa.from_numpy_dtype(np.dtype(dtype))) for c in columns), (index_name, TIMESTAMP_TYPE)]
    )
    return schema.with_metadata({b"pandas": json.dumps(pandas).encode()})


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
    tasks: Tasks,
    options: PreprocessOptions,
    timestamp_column: str = "normalizedTime",
    scratch_url: str = "",
) -> dict[str, Any]:
    """Put partitioned telemetry on a regular grid with Dask and write it with its quality report.

    Args:
        partition_urls: Partition files, or folders of them (outputs of split-archive).
        out_url: Folder for the time-indexed parquet output (one file per batch of partitions).
        quality_report_url: JSON file for the data-quality report.
        tasks: Where the tasks run (`cluster.dask.step_tasks`).
        options: Grid, gap and sampling options.
        timestamp_column: Name of the timestamp column (and of the output index).
        scratch_url: Empty, or an object-storage folder unique to the run where the workers write
            the parts, then copied into `out_url` and removed: workers in other pods cannot
            write into this pod's folder.

    Returns:
        The quality report.

    Raises:
        InputError: No partition, no numeric channel, or no usable channel.
    """
    options.validate()
    if not scratch_url:
        return _preprocess(partition_urls, out_url, quality_report_url, tasks, options, timestamp_column)
    try:
        summary = _preprocess(partition_urls, scratch_url, quality_report_url, tasks, options, timestamp_column)
        storage.copy_directory(scratch_url, out_url)
        return summary
    finally:
        storage.remove_directory(scratch_url)


def _preprocess(
    partition_urls: list[str],
    out_url: str,
    quality_report_url: str,
    tasks: Tasks,
    options: PreprocessOptions,
    timestamp_column: str,
) -> dict[str, Any]:
    period_ns = parse_span(options.resample_period, "--resample-period")
    threads = tasks.threads
    partitions = inspect_partitions(partition_urls, timestamp_column, threads)
    channels = list(dict.fromkeys(c for p in partitions for c in p.numeric))
    non_numeric = sorted({c for p in partitions for c in p.other})
    if not channels:
        raise InputError(
            f"no numeric channel in {partitions[0].url} and the other partitions "
            f"(non-numeric columns: {', '.join(non_numeric) or 'none'})"
        )
    grids = plan_grid(partitions, period_ns)
    check_grid_size(grids, len(channels), options.resample_period)
    batches = plan_batches(grids, len(channels), threads)
    counts: dict[str, int] = {}
    storage.remove_stale_temporaries(out_url)  # left by a preprocess that was killed
    with storage.atomic_directory(out_url) as out_dir:
        grid_urls = [storage.join(out_dir, f"_grid-{i:05d}.npy") for i in range(len(batches))]
        stage1 = [
            tasks.executor.submit(
                _grid_batch,
                [(partitions[i], *grids[i]) for i in batch],
                channels,
                period_ns,
                options.aggregation,
                timestamp_column,
                grid_urls[number],
                options.max_gap_periods + 1,
            )
            for number, batch in enumerate(batches)
        ]
        # Edges and statistics are small: a partition per edge, a few numbers per channel.
        results = tasks.gather(stage1, "grid", "partition", [len(b) for b in batches])
        edges = [e for e, _ in results]
        stats = functools.reduce(merge_statistics, [s for _, s in results])
        _add_boundary_pairs(stats, edges, period_ns)
        report, keep = quality_report(channels, stats, options.max_missing_share)
        if not keep.any():
            raise InputError(
                f"no usable channel in {partitions[0].url} and the other partitions: every channel is all NaN "
                f"or missing on more than {options.max_missing_share:.0%} of the grid"
            )
        kept = [c for c, k in zip(channels, keep, strict=True) if k]
        stage2 = [
            tasks.executor.submit(
                _finish_batch,
                i,
                ([grids[j][0] for j in batches[i]], [grids[j][1] for j in batches[i]], grid_urls[i]),
                edges[i - 1] if i > 0 else None,
                edges[i + 1] if i + 1 < len(batches) else None,
                keep,
                period_ns,
                options,
                kept,
                timestamp_column,
                out_dir,
            )
            for i in range(len(batches))
        ]
        for part_counts in tasks.gather(stage2, "fill and write", "partition", [len(b) for b in batches]):
            for key, value in part_counts.items():
                counts[key] = counts.get(key, 0) + value
        _check_parts_visible(out_dir, len(batches))
        # Inside the swap: an output without a row must not replace the previous good one.
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


def _check_parts_visible(out_url: str, count: int) -> None:
    """Refuse to finish when the parts the workers wrote are not all here: workers in pods of their
    own write into their own filesystems, which this process never sees.

    Raises:
        InputError: Names the folder and what to give instead.
    """
    seen = len(storage.list_files(out_url, ".parquet")) if storage.exists(out_url) else 0
    if seen != count:
        raise InputError(
            f"the Dask workers wrote {count} part(s) that this process finds {seen} of in {out_url}: workers in "
            "other pods cannot write into this pod's folders; give --scratch, an object-storage folder"
        )
