"""Partitioned datasets: how the table steps hand rows to each other.

A dataset is a folder of time-ordered parquet parts (`part-00000.parquet`, ...) with a small
manifest (`_dataset.json`) of each part's rows and time range. A step streams it batch by batch
in time order (memory: one batch, whatever the rows), or hands its parts to Dask tasks that each
write the same part of the output (`map_parts`). A single parquet file, or a folder of parts
without a manifest (what preprocess and older runs write), reads as a dataset too: its parts are
then its files in name order.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from container_component_src import storage
from container_component_src.storage import InputError

if TYPE_CHECKING:
    from container_component_src.cluster.dask import Tasks

MANIFEST_NAME = "_dataset.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Part:
    """One part of a dataset.

    Attributes:
        url: The parquet file.
        rows: Rows in it.
        start: Its first row's time (ISO 8601), or None for a part without rows or time index.
        end: Its last row's time, or None.
    """

    url: str
    rows: int
    start: str | None = None
    end: str | None = None


def parts(url: str) -> list[Part]:
    """The parts of the dataset at `url` (a parquet file or a folder), in time order.

    Raises:
        InputError: `url` is missing, holds no parquet file, or a file is not readable parquet.
    """
    storage.require(url, "parquet input")
    fs, path = storage.filesystem(url)
    if not fs.isdir(path):
        return [_footer_part(url)]
    manifest_url = storage.join(url, MANIFEST_NAME)
    files = storage.list_files(url, ".parquet")
    if storage.exists(manifest_url):
        manifest = storage.read_json(manifest_url)
        listed = [
            Part(url=storage.join(url, p["file"]), rows=p["rows"], start=p["start"], end=p["end"])
            for p in manifest["parts"]
        ]
        # The files are the truth: a manifest that does not name exactly them is not used.
        if sorted(p.url for p in listed) == sorted(files):
            return listed
    if not files:
        raise InputError(f"folder {url} holds no .parquet file")
    return [_footer_part(file) for file in files]


def _footer_part(url: str) -> Part:
    fs, path = storage.filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{url} is not readable parquet: {exc}") from None
    return Part(url=url, rows=rows)


def count_rows(url: str) -> int:
    """Rows in the dataset at `url`."""
    return sum(p.rows for p in parts(url))


def schema(url: str) -> pa.Schema:
    """The arrow schema of the dataset's first part (all parts share it)."""
    first = parts(url)[0].url
    fs, path = storage.filesystem(first)
    try:
        with fs.open(path, "rb") as handle:
            return pq.ParquetFile(handle).schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{first} is not readable parquet: {exc}") from None


def iter_frames(
    url: str,
    columns: list[str] | None = None,
    batch_rows: int = storage.ROW_GROUP_ROWS,
    dataset_parts: list[Part] | None = None,
) -> Iterator[pd.DataFrame]:
    """The rows of the dataset at `url` as frames of at most `batch_rows` rows, in time order, with
    their index; one empty frame (with the columns) when it holds no row.

    Args:
        columns: The columns to read (the index always comes along); all when None.
        dataset_parts: The parts, when the caller has listed them already.

    Raises:
        InputError: A part is not readable parquet, or lacks a requested column.
    """
    yielded = False
    for part in dataset_parts if dataset_parts is not None else parts(url):
        for frame in iter_part(part.url, columns, batch_rows):
            if len(frame) or not yielded:
                yielded = True
                yield frame


def iter_part(
    url: str, columns: list[str] | None = None, batch_rows: int = storage.ROW_GROUP_ROWS
) -> Iterator[pd.DataFrame]:
    """The rows of one parquet file as frames of at most `batch_rows` rows (one empty frame when
    it has none), with their index; see `iter_part_tables`."""
    for table in iter_part_tables(url, columns, batch_rows):
        yield table.to_pandas()


