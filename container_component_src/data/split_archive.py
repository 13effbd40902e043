"""Split yearly archives into time partitions, streaming row groups (never a whole year)."""

from __future__ import annotations

import json
import re
from collections import OrderedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from container_component_src import storage
from container_component_src.data.partitions import PARTITION_METADATA_KEY, TIMESTAMP_TYPE, file_name, write_manifest
from container_component_src.data.spans import parse_span
from container_component_src.storage import InputError

# Partition files open at once. A time-ordered archive needs one or two; an archive out of order
# sends rows to partitions already closed, which go to a side file merged in at the end.
MAX_OPEN_WRITERS = 8


def list_archives(archives_url: str) -> list[str]:
    """Return the archive parquet files under `archives_url`, sorted.

    Raises:
        InputError: The folder is missing or holds no parquet file.
    """
    archives = storage.list_files(archives_url, ".parquet")
    if not archives:
        raise InputError(f"folder {archives_url} holds no .parquet archive")
    return archives


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
    try:
        converted = values.cast(TIMESTAMP_TYPE)
    except pa.ArrowInvalid:  # a coarser unit holds times that nanoseconds since 1970 cannot
        raise InputError(
            f"archive {url}: column '{column}' holds times outside 1677-09-21 to 2262-04-11, the range of "
            f"nanosecond timestamps (first {pc.min(values).as_py()}, last {pc.max(values).as_py()})"
        ) from None
    return table.set_column(index, pa.field(column, TIMESTAMP_TYPE), converted)


def run_split_archive(
    archive_url: str,
    out_url: str,
    timestamp_column: str = "normalizedTime",
    partition_period: str = "1D",
    batch_rows: int = 65_536,
    max_open_writers: int = MAX_OPEN_WRITERS,
) -> dict[str, int]:
    """Split one archive into one parquet file per `partition_period`, in `out_url`, streaming:
    memory holds a batch and at most `max_open_writers` partitions being written.

    Each partition records its time range in the schema metadata, so that preprocessing can
    put its rows on a regular grid without reading them first; a manifest beside them saves
    preprocessing a footer read per partition.

    Returns:
        Counts: rows and partitions written.

    Raises:
        InputError: The archive is missing, has no timestamp column, no rows or bad timestamps.
    """
    period_ns = parse_span(partition_period, "--partition-period")
    storage.require_file(archive_url, "archive")
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
            writers = PartitionWriters(out_dir, period_ns, timestamp_column, archive_url, max_open_writers)
            rows = 0
            try:
                batches = storage.iter_batches(source, batch_rows)
                with tqdm(total=source.metadata.num_rows, desc=f"split {path.rsplit('/', 1)[-1]}", unit="row") as bar:
                    for batch in batches:
                        table = _normalise_timestamps(batch, timestamp_column, archive_url)
                        _check_values(table, timestamp_column, archive_url, year)
                        rows += writers.write(table)
                        bar.update(table.num_rows)
                writers.finish()
            except (OSError, pa.ArrowInvalid) as exc:
                raise InputError(f"archive {archive_url} is corrupt: {exc}") from None
            finally:
                writers.abort()
            write_manifest(out_dir, timestamp_column, checksums=writers.checksums)
    return {"rows": rows, "partitions": writers.partitions}


