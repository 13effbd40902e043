"""All file I/O of the pipeline, through fsspec: local paths and s3:// URLs with the same code.

S3 (MinIO) is configured the standard AWS way, through the environment: AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. Writes are atomic: a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:
    import pandas as pd


class InputError(ValueError):
    """An input file is missing or unusable; the message names the file and the problem."""


def s3_url(url: str) -> str:
    """KFP names artifacts on MinIO `minio://bucket/key`; everything else (fsspec, KServe's
    storage initializer) knows them as `s3://bucket/key`."""
    url = str(url)
    return "s3://" + url.removeprefix("minio://") if url.startswith("minio://") else url


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem serving `url` and the path within it."""
    fs, path = fsspec.core.url_to_fs(s3_url(url))
    return fs, path


def arrow_filesystem(url: str, memory_map: bool = True) -> tuple[pafs.FileSystem, str]:
    """Return a pyarrow filesystem and path for `url`: pyarrow's own for local files (fastest),
    memory-mapping them unless `memory_map` is False (a reader that reads a whole file and then
    works on it with the GIL held would take its page faults with the GIL held)."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return pafs.LocalFileSystem(use_mmap=memory_map), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def is_local(url: str) -> bool:
    return isinstance(filesystem(url)[0], LocalFileSystem)


def join(url: str, *parts: str) -> str:
    """Join path parts onto a local path or URL."""
    return "/".join([str(url).rstrip("/"), *(p.strip("/") for p in parts)])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def require(url: str, what: str) -> None:
    """Raise InputError naming `url` when it does not exist."""
    if not exists(url):
        raise InputError(f"{what} {url} does not exist")


def require_file(url: str, what: str) -> None:
    """Raise InputError naming `url` unless it is a file this process can read: not missing, not
    a folder, not a pipe or device (a FIFO would block the read), not unreadable."""
    import os
    import stat

    require(url, what)
    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        if fs.isdir(path):
            raise InputError(f"{what} {url} is a folder, not a file")
        return
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} {url} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{what} {url} is not a regular file (a pipe or a device?)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {url} cannot be read: permission denied")


def list_files(url: str, suffix: str) -> list[str]:
    """Return the files directly under the folder `url` ending in `suffix`, sorted, as URLs."""
    return list(file_sizes(url, suffix))


def file_sizes(url: str, suffix: str) -> dict[str, int]:
    """Return the files directly under the folder `url` ending in `suffix`, sorted, as URLs
    with their sizes in bytes."""
    fs, path = filesystem(url)
    if not fs.isdir(path):
        raise InputError(f"folder {url} does not exist")
    entries = [e for e in fs.ls(path, detail=True) if e["type"] == "file" and e["name"].endswith(suffix)]
    return {_unstrip(url, fs, e["name"]): int(e["size"]) for e in sorted(entries, key=lambda e: e["name"])}


def _unstrip(url: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


@contextlib.contextmanager
def atomic_write(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open `url` for writing so that it appears only complete, and not at all on error.

    Locally: a temporary sibling file renamed into place. On S3: an object becomes visible
    only when its upload completes, and the upload is discarded on error.
    """
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        if Path(path).is_dir():
            raise InputError(f"{url} is a folder: give the path of the file to write")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, mode) as handle:
                yield handle
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    handle = fs.open(path, mode)
    try:
        yield handle
    except BaseException:
        handle.discard()
        # A discarded upload must not be flushed again when the object is collected.
        handle.closed = True
        raise
    handle.close()


