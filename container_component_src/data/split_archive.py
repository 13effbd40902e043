"""Split yearly archives into time partitions, streaming row groups (never a whole year)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from container_component_src import storage
from container_component_src.data.partitions import PARTITION_METADATA_KEY, write_manifest
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")


def list_archives(archives_url: str) -> list[str]:
    """Return the archive parquet files under `archives_url`, sorted.

    Raises:
        InputError: The folder is missing or holds no parquet file.
    """
    archives = storage.list_files(archives_url, ".parquet")
    if not archives:
        raise InputError(f"folder {archives_url} holds no .parquet archive")
    return archives


def parse_period(period: str, option: str) -> pd.Timedelta:
    """Parse a pandas period such as '1D' or '30s'; raise naming `option` when it is not one."""
    try:
        value = pd.Timedelta(period)
    except ValueError as exc:
        raise OptionError(f"{option}: {period!r} is not a period such as '1D' or '30s'") from exc
    if value <= pd.Timedelta(0):
        raise OptionError(f"{option}: {period!r} must be positive")
    return value


def partition_ids(timestamps_ns: np.ndarray, period_ns: int) -> np.ndarray:
    """Index of the partition (epoch-aligned period) holding each timestamp."""
    return np.floor_divide(timestamps_ns, period_ns)


def _normalise_timestamps(table: pa.Table, column: str, url: str) -> pa.Table:
    """Return `table` with `column` as non-null UTC nanosecond timestamps."""
    values = table.column(column)
    if not pa.types.is_timestamp(values.type):
        raise InputError(f"archive {url}: column '{column}' is {values.type}, expected a timestamp")
    if values.null_count:
        raise InputError(f"archive {url}: column '{column}' has {values.null_count} empty timestamps")
    if values.type.tz is None:
        values = pc.assume_timezone(values, "UTC")
    index = table.schema.get_field_index(column)
    return table.set_column(index, pa.field(column, TIMESTAMP_TYPE), values.cast(TIMESTAMP_TYPE))


def run_split_archive(
    archive_url: str,
    out_url: str,
    timestamp_column: str = "normalizedTime",
    partition_period: str = "1D",
    batch_rows: int = 65_536,
) -> dict[str, int]:
    """Split one archive into one parquet file per `partition_period`, in `out_url`.

    Each partition records its time range in the schema metadata, so that preprocessing can
    put its rows on a regular grid without reading them first; a manifest beside them saves
    preprocessing a footer read per partition.

    Returns:
        Counts: rows and partitions written.

    Raises:
        InputError: The archive is missing, has no timestamp column, no rows or bad timestamps.
    """
    period_ns = parse_period(partition_period, "--partition-period").value
    storage.require(archive_url, "archive")
    storage.remove_stale_temporaries(out_url)  # left by a split that was killed
    fs, path = storage.filesystem(archive_url)
    year = archive_year(path)
    with fs.open(path, "rb") as handle:
        try:
            source = pq.ParquetFile(handle, page_checksum_verification=True)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"archive {archive_url} is not readable parquet: {exc}") from None
        names = source.schema_arrow.names
        if timestamp_column not in names:
            raise InputError(
                f"archive {archive_url} has no timestamp column '{timestamp_column}' "
                f"(columns: {', '.join(names[:10])}{'...' if len(names) > 10 else ''})"
            )
        if source.metadata.num_rows == 0:
            raise InputError(f"archive {archive_url} holds no rows")
        with storage.atomic_directory(out_url) as out_dir:
            writers: dict[int, pq.ParquetWriter] = {}
            rows, seen = 0, []
            try:
                batches = source.iter_batches(batch_size=batch_rows)
                total = -(-source.metadata.num_rows // batch_rows)
                for batch in tqdm(batches, total=total, desc=f"split {path.rsplit('/', 1)[-1]}", unit="batch"):
                    table = _normalise_timestamps(pa.Table.from_batches([batch]), timestamp_column, archive_url)
                    _check_values(table, timestamp_column, archive_url, year)
                    seen.append(table.column(timestamp_column).to_numpy().astype("int64"))
                    rows += _write_partitions(table, timestamp_column, period_ns, out_dir, writers)
            except (OSError, pa.ArrowInvalid) as exc:
                raise InputError(f"archive {archive_url} is corrupt: {exc}") from None
            finally:
                for writer in writers.values():
                    writer.close()
            _check_unique(np.concatenate(seen), timestamp_column, archive_url)
            write_manifest(out_dir, timestamp_column)
    return {"rows": rows, "partitions": len(writers)}


def archive_year(path: str) -> int | None:
    """The year an archive's file name states (`eclss_2021.parquet`), if it states exactly one."""
    years = re.findall(r"(?<!\d)(19\d{2}|20\d{2}|21\d{2})(?!\d)", path.rsplit("/", 1)[-1])
    return int(years[0]) if len(years) == 1 else None


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_values(table: pa.Table, timestamp_column: str, url: str, year: int | None) -> None:
    """Refuse rows outside the archive's year and channel values that are infinite or beyond
    float32 (the grid's precision); NaN is a missing value and stays.

    Raises:
        InputError: Names the archive, the column, the value and its row's time.
    """
    times = table.column(timestamp_column)
    if year is not None:
        years = pc.year(times).to_numpy()
        outside = np.flatnonzero(years != year)
        if outside.size:
            at = times[int(outside[0])].as_py()
            raise InputError(f"archive {url} (year {year}) has a row at {at} ({outside.size} outside {year} here)")
    for field in table.schema:
        if field.name == timestamp_column or not pa.types.is_floating(field.type):
            continue
        values = table.column(field.name).to_numpy(zero_copy_only=False)
        extreme = np.flatnonzero(~np.isnan(values) & ~(np.abs(values) <= FLOAT32_MAX))
        if extreme.size:
            i = int(extreme[0])
            raise InputError(
                f"archive {url}: channel '{field.name}' is {float(values[i])} at {times[i].as_py()} "
                f"({extreme.size} such value(s) here): infinite or beyond float32"
            )


