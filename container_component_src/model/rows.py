"""Training rows in shards: each training process holds the rows it trains on, not the set.

A set's `RowIndex` (where its gapless segments start) comes from its time column alone. From it,
each of `world` processes takes a contiguous run of window ends, a block of time, and reads only
the rows of those windows: no window crosses a shard edge, the shards together hold every window
once, and memory per process is the set's size divided by the processes. Local tuning workers
share one copy instead: the rows written once to local disk and memory-mapped by each
(`MappedRows`), so the page cache holds them once whatever the workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from container_component_src import datasets, storage
from container_component_src.data.segments import SegmentNumbering, median_step_ns, segment_starts
from container_component_src.storage import InputError

if TYPE_CHECKING:  # torch is imported where rows become tensors: a tuning parent that only copies does not pay for it
    import torch

# Rows per chunk when a whole set is streamed (calibration, the mapped copy): 6 MB of float32 at
# 181 channels; scoring a chunk takes about 8 times that in float64 temporaries.
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class Shard:
    """One process's share of a set.

    Attributes:
        first: The first row it reads.
        stop: One past the last row it reads.
        ends: The rows that end its windows, counted from `first`, in time order.
    """

    first: int
    stop: int
    ends: np.ndarray


@dataclass(frozen=True)
class RowIndex:
    """Where the gapless segments of a set start: enough to cut it into shards unread.

    Attributes:
        rows: Rows in the set.
        starts: The first row of each segment, ascending, starting at 0.
    """

    rows: int
    starts: np.ndarray

    @classmethod
    def of_segments(cls, segments: np.ndarray) -> RowIndex:
        """The index of rows numbered by segment (non-decreasing, see `data.segments.segment_ids`)."""
        segments = np.asarray(segments)
        starts = segment_starts(segments) if segments.size else np.zeros(1, np.int64)
        return cls(int(segments.size), starts.astype(np.int64))

    def segments(self, first: int, stop: int) -> np.ndarray:
        """The segment number of each row in [first, stop)."""
        return np.searchsorted(self.starts, np.arange(first, stop), side="right") - 1

    def whole(self, first: int, stop: int, context: int) -> np.ndarray:
        """Whether each row in [first, stop) has `context` rows before it in its segment."""
        rows = np.arange(first, stop)
        return rows - self.starts[self.segments(first, stop)] >= context

    def _window_counts(self, context: int) -> np.ndarray:
        lengths = np.diff(np.append(self.starts, self.rows))
        return np.maximum(lengths - context, 0)

    def window_count(self, context: int) -> int:
        """Windows of `context + 1` gapless rows in the set (one per row with a full window)."""
        return int(self._window_counts(context).sum())

    def shard(self, rank: int, world: int, context: int, pad: bool = False) -> Shard:
        """The `rank`-th of `world` contiguous shares of the set's windows: the counts differ by
        at most one, and with `pad` the shorter shards repeat their first windows to the longest
        one's count (as many steps on every DDP rank, which a gradient all-reduce needs).

        Raises:
            InputError: The set has fewer windows than `world`.
        """
        counts = self._window_counts(context)
        total = int(counts.sum())
        if total < world:
            raise InputError(f"{total} windows of {context + 1} gapless rows cannot be shared by {world} processes")
        low, high = rank * total // world, (rank + 1) * total // world
        before = np.concatenate(([0], np.cumsum(counts)))

        def row_of(ordinal: int) -> int:
            segment = int(np.searchsorted(before, ordinal, side="right")) - 1
            return int(self.starts[segment]) + context + ordinal - int(before[segment])

        first_end, last_end = row_of(low), row_of(high - 1)
        first = first_end - context
        ends = np.flatnonzero(self.whole(first, last_end + 1, context))
        ends = ends[ends >= context]  # the rows before the first end are its context, not windows
        if pad:
            wanted = -(-total // world)
            ends = np.concatenate((ends, ends[: wanted - len(ends)]))
        return Shard(first, last_end + 1, ends)


class RowSource(Protocol):
    """A set's rows in model channel order, read a range at a time."""

    @property
    def index(self) -> RowIndex: ...

    def read(self, first: int, stop: int) -> torch.Tensor:
        """Rows [first, stop) as float32 (rows, channels)."""
        ...


class MemoryRows:
    """Rows already in memory (tests, benchmarks, notebooks); without segments one gapless series."""

    def __init__(self, rows: torch.Tensor, segments: np.ndarray | None = None) -> None:
        self.rows = rows
        self.index = RowIndex.of_segments(np.zeros(len(rows), np.int64) if segments is None else segments)

    def read(self, first: int, stop: int) -> torch.Tensor:
        return self.rows[first:stop]


