"""Bring your own telemetry: CSV or parquet files with a timestamp and numeric channels, plus labels
(a per-row 0/1 column, or a file of start/end intervals), written in the formats the pipeline
reads: yearly archive parquet files and an anomaly-reports spreadsheet."""

from __future__ import annotations

import fnmatch
import gzip
import shlex
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
from container_component_src.config import DataSettings
from container_component_src.data.generate import REPORT_COLUMNS, encode_reports
from container_component_src.data.labels import to_ns
from container_component_src.data.spans import parse_span
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
        # Positive: with 0 a recording would start at the time the one before it ends (a repeat).
        parse_span(self.stack_gap, "--stack-gap")
        if not self.separator:
            raise OptionError("--separator is empty: give the CSV field separator (',', ';', a tab)")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _read_table(url: str, separator: str, time_columns: list[str]) -> pd.DataFrame:
    """A source table, its `time_columns` as text when CSV (their digits exactly as written);
    every way it can be unreadable is an InputError naming the file."""
    storage.require_file(url, "telemetry file")
    if url.endswith(".parquet"):
        table = storage.read_parquet(url)
    elif url.endswith((".csv", ".csv.gz", ".txt")):
        fs, path = storage.filesystem(url)
        compression = "gzip" if url.endswith(".gz") else None
        try:
            with fs.open(path, "rb") as handle:
                lines = _scan_lines(handle, url, compression)
                header = pd.read_csv(
                    handle, sep=separator, compression=compression, encoding="utf-8", header=None, nrows=1, dtype=str
                )
                _check_header(header.iloc[0].tolist() if len(header) else [], url, separator)
                handle.seek(0)
                text = dict.fromkeys(time_columns, str)
                table = pd.read_csv(handle, sep=separator, compression=compression, encoding="utf-8", dtype=text)
                if len(lines) == len(table):
                    table.attrs["lines"] = lines
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


def _scan_lines(handle: Any, url: str, compression: str | None) -> np.ndarray:
    """The file line of each data row of a CSV (pandas skips blank lines: counting rows would
    shift every message after one), refusing a NUL byte (the CSV parser would cut the value at
    it); leaves `handle` at its start.

    Raises:
        InputError: A NUL byte; names the file and the line.
    """
    stream = gzip.GzipFile(fileobj=handle) if compression == "gzip" else handle
    blanks: list[int] = []
    total = 0
    for number, line in enumerate(stream, start=1):
        if b"\0" in line:
            raise InputError(f"{url}: line {number} holds a NUL byte: not CSV text")
        if number > 1 and not line.strip(b"\r\n"):
            blanks.append(number)
        total = number
    handle.seek(0)
    # Data rows before each blank line: its line, less the header and the blank lines before it.
    before = np.asarray(blanks, np.int64) - 2 - np.arange(len(blanks))
    rows = np.arange(max(total - 1 - len(blanks), 0))
    return rows + 2 + np.searchsorted(before, rows, side="right")


def row_lines(table: pd.DataFrame) -> np.ndarray:
    """The row number of each row of a source table in messages: its file line (a CSV), or its
    position from 2 (parquet: as if the header were line 1)."""
    return table.attrs.get("lines", np.arange(len(table)) + 2)


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