def iter_part_tables(
    url: str, columns: list[str] | None = None, batch_rows: int = storage.ROW_GROUP_ROWS
) -> Iterator[pa.Table]:
    """The rows of one parquet file as Arrow tables of at most `batch_rows` rows (one empty table
    when it has none), with the columns of their pandas index; reads a row group at a time and
    verifies page checksums."""
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        try:
            source = pq.ParquetFile(handle, page_checksum_verification=True)
            wanted = None if columns is None else _with_index(source.schema_arrow, columns, url)
            empty = True
            for batch in storage.iter_batches(source, batch_rows, wanted):
                empty = False
                yield batch
            if empty:
                yield source.schema_arrow.empty_table().select(wanted or source.schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{url} is not readable parquet: {exc}") from None


def _with_index(schema: pa.Schema, columns: list[str], url: str) -> list[str]:
    """`columns` plus the columns that hold the pandas index, so frames come back indexed."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputError(f"{url} lacks column(s) {', '.join(missing)}")
    return [*columns, *(c for c in _index_columns(schema) if c not in columns)]


def data_columns(schema: pa.Schema) -> list[str]:
    """The columns of a dataset's schema that are not its pandas index."""
    index = set(_index_columns(schema))
    return [name for name in schema.names if name not in index]


def _index_columns(schema: pa.Schema) -> list[str]:
    pandas_meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
    return [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]


def time_index_ns(frame: pd.DataFrame, url: str) -> np.ndarray:
    """The frame's time index as int64 UTC nanoseconds.

    Raises:
        InputError: The frame is not indexed by time; names `url`.
    """
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise InputError(f"{url} is not indexed by time (preprocess writes a time index)")
    index = frame.index if frame.index.tz is not None else frame.index.tz_localize("UTC")
    return index.as_unit("ns").asi8


class PartWriter:
    """One part of a dataset, written a batch at a time in time order (it sits in a folder being
    written: `map_parts` makes the whole atomic).

    Args:
        url: The part's file.
        after_ns: The time its rows must not precede (the previous part's last row).
    """

    def __init__(self, url: str, after_ns: int | None = None) -> None:
        self.url = url
        self.rows = 0
        self.schema: pa.Schema | None = None
        self.last_ns = after_ns
        self._writer: pq.ParquetWriter | None = None
        self._start: str | None = None
        self._end: str | None = None

    def write(self, data: pd.DataFrame | pa.Table) -> None:
        """Append rows (a time-indexed frame, or a table of one).

        Raises:
            InputError: The rows precede those written, or their columns differ.
        """
        table = pa.Table.from_pandas(data, preserve_index=True) if isinstance(data, pd.DataFrame) else data
        if self.schema is None:
            self.schema = table.schema
            fs, path = storage.arrow_filesystem(self.url)
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # a worker may be first in its folder
            self._writer = pq.ParquetWriter(path, self.schema, filesystem=fs, **storage.parquet_options(self.schema))
        elif not table.schema.equals(self.schema, check_metadata=False):
            raise InputError(f"rows written to {self.url} change columns: {table.schema} after {self.schema}")
        times = times_ns(table)
        if times is not None and times.size:
            if (self.last_ns is not None and times[0] < self.last_ns) or np.any(times[1:] < times[:-1]):
                raise InputError(f"rows written to {self.url} are not in time order")
            self.last_ns = int(times[-1])
            self._start = self._start or pd.Timestamp(int(times[0]), tz="UTC").isoformat()
            self._end = pd.Timestamp(int(times[-1]), tz="UTC").isoformat()
        assert self._writer is not None
        if table.num_rows:
            self._writer.write_table(
                table.replace_schema_metadata(self.schema.metadata), row_group_size=storage.ROW_GROUP_ROWS
            )
        self.rows += table.num_rows

    def close(self) -> Part:
        """Finish the file; return what the manifest says of it (its name within the folder).

        Raises:
            InputError: Nothing, not even an empty frame, was written (its columns are unknown).
        """
        if self._writer is None:
            raise InputError(f"nothing was written to {self.url}")
        self._writer.close()
        self._writer = None
        return Part(url=self.url.rstrip("/").rsplit("/", 1)[-1], rows=self.rows, start=self._start, end=self._end)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@contextlib.contextmanager
def _output_folder(url: str) -> Iterator[str]:
    """A folder to fill that replaces `url` only complete (locally; see `storage.atomic_directory`)."""
    storage.remove_stale_temporaries(url)  # left by a step that was killed
    if not storage.is_local(url):
        # Object storage has no folder to swap in: parts of an earlier output must not linger.
        storage.remove_directory(url)
    with storage.atomic_directory(url) as folder:
        yield folder


def write_manifest(folder: str, written: list[Part]) -> None:
    """Write the manifest of the parts `written` (in time order) into the dataset folder `folder`."""
    manifest = {
        "version": MANIFEST_VERSION,
        "rows": sum(p.rows for p in written),
        "parts": [{"file": p.url, "rows": p.rows, "start": p.start, "end": p.end} for p in written],
    }
    storage.write_json(manifest, storage.join(folder, MANIFEST_NAME))


def map_parts(
    tasks: Tasks,
    source_url: str,
    target_urls: list[str],
    task: Callable[..., tuple[list[Part], Any]],
    args: tuple[Any, ...] = (),
    scratch_url: str = "",
    description: str = "",
) -> list[Any]:
    """Write datasets part by part from the parts of another: one task per source part, on threads
    of this process or on the workers of a Dask cluster.

    `task(source_part_url, [target part url, ...], *args)` writes part i of every target from
    part i of the source (with `PartWriter`s) and returns the targets' `Part`s and anything else;
    the targets get their manifests here, and appear only complete locally.

    Args:
        tasks: Where the tasks run (`cluster.dask.step_tasks`).
        args: Passed to every task (sent to each Dask worker once).
        scratch_url: Empty, or an object-storage folder unique to the run where the workers write,
            then copied into the targets and removed: workers in other pods cannot write into
            this pod's folders.

    Returns:
        What each task returned besides its parts, in the source's part order.

    Raises:
        InputError: The workers wrote where this process cannot see (no `scratch_url`).
    """
    listed = parts(source_url)
    with contextlib.ExitStack() as stack:
        if scratch_url:
            folders = [storage.join(scratch_url, f"target-{number}") for number in range(len(target_urls))]
            stack.callback(storage.remove_directory, scratch_url)
            storage.remove_directory(scratch_url)
        else:
            folders = [stack.enter_context(_output_folder(url)) for url in target_urls]
        shared = tasks.share(args)
        futures = [
            tasks.executor.submit(task, part.url, [storage.join(f, f"part-{i:05d}.parquet") for f in folders], *shared)
            for i, part in enumerate(listed)
        ]
        results = tasks.gather(futures, description or "parts", "row", [p.rows for p in listed])
        for number, folder in enumerate(folders):
            written = [result[0][number] for result in results]
            seen = len(storage.list_files(folder, ".parquet")) if storage.exists(folder) else 0
            if seen != len(written):
                raise InputError(
                    f"the Dask workers wrote {len(written)} part(s) that this process finds {seen} of in {folder}: "
                    "workers in other pods cannot write into this pod's folders; give --scratch, an object-storage "
                    "folder"
                )
            write_manifest(folder, written)
        if scratch_url:
            for folder, url in zip(folders, target_urls, strict=True):
                storage.copy_directory(folder, url)
    return [result[1] for result in results]


def times_ns(table: pa.Table) -> np.ndarray | None:
    """The table's pandas time index as int64 nanoseconds, or None when it has none."""
    index = _index_columns(table.schema)
    if len(index) != 1 or not pa.types.is_timestamp(table.schema.field(index[0]).type):
        return None
    column = table.column(index[0])
    return column.cast(pa.timestamp("ns", tz=column.type.tz)).to_numpy().view("int64")