class DatasetRows:
    """The rows of a scaled dataset (a parquet file or a folder of parts), read range by range:
    only the row groups of a range are read, a row group at a time, straight into the result.

    Args:
        url: The dataset.
        channels: Its channel columns, in model order.
    """

    def __init__(self, url: str, channels: list[str]) -> None:
        self.url, self.channels = url, channels
        self._index: RowIndex | None = None

    @property
    def index(self) -> RowIndex:
        """Read once, from the time column alone (two streaming passes: the median step, then
        the segments)."""
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> RowIndex:
        listed = datasets.parts(self.url)
        missing = [c for c in self.channels if c not in datasets.schema(self.url).names]
        if missing:
            raise InputError(f"{self.url} lacks channel(s) {', '.join(missing)}")
        rows = sum(p.rows for p in listed)
        if rows == 0:
            raise InputError(f"{self.url} holds no rows")

        def times() -> Iterator[np.ndarray]:
            for frame in datasets.iter_frames(self.url, [], dataset_parts=listed):
                yield datasets.time_index_ns(frame, self.url)

        numbering, starts, offset = SegmentNumbering(median_step_ns(times())), [], 0
        last = -1
        for batch in times():
            ids = numbering(batch)
            new = np.flatnonzero(np.diff(ids, prepend=last) != 0)
            starts.append(new + offset)
            offset, last = offset + len(ids), int(ids[-1]) if len(ids) else last
        return RowIndex(rows, np.concatenate(starts).astype(np.int64))

    def read(self, first: int, stop: int) -> torch.Tensor:
        import torch

        out = np.empty((max(stop - first, 0), len(self.channels)), np.float32)
        self.read_into(first, stop, out)
        return torch.from_numpy(out)

    def read_into(self, first: int, stop: int, out: np.ndarray) -> None:
        """Fill `out` (rows, channels) with rows [first, stop).

        Raises:
            InputError: A value is NaN or infinite (names the file and channels).
        """
        offset = 0
        for part in datasets.parts(self.url):
            if offset >= stop:
                break
            if offset + part.rows > first:
                self._read_part(part.url, first - offset, stop - offset, out[max(offset - first, 0) :])
            offset += part.rows

    def _read_part(self, url: str, first: int, stop: int, out: np.ndarray) -> None:
        """Rows [first, stop) of one part (clipped to it) into the start of `out`."""
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb") as handle:
            try:
                source = pq.ParquetFile(handle, page_checksum_verification=True)
                offset = 0
                for number in range(source.metadata.num_row_groups):
                    size = source.metadata.row_group(number).num_rows
                    low, high = max(first - offset, 0), min(stop - offset, size)
                    if low < high:
                        group = source.read_row_group(number, columns=self.channels).slice(low, high - low)
                        self._fill(group, out[offset + low - max(first, 0) :][: high - low], url)
                    offset += size
                    if offset >= stop:
                        break
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{url} is not readable parquet: {exc}") from None

    def _fill(self, table: pa.Table, out: np.ndarray, url: str) -> None:
        for column, name in enumerate(self.channels):
            out[:, column] = table.column(name).to_numpy()
        finite = np.isfinite(out).all(axis=0)
        if not finite.all():
            bad = [c for c, ok in zip(self.channels, finite, strict=True) if not ok]
            raise InputError(f"{url} has NaN or infinite values in {', '.join(bad)}: preprocess it first")


class MappedRows:
    """Rows in a float32 `.npy` file on local disk, memory-mapped: processes that map the same
    file share its pages. Pickles as its path and index (a spawned worker maps it anew)."""

    def __init__(self, path: str, index: RowIndex) -> None:
        self.path, self.index = path, index
        self._mapped: np.ndarray | None = None

    @classmethod
    def write(cls, source: DatasetRows, path: str, progress: bool = False) -> MappedRows:
        """Copy a dataset's rows to `path`, a chunk at a time.

        Raises:
            InputError: The folder of `path` has not the room (names the bytes and TMPDIR).
        """
        from tqdm.auto import tqdm

        index = source.index
        shape = (index.rows, len(source.channels))
        need = shape[0] * shape[1] * 4
        free = _free_bytes(os.path.dirname(path) or ".")
        if need > free:
            raise InputError(
                f"a local copy of {source.url} needs {need / 2**30:.1f} GiB, {os.path.dirname(path)} has "
                f"{free / 2**30:.1f} GiB free: point TMPDIR at a larger disk"
            )
        mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        with tqdm(total=index.rows, desc="copying rows", unit="row", disable=not progress) as bar:
            for first in range(0, index.rows, CHUNK_ROWS):
                stop = min(first + CHUNK_ROWS, index.rows)
                source.read_into(first, stop, mapped[first:stop])
                bar.update(stop - first)
        mapped.flush()
        del mapped
        return cls(path, index)

    def read(self, first: int, stop: int) -> torch.Tensor:
        import torch

        if self._mapped is None:
            # Copy-on-write: writable for torch (no warning), and nothing ever writes.
            self._mapped = np.load(self.path, mmap_mode="c")
        return torch.from_numpy(self._mapped[first:stop])

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "index": self.index, "_mapped": None}


def _free_bytes(folder: str) -> int:
    import shutil

    return shutil.disk_usage(folder).free


def iter_chunks(source: RowSource, chunk_rows: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """A set's rows a chunk at a time (default `CHUNK_ROWS`): (first row, values, segment of each
    row), in time order."""
    index, chunk_rows = source.index, chunk_rows or CHUNK_ROWS
    for first in range(0, index.rows, chunk_rows):
        stop = min(first + chunk_rows, index.rows)
        yield first, source.read(first, stop).numpy(), index.segments(first, stop)
