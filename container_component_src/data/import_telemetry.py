"""Bring your own telemetry: CSV or parquet files with a timestamp and numeric channels, plus labels
(a per-row 0/1 column, or a file of start/end intervals), written in the formats the pipeline
reads: yearly archive parquet files and an anomaly-reports spreadsheet."""

from __future__ import annotations

import fnmatch
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from container_component_src import storage
from container_component_src.data.generate import REPORT_COLUMNS, write_reports
from container_component_src.data.labels import to_ns
from container_component_src.data.timestamps import TimeFormat, parse_times
from container_component_src.errors import OptionError
from container_component_src.storage import InputError


@dataclass(frozen=True)
class ImportOptions:
    """How to read the sources.

    Attributes:
        timestamp_column: Timestamp column of the sources.
        label_column: Per-row 0/1 anomaly column of the sources (empty: none).
        intervals: File (CSV or parquet) of labelled intervals (empty: none).
        interval_start_column: Start column of the intervals file.
        interval_end_column: End column of the intervals file.
        separator: CSV field separator.
        timezone: Zone of timestamps written without one.
        drop_columns: Source columns that are neither channels nor labels (dropped).
        stack: The files are separate recordings: lay them end to end, in the order given,
            `stack_gap` apart, instead of on their own clocks (which may overlap).
        stack_gap: Gap between stacked files (a pandas time span).
        archive_timestamp_column: Timestamp column of the written archives.
        row_group_rows: Rows per parquet row group of the archives.
        timestamp_unit: Unit of timestamps given as numbers since the epoch (s, ms, us, ns);
            numbers are refused without it.
        timestamp_format: A strptime format of the timestamps, for forms the parser does not read
            by itself (see `data.timestamps`).
        dayfirst: Dates such as 01/03/2021 are day first (without it they are refused as ambiguous).
        overwrite: Replace a non-empty archive folder (all of it) and the reports file.
        test_sources: Patterns (shell-style, on the file name or the whole path) of the sources
            that are test recordings; their time spans come back as `test_periods`, the value
            of the split's parameter of that name.
    """

    timestamp_column: str = "timestamp"
    label_column: str = ""
    intervals: str = ""
    interval_start_column: str = "start"
    interval_end_column: str = "end"
    separator: str = ","
    timezone: str = "UTC"
    drop_columns: tuple[str, ...] = ()
    stack: bool = False
    stack_gap: str = "1h"
    archive_timestamp_column: str = "normalizedTime"
    row_group_rows: int = 100_000
    timestamp_unit: str = ""
    overwrite: bool = False
    test_sources: tuple[str, ...] = ()
    timestamp_format: str = ""
    dayfirst: bool = False

    def time_format(self) -> TimeFormat:
        """How the sources' and the intervals' times are written."""
        return TimeFormat(self.timezone, self.timestamp_unit, self.dayfirst, self.timestamp_format)

    def validate(self) -> None:
        self.time_format().validate()
        if self.label_column and self.intervals:
            raise OptionError("give labels either per row (--label-column) or as intervals (--intervals), not both")
        if self.stack and self.intervals:
            raise OptionError("--stack moves each file's times: give labels per row (--label-column) with it")
        try:
            gap = pd.Timedelta(self.stack_gap)
        except (ValueError, OverflowError) as exc:
            raise OptionError(f"--stack-gap {self.stack_gap!r} is not a time span like 1h or 30min ({exc})") from None
        if pd.isna(gap) or gap < pd.Timedelta(0):
            raise OptionError(f"--stack-gap must be a time span of 0 or more, got {self.stack_gap!r}")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _read_table(url: str, separator: str, time_columns: list[str]) -> pd.DataFrame:
    """A source table, its `time_columns` as text when CSV (their digits exactly as written);
    every way it can be unreadable is an InputError naming the file."""
    storage.require(url, "telemetry file")
    if url.endswith(".parquet"):
        table = storage.read_parquet(url)
    elif url.endswith((".csv", ".csv.gz", ".txt")):
        fs, path = storage.filesystem(url)
        compression = "gzip" if url.endswith(".gz") else None
        try:
            with fs.open(path, "rb") as handle:
                _check_no_nul(handle, url, compression)
                header = pd.read_csv(
                    handle, sep=separator, compression=compression, encoding="utf-8", header=None, nrows=1, dtype=str
                )
                _check_header(header.iloc[0].tolist() if len(header) else [], url, separator)
                handle.seek(0)
                text = dict.fromkeys(time_columns, str)
                table = pd.read_csv(handle, sep=separator, compression=compression, encoding="utf-8", dtype=text)
        except UnicodeDecodeError as exc:
            raise InputError(f"{url} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
        except pd.errors.EmptyDataError:
            raise InputError(f"{url} is empty") from None
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise InputError(f"{url} is not a readable gzip file: {exc}") from None
        except pd.errors.ParserError as exc:
            raise InputError(f"{url} is not readable CSV: {exc}") from None
    else:
        raise InputError(f"{url}: expected a .csv or .parquet file")
    if table.empty:
        raise InputError(f"{url} has no rows")
    return table


def _check_no_nul(handle: Any, url: str, compression: str | None) -> None:
    """Refuse a text file holding a NUL byte (the CSV parser would cut the value at it), a chunk at
    a time; leaves `handle` at its start.

    Raises:
        InputError: Names the file and the line.
    """
    stream = gzip.GzipFile(fileobj=handle) if compression == "gzip" else handle
    line = 1
    while chunk := stream.read(1 << 20):
        at = chunk.find(b"\0")
        if at >= 0:
            line += chunk.count(b"\n", 0, at)
            raise InputError(f"{url}: line {line} holds a NUL byte: not CSV text")
        line += chunk.count(b"\n")
    handle.seek(0)


def _check_header(names: list[Any], url: str, separator: str) -> None:
    """Refuse a header with a repeated or empty column name (pandas would rename the one `a.1` and
    call the other `Unnamed: 2`, and import either as a channel).

    Raises:
        InputError: Names the file, the column and its position.
    """
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if pd.isna(name) or not str(name).strip():
            raise InputError(f"{url}: column {position} of the header has no name (a trailing {separator!r}?)")
        if str(name) in seen:
            first = seen[str(name)]
            raise InputError(f"{url}: column name {str(name)!r} appears twice (columns {first} and {position})")
        seen[str(name)] = position


def _shown(value: object) -> str:
    """A cell as the user wrote it (numpy scalars as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _bad_row(mask: np.ndarray) -> int:
    """The CSV line of the first True (line 1 is the header)."""
    return int(np.flatnonzero(mask)[0]) + 2


def channel_frame(raw: pd.DataFrame, source: str, excluded: set[str]) -> pd.DataFrame:
    """The numeric channels of a source (every column not excluded), as float32.

    Raises:
        InputError: A channel holds a value that is not a number, or there is no channel.
    """
    channels = {}
    for column in [c for c in raw.columns if c not in excluded]:
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = values.isna() & raw[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{source}: channel '{column}' row {row + 2} value {raw[column].iloc[row]!r} is not a number "
                "(drop the column with --drop-column if it is not a channel)"
            )
        numbers = values.to_numpy(np.float64, na_value=np.nan)
        extreme = ~np.isnan(numbers) & ~(np.abs(numbers) <= FLOAT32_MAX)
        if extreme.any():
            row = _bad_row(extreme)
            raise InputError(
                f"{source}: channel '{column}' row {row} value {_shown(raw[column].iloc[row - 2])} is infinite or "
                "beyond the float32 range of the archives (missing values are empty cells)"
            )
        channels[str(column)] = values.astype(np.float32)
    if not channels:
        raise InputError(f"{source}: no channel column besides the timestamp and labels")
    return pd.DataFrame(channels)


def label_runs(times: pd.DatetimeIndex, labels: np.ndarray) -> pd.DataFrame:
    """One interval per run of consecutive labelled rows: first and last row's time."""
    flags = labels.astype(bool)
    edges = np.diff(np.concatenate(([False], flags, [False])).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return pd.DataFrame({"start": times[starts], "end": times[ends]})


def check_intervals(intervals: pd.DataFrame, source: str) -> pd.DataFrame:
    """Sort intervals and refuse inverted or overlapping ones.

    Raises:
        InputError: An end before its start, or two intervals that overlap (rows named).
    """
    inverted = intervals["end"] < intervals["start"]
    if inverted.any():
        row = int(np.flatnonzero(inverted.to_numpy())[0])
        raise InputError(f"{source}: interval in row {row + 2} ends before it starts")
    ordered = intervals.reset_index(names="row").sort_values("start", kind="stable", ignore_index=True)
    overlap = ordered["start"].iloc[1:].to_numpy() <= ordered["end"].iloc[:-1].to_numpy()
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        first, second = ordered.iloc[i], ordered.iloc[i + 1]
        raise InputError(
            f"{source}: intervals in rows {first['row'] + 2} and {second['row'] + 2} overlap "
            f"({first['start']} - {first['end']} and {second['start']} - {second['end']})"
        )
    return ordered.drop(columns="row")


def read_intervals(url: str, options: ImportOptions) -> pd.DataFrame:
    """Labelled intervals from a file, as UTC start/end, checked."""
    raw = _read_table(url, options.separator, [options.interval_start_column, options.interval_end_column])
    spec = options.time_format()
    for column in (options.interval_start_column, options.interval_end_column):
        if column not in raw.columns:
            raise InputError(f"{url}: no column '{column}' (have: {', '.join(map(str, raw.columns))})")
    intervals = pd.DataFrame(
        {
            "start": parse_times(
                raw[options.interval_start_column], f"{url}: column '{options.interval_start_column}'", spec
            ),
            "end": parse_times(
                raw[options.interval_end_column], f"{url}: column '{options.interval_end_column}'", spec
            ),
        }
    )
    return check_intervals(intervals, url)


def read_source(url: str, options: ImportOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One source as time-indexed float32 channels, and its labelled intervals (from the label
    column; a file without that column has none).

    Raises:
        InputError: A column is missing, a timestamp or value does not parse, or a time repeats.
    """
    raw = _read_table(url, options.separator, [options.timestamp_column])
    if options.timestamp_column not in raw.columns:
        raise InputError(f"{url}: no column '{options.timestamp_column}' (have: {', '.join(map(str, raw.columns))})")
    times = parse_times(
        raw[options.timestamp_column], f"{url}: column '{options.timestamp_column}'", options.time_format()
    )
    excluded = {options.timestamp_column, options.label_column, *options.drop_columns}
    frame = channel_frame(raw, url, excluded).set_index(times)
    order = np.argsort(to_ns(times), kind="stable")
    frame = frame.iloc[order]
    duplicated = frame.index.duplicated()
    if duplicated.any():
        raise InputError(
            f"{url}: {int(duplicated.sum())} duplicate timestamp(s), first {frame.index[duplicated][0]} "
            f"(column '{options.timestamp_column}')"
        )
    intervals = pd.DataFrame({"start": pd.DatetimeIndex([], tz="UTC"), "end": pd.DatetimeIndex([], tz="UTC")})
    if options.label_column in raw.columns:
        labels = pd.to_numeric(raw[options.label_column], errors="coerce").to_numpy()[order]
        if not np.isin(labels, (0, 1)).all():
            raise InputError(f"{url}: label column '{options.label_column}' holds values other than 0 and 1")
        intervals = label_runs(frame.index, labels)
    return frame, intervals


def _has_column(url: str, options: ImportOptions) -> bool:
    if url.endswith(".parquet"):
        fs, path = storage.filesystem(url)
        return options.label_column in pq.read_schema(path, filesystem=fs).names
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        compression = "gzip" if url.endswith(".gz") else None
        header = pd.read_csv(handle, sep=options.separator, nrows=0, compression=compression)
    return options.label_column in header.columns


def stack_sources(
    parts: list[tuple[pd.DataFrame, pd.DataFrame]], gap: pd.Timedelta
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Shift each (frame, intervals) so that the recordings follow one another, `gap` apart,
    starting at the first one's own start."""
    stacked, cursor = [], None
    for frame, intervals in parts:
        shift = pd.Timedelta(0) if cursor is None else cursor - frame.index[0]
        stacked.append((frame.set_axis(frame.index + shift), intervals + shift))
        cursor = frame.index[-1] + shift + gap
    return stacked


def format_doy(ts: pd.Timestamp) -> str:
    """YYYY/DOY/HH:MM:SS as the reports write it, with the fraction (to the nanosecond) when the
    time has one: an interval must still cover its own first and last row when read back."""
    nanoseconds = ts.microsecond * 1000 + ts.nanosecond
    fraction = f".{nanoseconds:09d}".rstrip("0") if nanoseconds else ""
    return f"{ts.year}/{ts.day_of_year:03d}/{ts:%H:%M:%S}{fraction}"


def reports_frame(intervals: pd.DataFrame, sources: list[str]) -> pd.DataFrame:
    """Anomaly reports in the real system's columns, one per interval."""
    rows = [
        {
            "ID": f"IMP-{i + 1:05d}",
            "SYMBOL": "IMPORTED",
            "TITLE": f"Labelled anomaly from {source}",
            "EVENT GMT (DOY/HH:MM:SS)": format_doy(start),
            "Duration/End GMT": format_doy(end),
        }
        for i, (start, end, source) in enumerate(zip(intervals["start"], intervals["end"], sources, strict=True))
    ]
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


def write_archives(frame: pd.DataFrame, archives_url: str, options: ImportOptions) -> list[str]:
    """One parquet file per year, `archive_timestamp_column` plus float channels, many row groups.
    `archives_url` should be a fresh folder: `run_import_telemetry` writes into a staging one."""
    written = []
    for year, part in frame.groupby(frame.index.year, sort=True):
        table = pa.Table.from_pandas(
            part.rename_axis(options.archive_timestamp_column).reset_index(), preserve_index=False
        )
        url = storage.join(archives_url, f"telemetry_{year}.parquet")
        with storage.atomic_write(url) as handle:
            pq.write_table(
                table, handle, row_group_size=options.row_group_rows, **storage.parquet_options(table.schema)
            )
        written.append(url)
    return written


def run_import_telemetry(
    sources: list[str], archives_url: str, reports_url: str, options: ImportOptions
) -> dict[str, int]:
    """Read the sources, check them, and write the archives and the reports.

    Returns:
        Counts: files, rows, channels, anomalies (intervals), archives.

    Raises:
        InputError: A source is unreadable or inconsistent (message names file, column, row),
            the files disagree on their channels, or their times overlap (use --stack).
    """
    options.validate()
    if not sources:
        raise OptionError("give at least one --source file")
    storage.remove_stale_temporaries(archives_url)
    if storage.exists(archives_url) and storage.list_files(archives_url, "") and not options.overwrite:
        raise OptionError(
            f"the archive folder {archives_url} is not empty: pass --overwrite to replace it (all its files) "
            "and the reports file with this import"
        )
    parts = [read_source(url, options) for url in tqdm(sources, desc="reading", unit="file")]
    if options.label_column:
        unlabelled = [url for url in sources if not _has_column(url, options)]
        if len(unlabelled) == len(sources):
            raise InputError(f"no source has the label column '{options.label_column}'")
        for url in unlabelled:
            print(f"note: {url} has no column '{options.label_column}': taken as anomaly-free", flush=True)
    channels = list(parts[0][0].columns)
    for url, (frame, _) in zip(sources, parts, strict=True):
        if list(frame.columns) != channels:
            raise InputError(f"{url}: channels {list(frame.columns)} differ from {sources[0]}'s {channels}")
    if options.stack:
        parts = stack_sources(parts, pd.Timedelta(options.stack_gap))
    frame = pd.concat([p[0] for p in parts]).sort_index(kind="stable")
    duplicated = frame.index.duplicated()
    if duplicated.any():
        raise InputError(
            f"the files' times overlap ({int(duplicated.sum())} timestamp(s) repeat, first "
            f"{frame.index[duplicated][0]}): if they are separate recordings, import them with --stack"
        )
    if options.intervals:
        intervals = read_intervals(options.intervals, options)
        origins = [options.intervals] * len(intervals)
    else:
        intervals = pd.concat([p[1] for p in parts], ignore_index=True)
        origins = [url for url, part in zip(sources, parts, strict=True) for _ in range(len(part[1]))]
        intervals = check_intervals(intervals.assign(origin=origins), "the labels").reset_index(drop=True)
        origins = intervals.pop("origin").tolist()
    # The whole data set at once: a new archive folder replaces the old one (no year file of an
    # earlier import stays beside the new reports), and the reports are written before it appears.
    with storage.atomic_directory(archives_url) as folder:
        archives = write_archives(frame, folder, options)
        write_reports(reports_frame(intervals, [Path(o).name for o in origins]), reports_url)
    result = {
        "files": len(sources),
        "rows": len(frame),
        "channels": len(channels),
        "anomalies": len(intervals),
        "archives": len(archives),
    }
    if options.test_sources:
        result["test_periods"] = test_periods(sources, [p[0].index for p in parts], options.test_sources)
    return result


def test_periods(sources: list[str], times: list[pd.DatetimeIndex], patterns: tuple[str, ...]) -> str:
    """The time spans ("start/end", comma-separated, UTC ISO) of the sources that match a pattern.

    Raises:
        OptionError: A pattern matches no source, or every source is a test recording.
    """
    matched = [any(fnmatch.fnmatch(url, p) or fnmatch.fnmatch(Path(url).name, p) for p in patterns) for url in sources]
    for pattern in patterns:
        if not any(fnmatch.fnmatch(u, pattern) or fnmatch.fnmatch(Path(u).name, pattern) for u in sources):
            raise OptionError(f"--test-source {pattern!r} matches no --source file")
    if all(matched):
        raise OptionError("--test-source matches every --source file: no recording is left for training")
    spans = [f"{t.min().isoformat()}/{t.max().isoformat()}" for t, test in zip(times, matched, strict=True) if test]
    return ",".join(spans)
