"""What each partition file holds: read from its footer, or from the manifest split-archive
writes beside the partitions (one small file instead of a footer read per partition).

The footers stay the source of truth: a manifest is used only when it describes exactly the
parquet files in its folder, byte sizes included, for the same timestamp column.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from container_component_src import storage
from container_component_src.storage import InputError

PARTITION_METADATA_KEY = b"eclss.partition"
# What every partition's (and the grid's) time column is.
TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")
MANIFEST_NAME = "_partitions.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Partition:
    """What the footer of one partition file says.

    Attributes:
        url: The file.
        path: The file within its filesystem.
        start_ns: Start of the partition's time range (from split-archive's schema metadata).
        end_ns: End (exclusive) of that range.
        rows: Rows in the file.
        numeric: Numeric columns other than the timestamp.
        other: Non-numeric columns.
        ts_min_ns: Earliest timestamp (the range start when the footer has no statistics).
        ts_max_ns: Latest timestamp (the range end when the footer has no statistics).
        crc32c: CRC-32C of the whole file, as split-archive wrote it (from the manifest; None when
            described by its footer): readers check it instead of every page's checksum.
    """

    url: str
    path: str
    start_ns: int
    end_ns: int
    rows: int
    numeric: tuple[str, ...]
    other: tuple[str, ...]
    ts_min_ns: int
    ts_max_ns: int
    crc32c: int | None = None


_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What `pandas.Timestamp.isoformat` writes (split-archive's range), to the nanosecond.
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?")


def _iso_ns(text: str) -> int:
    """An ISO 8601 time (no zone: UTC) as ns since the epoch, exactly (datetime stops at µs)."""
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 time")
    zone = match[3] if match[3] not in (None, "Z") else "+00:00"
    seconds = (datetime.fromisoformat(match[1] + zone) - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((match[2] or "").ljust(9, "0"))


def iso_utc(ns: int) -> str:
    """Ns since the epoch as an ISO 8601 UTC time, to the nanosecond when it has them."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction:09d}".rstrip("0").rstrip(".") + "+00:00" if fraction else f"{text}+00:00"