class PartitionWriters:
    """The partition files of one archive, at most `max_open` of them open at once.

    Rows for a partition whose file was closed (an archive out of time order) go to a side file;
    `finish` merges each partition's side files into it, a partition at a time. Timestamps are
    checked to be unique per partition (partitions split time, so that is uniqueness over the
    archive), a partition at a time: memory holds the open partitions, not the year.
    """

    def __init__(self, out_dir: str, period_ns: int, timestamp_column: str, url: str, max_open: int) -> None:
        self.out_dir, self.period_ns, self.column, self.url = out_dir, period_ns, timestamp_column, url
        self.max_open = max(1, max_open)
        self.open: OrderedDict[int, tuple[_Writer, list[np.ndarray]]] = OrderedDict()
        self.closed: set[int] = set()
        self.side_files: dict[int, int] = {}
        # CRC-32C of each finished partition file, by file name: the manifest records them.
        self.checksums: dict[str, int] = {}

    @property
    def partitions(self) -> int:
        return len(self.closed) + len(self.open)

    def _name(self, pid: int) -> str:
        return storage.join(self.out_dir, f"part-{pd.Timestamp(pid * self.period_ns, tz='UTC'):%Y%m%dT%H%M%S}.parquet")

    def _schema(self, schema: pa.Schema, pid: int) -> pa.Schema:
        start = pd.Timestamp(pid * self.period_ns, tz="UTC")
        meta = {"start": start.isoformat(), "end": (start + pd.Timedelta(self.period_ns)).isoformat()}
        return schema.with_metadata({**(schema.metadata or {}), PARTITION_METADATA_KEY: json.dumps(meta).encode()})

    def _writer(self, name: str, schema: pa.Schema) -> _Writer:
        fs, path = storage.filesystem(name)
        return _Writer(name, schema, storage.ChecksummedFile(fs.open(path, "wb")))

    def write(self, table: pa.Table) -> int:
        """Write the rows of `table` to their partitions; return how many."""
        ts = table.column(self.column).to_numpy().astype("int64")
        ids = partition_ids(ts, self.period_ns)
        if np.any(ids[1:] < ids[:-1]):
            order = np.argsort(ids, kind="stable")
            table, ids, ts = table.take(order), ids[order], ts[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for lo, hi in zip(starts, [*starts[1:], ids.size], strict=True):
            pid, rows = int(ids[lo]), table.slice(lo, hi - lo)
            if pid in self.closed:
                self._side_file(pid, rows)
                continue
            if pid not in self.open:
                if len(self.open) >= self.max_open:
                    self._close(next(iter(self.open)))
                self.open[pid] = (self._writer(self._name(pid), self._schema(table.schema, pid)), [])
            self.open.move_to_end(pid)
            writer, seen = self.open[pid]
            writer.write(rows)
            seen.append(ts[lo:hi])
        return table.num_rows

    def _close(self, pid: int) -> None:
        writer, seen = self.open.pop(pid)
        self.checksums[writer.file_name] = writer.close()
        _check_unique(np.concatenate(seen), self.column, self.url)
        self.closed.add(pid)

    def _side_file(self, pid: int, rows: pa.Table) -> None:
        number = self.side_files.get(pid, 0)
        self.side_files[pid] = number + 1
        schema = self._schema(rows.schema, pid)
        writer = self._writer(f"{self._name(pid)}.side-{number}", schema)
        writer.write(rows)
        writer.close()

    def finish(self) -> None:
        """Close every partition, and merge each one's side files into it (one partition in memory)."""
        while self.open:
            self._close(next(iter(self.open)))
        for pid, count in self.side_files.items():
            name = self._name(pid)
            fs, path = storage.filesystem(name)
            pieces = [pq.read_table(p, filesystem=fs) for p in [path, *(f"{path}.side-{n}" for n in range(count))]]
            merged = pa.concat_tables(pieces, promote_options="none")
            merged = merged.sort_by(self.column)
            _check_unique(merged.column(self.column).to_numpy().astype("int64"), self.column, self.url)
            writer = self._writer(f"{name}.merged", pieces[0].schema)
            writer.write(merged)
            self.checksums[file_name(name)] = writer.close()
            fs.mv(f"{path}.merged", path)
            for n in range(count):
                fs.rm(f"{path}.side-{n}")

    def abort(self) -> None:
        """Close what is still open (after an error: the folder is discarded)."""
        for writer, _ in self.open.values():
            writer.close()
        self.open.clear()


class _Writer:
    """One partition file being written, and the CRC-32C of its bytes."""

    def __init__(self, url: str, schema: pa.Schema, sink: storage.ChecksummedFile) -> None:
        self.file_name, self._sink = file_name(url), sink
        self._parquet = pq.ParquetWriter(sink, schema, **storage.parquet_options(schema))

    def write(self, rows: pa.Table) -> None:
        self._parquet.write_table(rows.replace_schema_metadata(self._parquet.schema.metadata))

    def close(self) -> int:
        """Finish the file; return its CRC-32C."""
        self._parquet.close()
        self._sink.close()
        return self._sink.crc32c


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