@contextlib.contextmanager
def atomic_directory(url: str) -> Iterator[str]:
    """Yield a folder to fill; it replaces `url` only when the block succeeds.

    Locally the folder is a temporary sibling renamed into place. On S3 the objects are written
    under `url` directly (each object is atomic; S3 has no folder to rename).
    """
    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        yield url
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield str(tmp)
        if target.exists():
            old = target.with_name(f"{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_folder_and_file(folder_url: str, file_url: str) -> Iterator[tuple[str, IO[Any]]]:
    """Yield a folder to fill and a file to write; they replace `folder_url` and `file_url`
    together when the block succeeds, or neither does.

    Locally both are staged as temporary siblings; then the old ones are set aside, the new ones
    renamed into place, and if a rename fails (a folder busy as a mount point, a full disk) the
    old ones are put back. On S3 the folder's objects are written first and the file last (its
    upload completes only then), so a reader that finds the file finds the folder complete.
    """
    fs, _ = filesystem(folder_url)
    if not isinstance(fs, LocalFileSystem):
        with atomic_directory(folder_url) as folder, atomic_write(file_url) as handle:
            yield folder, handle
        return
    folder, file = Path(filesystem(folder_url)[1]), Path(filesystem(file_url)[1])
    tag = uuid.uuid4().hex[:8]
    staged = (folder.with_name(f"{folder.name}.tmp-{tag}"), file.with_name(f"{file.name}.tmp-{tag}"))
    for target in (folder, file):
        target.parent.mkdir(parents=True, exist_ok=True)
    staged[0].mkdir()
    try:
        with open(staged[1], "wb") as handle:
            yield str(staged[0]), handle
        _swap_in([(folder, staged[0]), (file, staged[1])], tag)
    finally:
        for leftover in staged:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()


def _swap_in(pairs: list[tuple[Path, Path]], tag: str) -> None:
    """Rename each staged path over its target, all or none (see `atomic_folder_and_file`)."""
    set_aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for target, staged in pairs:
            if target.exists():
                old = target.with_name(f"{target.name}.old-{tag}")
                target.rename(old)
                set_aside.append((target, old))
            staged.rename(target)
            placed.append(target)
    except BaseException:
        for target in placed:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        for target, old in set_aside:
            old.rename(target)
        raise
    for _, old in set_aside:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def remove_stale_temporaries(url: str) -> list[str]:
    """Remove the temporary siblings (`<name>.tmp-*`, `<name>.old-*`) that a killed atomic write of
    the local `url` left behind; return what was removed. Object storage has none."""
    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        return []
    target = Path(path)
    if not target.parent.is_dir():
        return []
    removed = []
    for stale in target.parent.glob(f"{glob.escape(target.name)}.*-*"):
        if re.fullmatch(r"\.(tmp|old)-[0-9a-f]{8}", stale.name[len(target.name) :]):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            removed.append(str(stale))
    return removed


# Rows per row group of what the steps write: a reader that streams decodes a row group at a
# time, so this bounds its memory (~50 MB at 181 float32 channels) whatever the rows.
ROW_GROUP_ROWS = 65_536


def iter_batches(source: pq.ParquetFile, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of a parquet file as tables of at most `batch_rows` rows, a row group at a time.

    `ParquetFile.iter_batches` keeps what it read alive until the file is closed (its memory grew
    by the size of the file: 0.8 GB over a 1 M-row part); reading row group by row group frees
    each one, so memory holds one row group whatever the file.
    """
    for number in range(source.metadata.num_row_groups):
        group = source.read_row_group(number, columns=columns)
        for offset in range(0, group.num_rows, batch_rows):
            yield group.slice(offset, batch_rows)


class ChecksummedFile:
    """A binary file being written, with the CRC-32C (Castagnoli; hardware-computed, ~12 GB/s) of
    every byte written so far: a digest of a whole file taken while it is written, so that checking
    it later costs one fast pass instead of verifying every page while decoding (or another
    download of the file to digest it afterwards).

    Attributes:
        crc32c: CRC-32C of the bytes written so far.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._position = 0
        self.crc32c = 0

    def write(self, data: bytes) -> int:
        import google_crc32c

        self.crc32c = google_crc32c.extend(self.crc32c, bytes(data) if isinstance(data, memoryview) else data)
        self._position += len(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._handle.flush()

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        self._handle.close()


def crc32c(data: pa.Buffer | bytes) -> int:
    """The CRC-32C of `data`, as `ChecksummedFile` computes it."""
    import google_crc32c

    return google_crc32c.value(data)


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Writer options per column. Floats and timestamps rarely repeat: trying a dictionary for
    them only costs write time (3x for floats, 2x for a time index). Snappy saves ~1 % of noisy
    floats for twice the write time, so floats get LZ4 (as cheap as none, and still shrinks
    repeats). Timestamps are stored as deltas, uncompressed: a time index steps nearly regularly,
    so its deltas pack into few bits (8 bytes a row -> 4 for the archives' jittered 10 s index,
    under 0.4 for a regular grid), and decode in under a third of Snappy's time. The other
    columns get dictionaries and Snappy."""
    floats = {f.name for f in schema if pa.types.is_floating(f.type)}
    times = {f.name for f in schema if pa.types.is_timestamp(f.type)}
    return {
        "use_dictionary": [f.name for f in schema if f.name not in floats | times],
        "column_encoding": dict.fromkeys(times, "DELTA_BINARY_PACKED"),
        "compression": {f.name: "lz4" if f.name in floats else "none" if f.name in times else "snappy" for f in schema},
        # Every reader verifies them: a corrupted page is an error naming the file, not wrong data.
        "write_page_checksum": True,
    }


def copy_directory(source: str, target: str) -> None:
    """Copy a folder between any two locations (local or object storage); `target` is replaced
    atomically where the filesystem allows."""
    src_fs, src_path = filesystem(source)
    if not src_fs.isdir(src_path):
        raise InputError(f"folder {source} does not exist")
    with atomic_directory(target) as folder:
        dst_fs, dst_path = filesystem(folder)
        for path in src_fs.find(src_path):
            target_path = f"{dst_path}/{path[len(src_path.rstrip('/')) + 1 :]}"
            dst_fs.makedirs(target_path.rsplit("/", 1)[0], exist_ok=True)
            with src_fs.open(path, "rb") as reader, dst_fs.open(target_path, "wb") as writer:
                shutil.copyfileobj(reader, writer)


def remove_directory(url: str) -> None:
    """Delete a folder and everything under it."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_parquet(frame: pd.DataFrame, url: str, columns: list[str] | None = None) -> None:
    """Write a frame (its index included; of its columns, `columns` when given) to one parquet
    file, atomically, in row groups of `ROW_GROUP_ROWS`, each converted to Arrow and written in
    turn: memory holds one row group's copy, not the whole table's, and not the encoded file."""
    first = pa.Table.from_pandas(frame.iloc[:ROW_GROUP_ROWS], columns=columns, preserve_index=True)
    with atomic_write(url) as handle, pq.ParquetWriter(handle, first.schema, **parquet_options(first.schema)) as writer:
        writer.write_table(first, row_group_size=ROW_GROUP_ROWS)
        for start in range(ROW_GROUP_ROWS, len(frame), ROW_GROUP_ROWS):
            # The first row group's schema (its columns, types and pandas metadata) for every one.
            rows = frame.iloc[start : start + ROW_GROUP_ROWS]
            writer.write_table(pa.Table.from_pandas(rows, schema=first.schema, preserve_index=True))


def write_table(table: pa.Table, url: str) -> None:
    """Write a table to one parquet file, atomically, in row groups of `ROW_GROUP_ROWS`. It is
    encoded in memory first: encoding through a Python file object would hold the GIL for every
    write."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, **parquet_options(table.schema))
    with atomic_write(url) as handle:
        handle.write(sink.getvalue())


def read_parquet(url: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a parquet file or a folder of parquet files into one frame."""
    require(url, "parquet input")
    fs, path = filesystem(url)
    try:
        table = pq.read_table(path, filesystem=fs, columns=columns, page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{url} is not readable parquet: {exc}") from exc
    return table.to_pandas()


def write_json(data: Any, url: str) -> None:
    with atomic_write(url, "w") as handle:
        json.dump(data, handle, indent=2, default=str)


def read_json(url: str) -> Any:
    """The JSON document at `url`.

    Raises:
        InputError: It is missing or not JSON; names the file and where it breaks.
    """
    require_file(url, "JSON input")
    fs, path = filesystem(url)
    with fs.open(path, "r") as handle:
        try:
            return json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{url} is not JSON: {exc}") from None