def _check_unique(timestamps_ns: np.ndarray, timestamp_column: str, url: str) -> None:
    ordered = np.sort(timestamps_ns)
    repeats = np.flatnonzero(ordered[1:] == ordered[:-1])
    if repeats.size:
        first = pd.Timestamp(int(ordered[repeats[0]]), tz="UTC")
        raise InputError(
            f"archive {url}: column '{timestamp_column}' has {repeats.size} repeated timestamp(s), first {first}: "
            "one row per time is expected"
        )


def _write_partitions(
    table: pa.Table,
    timestamp_column: str,
    period_ns: int,
    out_dir: str,
    writers: dict[int, pq.ParquetWriter],
) -> int:
    ts = table.column(timestamp_column).to_numpy().astype("int64")
    ids = partition_ids(ts, period_ns)
    if np.any(ids[1:] < ids[:-1]):
        order = np.argsort(ids, kind="stable")
        table, ids = table.take(order), ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    for lo, hi in zip(starts, [*starts[1:], ids.size], strict=True):
        pid = int(ids[lo])
        if pid not in writers:
            start = pd.Timestamp(pid * period_ns, tz="UTC")
            meta = {"start": start.isoformat(), "end": (start + pd.Timedelta(period_ns)).isoformat()}
            schema = table.schema.with_metadata(
                {**(table.schema.metadata or {}), PARTITION_METADATA_KEY: json.dumps(meta).encode()}
            )
            name = storage.join(out_dir, f"part-{start:%Y%m%dT%H%M%S}.parquet")
            fs, path = storage.filesystem(name)
            writers[pid] = pq.ParquetWriter(path, schema, filesystem=fs, **storage.parquet_options(schema))
        writers[pid].write_table(table.slice(lo, hi - lo).replace_schema_metadata(writers[pid].schema.metadata))
    return table.num_rows