def partition_range(metadata: dict[bytes, bytes] | None, url: str) -> tuple[int, int]:
    """Read the [start, end) time range (ns since the epoch) that split-archive stored in a partition."""
    try:
        meta = json.loads((metadata or {})[PARTITION_METADATA_KEY])
        return _iso_ns(meta["start"]), _iso_ns(meta["end"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"partition {url} has no time range: was it written by split-archive?") from exc


def inspect_partitions(urls: list[str], timestamp_column: str, threads: int = 2) -> list[Partition]:
    """Describe the partition files (or folders of them) in `urls`, sorted by time.

    Args:
        urls: Partition files or folders.
        timestamp_column: Name of the timestamp column.
        threads: Footers read at once from local disk (parsing them is CPU work); object
            storage gets more, as its reads wait on the network.

    Raises:
        InputError: A missing input, no partition file, or a partition that is empty, has no
            timestamp column or no time range.
    """
    partitions: list[Partition] = []
    unread: list[str] = []
    for url in urls:
        storage.require(url, "partition input")
        fs, path = storage.filesystem(url)
        if not fs.isdir(path):
            unread.append(url)
            continue
        sizes = storage.file_sizes(url, ".parquet")
        described = read_manifest(url, sizes, timestamp_column)
        if described is None:
            unread += list(sizes)
        else:
            partitions += described
    if not partitions and not unread:
        raise InputError(f"no partition file in {', '.join(urls)}")
    if unread:
        partitions += read_footers(unread, timestamp_column, threads)
    return sorted(partitions, key=lambda p: p.start_ns)


def read_footers(urls: list[str], timestamp_column: str, threads: int = 2) -> list[Partition]:
    """Describe partition files from their footers, `threads` at a time (16 on object storage)."""
    fs, _ = storage.arrow_filesystem(urls[0])
    workers = max(threads, 1) if storage.is_local(urls[0]) else 16
    # One share of the files per thread: a task per file would make the threads queue for the GIL.
    shares = [urls[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        described = pool.map(lambda share: [read_footer(url, fs, timestamp_column) for url in share], shares)
        return [p for share in described for p in share]


def read_footer(url: str, fs: pafs.FileSystem, timestamp_column: str) -> Partition:
    """Describe one partition file from its footer; `fs` is its pyarrow filesystem."""
    path = fsspec.core.strip_protocol(url)
    try:
        # The footer only (pyarrow.dataset would also import pandas: a quarter of a second).
        source = pq.ParquetFile(fs.open_input_file(path))
        footer, schema = source.metadata, source.schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"partition {url} is not readable parquet: {exc}") from exc
    if footer.num_rows == 0:
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
    ts_type = schema.field(ts_index).type
    lows, highs = [start], [end - 1]
    if pa.types.is_timestamp(ts_type):
        to_ns = _UNIT_NS[ts_type.unit]
        groups = [footer.row_group(g).column(ts_index).statistics for g in range(footer.num_row_groups)]
        if all(stats is not None and stats.has_min_max for stats in groups):
            lows = [stats.min_raw * to_ns for stats in groups]
            highs = [stats.max_raw * to_ns for stats in groups]
    return Partition(url, path, start, end, footer.num_rows, numeric, other, min(lows), max(highs))


def write_manifest(
    folder_url: str, timestamp_column: str, threads: int = 2, checksums: dict[str, int] | None = None
) -> None:
    """Describe every partition file of a folder in its manifest, written last (its presence
    means the folder is complete).

    Args:
        folder_url: The folder of partition files.
        timestamp_column: Their timestamp column.
        threads: Footers read at once.
        checksums: CRC-32C of each file, by file name, taken as it was written.
    """
    sizes = storage.file_sizes(folder_url, ".parquet")
    entries = [
        {**asdict(p), "file": file_name(p.url), "size": sizes[p.url], "crc32c": (checksums or {}).get(file_name(p.url))}
        for p in read_footers(list(sizes), timestamp_column, threads)
    ]
    for entry in entries:
        del entry["url"], entry["path"]
    manifest = {"version": MANIFEST_VERSION, "timestamp_column": timestamp_column, "partitions": entries}
    storage.write_json(manifest, storage.join(folder_url, MANIFEST_NAME))


def read_manifest(folder_url: str, sizes: dict[str, int], timestamp_column: str) -> list[Partition] | None:
    """The partitions a folder's manifest describes; None when there is none, or when it does
    not describe exactly the files in `sizes` (their URLs and byte sizes) for `timestamp_column`."""
    url = storage.join(folder_url, MANIFEST_NAME)
    if not storage.exists(url):
        return None
    try:
        manifest = storage.read_json(url)
        if manifest["version"] != MANIFEST_VERSION or manifest["timestamp_column"] != timestamp_column:
            return None
        entries = {entry["file"]: entry for entry in manifest["partitions"]}
    except (ValueError, KeyError, TypeError):
        return None
    files = {file_name(u): (u, size) for u, size in sizes.items()}
    if {name: e.get("size") for name, e in entries.items()} != {name: size for name, (_, size) in files.items()}:
        return None
    fields = ("start_ns", "end_ns", "rows", "numeric", "other", "ts_min_ns", "ts_max_ns")
    try:
        return [
            Partition(
                url=files[name][0],
                path=fsspec.core.strip_protocol(files[name][0]),
                **{key: tuple(e[key]) if key in ("numeric", "other") else int(e[key]) for key in fields},
                crc32c=None if e.get("crc32c") is None else int(e["crc32c"]),
            )
            for name, e in entries.items()
        ]
    except (KeyError, TypeError, ValueError):
        return None


def file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]