def channel_frame(raw: pd.DataFrame, source: str, excluded: set[str]) -> pd.DataFrame:
    """The numeric channels of a source (every column not excluded), as float32.

    Raises:
        InputError: A channel holds a value that is not a number, or there is no channel.
    """
    channels, lines = {}, row_lines(raw)
    for column in [c for c in raw.columns if c not in excluded]:
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = values.isna() & raw[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{source}: channel '{column}' row {lines[row]} value {raw[column].iloc[row]!r} is not a number "
                "(drop the column with --drop-column if it is not a channel)"
            )
        numbers = values.to_numpy(np.float64, na_value=np.nan)
        extreme = ~np.isnan(numbers) & ~(np.abs(numbers) <= FLOAT32_MAX)
        if extreme.any():
            row = int(np.flatnonzero(extreme)[0])
            raise InputError(
                f"{source}: channel '{column}' row {lines[row]} value {_shown(raw[column].iloc[row])} is infinite "
                "or beyond the float32 range of the archives (missing values are empty cells)"
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


def check_intervals(intervals: pd.DataFrame, source: str, lines: np.ndarray | None = None) -> pd.DataFrame:
    """Sort intervals and refuse inverted or overlapping ones.

    Args:
        lines: The row number of each interval in messages (default: its position from 2).

    Raises:
        InputError: An end before its start, or two intervals that overlap (rows named).
    """
    lines = np.arange(len(intervals)) + 2 if lines is None else lines
    inverted = intervals["end"] < intervals["start"]
    if inverted.any():
        row = int(np.flatnonzero(inverted.to_numpy())[0])
        raise InputError(f"{source}: interval in row {lines[row]} ends before it starts")
    ordered = intervals.reset_index(names="row").sort_values("start", kind="stable", ignore_index=True)
    overlap = ordered["start"].iloc[1:].to_numpy() <= ordered["end"].iloc[:-1].to_numpy()
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        first, second = ordered.iloc[i], ordered.iloc[i + 1]
        raise InputError(
            f"{source}: intervals in rows {lines[first['row']]} and {lines[second['row']]} overlap "
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
    lines = row_lines(raw)
    intervals = pd.DataFrame(
        {
            name: parse_times(raw[column], f"{url}: column '{column}'", spec, lines)
            for name, column in (("start", options.interval_start_column), ("end", options.interval_end_column))
        }
    )
    return check_intervals(intervals, url, lines)


def read_source(url: str, options: ImportOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One source as time-indexed float32 channels, and its labelled intervals (from the label
    column; a file without that column has none).

    Raises:
        InputError: A column is missing, a timestamp or value does not parse, or a time repeats.
    """
    raw = _read_table(url, options.separator, [options.timestamp_column])
    if options.timestamp_column not in raw.columns:
        raise InputError(f"{url}: no column '{options.timestamp_column}' (have: {', '.join(map(str, raw.columns))})")
    lines = row_lines(raw)
    where = f"{url}: column '{options.timestamp_column}'"
    times = parse_times(raw[options.timestamp_column], where, options.time_format(), lines)
    excluded = {options.timestamp_column, options.label_column, *options.drop_columns}
    if options.archive_timestamp_column in set(raw.columns) - excluded:
        raise InputError(
            f"{url}: channel '{options.archive_timestamp_column}' has the name of the archives' timestamp column: "
            "drop it (--drop-column) or name the archives' column otherwise (--archive-timestamp-column)"
        )
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
        labels = pd.to_numeric(raw[options.label_column], errors="coerce").to_numpy()
        bad = ~np.isin(labels, (0, 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{url}: label column '{options.label_column}' row {lines[row]} value "
                f"{_shown(raw[options.label_column].iloc[row])} is not 0 or 1"
            )
        intervals = label_runs(frame.index, labels[order])
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


RUN_COMMAND = "poetry run python pipeline/compile_and_run_pipeline.py --local"


def next_command(
    archives: str,
    reports: str,
    timestamp_column: str,
    data: DataSettings,
    default_timestamp: str,
    test_periods: str = "",
) -> str:
    """The command that runs the pipeline on an import, ready to paste: the archives' parent folder
    as the data root (so the run serves its own model there), the data set named after it, and
    whatever differs from `config.toml`.

    Args:
        archives: The written archive folder (or s3:// URL).
        reports: The written reports file.
        timestamp_column: The archives' timestamp column.
        data: The configured `[data]` settings.
        default_timestamp: The configured archives' timestamp column.
        test_periods: The test recordings' periods, when the import named them.
    """
    archives = archives.rstrip("/")
    root, _, folder = archives.rpartition("/")
    root = root or "."
    name = (root.rstrip("/").rpartition("/")[2] if root not in (".", "") else "") or folder
    env = {"ECLSS_DATA__ROOT": root, "ECLSS_DATA__DATASET": name}
    if folder != data.archives:
        env["ECLSS_DATA__ARCHIVES"] = folder
    if root == ".":
        inside = "" if "://" in reports or reports.startswith("/") else reports
    else:
        inside = reports[len(root) + 1 :] if reports.startswith(root + "/") else ""
    params = []
    if not inside:
        params.append(f"reports={reports}")
    elif inside != data.reports:
        env["ECLSS_DATA__REPORTS"] = inside
    if timestamp_column != default_timestamp:
        env["ECLSS_COLUMNS__TIMESTAMP"] = timestamp_column
    if test_periods:
        params.append(f"test_periods={test_periods}")
    words = [f"{key}={shlex.quote(value)}" for key, value in env.items()]
    return " ".join([*words, RUN_COMMAND, *(f"--param {shlex.quote(param)}" for param in params)])


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
    _check_paths(sources, archives_url, reports_url, options)
    storage.remove_stale_temporaries(archives_url)
    storage.remove_stale_temporaries(reports_url)
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
        parts = stack_sources(parts, pd.Timedelta(parse_span(options.stack_gap, "--stack-gap")))
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
    # The whole data set as one unit: the new archive folder and reports replace the old ones
    # together (no year file of an earlier import beside the new reports), or neither does.
    reports = encode_reports(reports_frame(intervals, [Path(o).name for o in origins]), reports_url)
    with storage.atomic_folder_and_file(archives_url, reports_url) as (folder, handle):
        archives = write_archives(frame, folder, options)
        handle.write(reports)
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


def _check_paths(sources: list[str], archives_url: str, reports_url: str, options: ImportOptions) -> None:
    """Refuse outputs that overlap inputs, before anything is read or written: the archive folder
    is replaced whole, so an input inside it (or the reports file) would be deleted by the import.

    Raises:
        OptionError: Names the two options and the path.
    """
    encode_reports(pd.DataFrame(), reports_url)  # a bad extension fails before the reading
    fs, path = storage.filesystem(reports_url)
    if fs.isdir(path):
        raise OptionError(f"--reports {reports_url} is a folder: give the path of the file to write")
    fs, path = storage.filesystem(archives_url)
    if fs.isfile(path):
        raise OptionError(f"--archives {archives_url} is a file: give the folder to write the archives to")
    inputs = [("--source", url) for url in sources] + (
        [("--intervals", options.intervals)] if options.intervals else []
    )
    archives = _resolved(archives_url)
    for option, url in [*inputs, ("--reports", reports_url)]:
        if _resolved(url) == archives or _resolved(url).startswith(archives.rstrip("/") + "/"):
            raise OptionError(f"{option} {url} lies in --archives {archives_url}, which the import replaces whole")
    for option, url in inputs:
        if _resolved(url) == _resolved(reports_url):
            raise OptionError(f"--reports {reports_url} is the {option} file: the import would overwrite its input")


def _resolved(url: str) -> str:
    """A path with its links and `..` resolved (an object-storage URL as written)."""
    import os

    return url if "://" in url else os.path.realpath(url)


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
