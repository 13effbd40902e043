"""Anomaly labels: reports -> validated UTC intervals -> a 0/1 label per telemetry row."""

from __future__ import annotations

import calendar
import io
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from container_component_src import datasets, storage
from container_component_src.storage import InputError

if TYPE_CHECKING:
    from container_component_src.cluster.dask import Tasks

_DOY = re.compile(r"^(\d{4})/(\d{1,3})/(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")
_DURATION = re.compile(r"^(?:(\d+)/)?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")


def read_reports(url: str) -> pd.DataFrame:
    """Read an anomaly-report table from .xls, .xlsx or .csv, every cell as text.

    Raises:
        InputError: The file is missing, empty, not of its kind, or not UTF-8 text (CSV).
    """
    storage.require_file(url, "reports file")
    suffix = url.rsplit(".", 1)[-1].lower()
    if suffix not in ("xls", "xlsx", "csv"):
        raise InputError(f"reports file {url} must be .xls, .xlsx or .csv")
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        data = handle.read()
    if not data.strip():
        raise InputError(f"reports file {url} is empty")
    try:
        if suffix == "csv":
            table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8")
        else:
            sheets = pd.read_excel(
                io.BytesIO(data), dtype=str, engine="calamine", keep_default_na=False, sheet_name=None
            )
            table = _report_sheets(sheets, url)
    except UnicodeDecodeError as exc:
        raise InputError(f"reports file {url} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"reports file {url} is not a readable .{suffix} file: {exc}") from None
    except Exception as exc:  # the spreadsheet engines raise their own types (CalamineError, ...)
        if type(exc).__module__.split(".")[0] in ("python_calamine", "openpyxl", "xlrd", "zipfile"):
            raise InputError(f"reports file {url} is not a readable .{suffix} spreadsheet: {exc}") from None
        raise
    return table


def _report_sheets(sheets: dict[str, pd.DataFrame], url: str) -> pd.DataFrame:
    """The reports of every sheet with the first filled sheet's columns, one table; a filled sheet
    with other columns is skipped with a note naming it (a workbook may hold notes or a summary)."""
    filled = {name: sheet for name, sheet in sheets.items() if len(sheet.columns)}
    if not filled:
        return next(iter(sheets.values()))
    first_name, first = next(iter(filled.items()))
    kept = [sheet for sheet in filled.values() if list(sheet.columns) == list(first.columns)]
    for name, sheet in filled.items():
        if list(sheet.columns) != list(first.columns) and len(sheet):
            print(f"note: sheet {name!r} of {url} skipped: its columns differ from sheet {first_name!r}'s", flush=True)
    return pd.concat(kept, ignore_index=True)


def _fraction_ns(digits: str | None) -> int:
    return int((digits or "").ljust(9, "0"))


def parse_doy(text: str) -> pd.Timestamp:
    """Parse 'YYYY/DOY/HH:MM:SS[.fraction]' (UTC), exactly to the nanosecond.

    Raises:
        ValueError: Not that form, or a day, hour, minute or second out of range (DOY 366 only in
            a leap year; no leap second).
    """
    match = _DOY.match(text.strip())
    if not match:
        raise ValueError(text)
    year, doy, hours, minutes, seconds = (int(g) for g in match.groups()[:5])
    days_in_year = 366 if calendar.isleap(year) else 365
    if not (1 <= doy <= days_in_year and hours < 24 and minutes < 60 and seconds < 60):
        raise ValueError(text)
    offset = pd.Timedelta(days=doy - 1, hours=hours, minutes=minutes, seconds=seconds)
    return pd.Timestamp(year=year, month=1, day=1, tz="UTC") + offset + pd.Timedelta(_fraction_ns(match.group(6)), "ns")


def parse_duration(text: str) -> pd.Timedelta:
    """Parse 'HH:MM:SS[.fraction]' or 'D/HH:MM:SS[.fraction]' (minutes and seconds below 60).

    Raises:
        ValueError: Not that form, or minutes or seconds out of range.
    """
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(text)
    days, hours, minutes, seconds, fraction = match.groups()
    if int(minutes) >= 60 or int(seconds) >= 60:
        raise ValueError(text)
    whole = pd.Timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=int(seconds))
    return whole + pd.Timedelta(_fraction_ns(fraction), "ns")


def _check_columns_and_ids(raw: pd.DataFrame, source: str, id_column: str, columns: tuple[str, ...]) -> None:
    """Refuse a column given twice (pandas renames the second `X.1`) and empty or repeated ids."""
    for column in columns:
        if f"{column}.1" in raw.columns:
            raise InputError(f"reports file {source} has the column {column!r} twice")
    ids = raw[id_column].astype(str).str.strip()
    empty = np.flatnonzero((ids == "").to_numpy())
    if empty.size:
        raise InputError(f"reports file {source}: column {id_column!r} is empty in row {empty[0] + 2}")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise InputError(f"reports file {source}: report id {repeated.iloc[0]!r} appears more than once")


def parse_reports(raw: pd.DataFrame, source: str, id_column: str, start_column: str, end_column: str) -> pd.DataFrame:
    """Return one row per report: id, UTC start and end (end given as a time or a duration).

    Raises:
        InputError: A column is missing, a time does not parse, or an end precedes its start;
            the message names the file, the column, the report and the value.
    """
    missing = [c for c in (id_column, start_column, end_column) if c not in raw.columns]
    if missing:
        raise InputError(f"reports file {source} has no column {', '.join(repr(c) for c in missing)}")
    _check_columns_and_ids(raw, source, id_column, (id_column, start_column, end_column))
    rows = []
    for rid, start_text, end_text in raw[[id_column, start_column, end_column]].itertuples(index=False, name=None):
        where = f"reports file {source}, report {rid}"
        try:
            start = parse_doy(str(start_text))
        except ValueError:
            raise InputError(
                f"{where}: column '{start_column}' value {start_text!r} is not a valid YYYY/DOY/HH:MM:SS "
                "(day of year within the year, hours below 24, minutes and seconds below 60)"
            ) from None
        end_text = str(end_text).strip()
        try:
            end = parse_doy(end_text) if _DOY.match(end_text) else start + parse_duration(end_text)
        except ValueError:
            raise InputError(
                f"{where}: column '{end_column}' value {end_text!r} is neither a valid YYYY/DOY/HH:MM:SS "
                "nor a duration HH:MM:SS (minutes and seconds below 60)"
            ) from None
        if end < start:
            raise InputError(f"{where}: end {end_text!r} is before start {start_text!r}")
        rows.append((str(rid), start, end))
    intervals = pd.DataFrame(rows, columns=["id", "start", "end"])
    intervals["start"] = pd.to_datetime(intervals["start"], utc=True)
    intervals["end"] = pd.to_datetime(intervals["end"], utc=True)
    return intervals.sort_values("start", ignore_index=True)


def to_ns(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch as int64, whatever the datetime unit (pandas 3 may use us)."""
    return pd.DatetimeIndex(times).as_unit("ns").asi8


def label_rows(times_ns: np.ndarray, starts_ns: np.ndarray, ends_ns: np.ndarray, period_ns: int = 0) -> np.ndarray:
    """Return 1 where a row overlaps any closed interval [start, end], else 0.

    A row at time t stands for the grid period [t, t + period_ns) it aggregates: it overlaps an
    interval when t <= end and t + period_ns > start, so the row whose period holds an event's
    start is anomalous too. With `period_ns` 0 a row is the instant t.

    Sort the intervals once, then one binary search per row: O((n + m) log m), no Python loop.
    Overlapping intervals are fine: after sorting by start, the running maximum of the ends
    tells whether any interval that started before a time is still open at it.
    """
    if starts_ns.size == 0:
        return np.zeros(times_ns.size, dtype=np.int8)
    # t + period > start  <=>  t >= start - period + 1 (integer nanoseconds).
    starts_ns = starts_ns - max(period_ns - 1, 0)
    order = np.argsort(starts_ns, kind="stable")
    starts, reach = starts_ns[order], np.maximum.accumulate(ends_ns[order])
    idx = np.searchsorted(starts, times_ns, side="right") - 1
    inside = (idx >= 0) & (times_ns <= reach[np.clip(idx, 0, None)])
    return inside.astype(np.int8)


def read_intervals(url: str) -> pd.DataFrame:
    """The anomaly intervals at `url` (as parse-reports writes them), checked.

    Raises:
        InputError: Not readable parquet, no `start`/`end` timestamp columns, an empty bound (an
            interval without a start would label every row before its end), or an end before its
            start; names the file and the row.
    """
    intervals = storage.read_parquet(url)
    missing = [c for c in ("start", "end") if c not in intervals.columns]
    if missing:
        raise InputError(f"intervals {url} lack column(s) {', '.join(missing)}: write them with parse-reports")
    for column in ("start", "end"):
        if not pd.api.types.is_datetime64_any_dtype(intervals[column]):
            raise InputError(f"intervals {url}: column '{column}' is {intervals[column].dtype}, not timestamps")
        empty = np.flatnonzero(intervals[column].isna().to_numpy())
        if empty.size:
            raise InputError(f"intervals {url}: row {int(empty[0])} has no {column} ({empty.size} such row(s))")
    backwards = np.flatnonzero((intervals["end"] < intervals["start"]).to_numpy())
    if backwards.size:
        raise InputError(f"intervals {url}: row {int(backwards[0])} ends before it starts")
    return intervals


def run_parse_reports(
    reports_url: str,
    out_url: str,
    id_column: str = "ID",
    start_column: str = "EVENT GMT (DOY/HH:MM:SS)",
    end_column: str = "Duration/End GMT",
) -> int:
    """Parse the reports file into an intervals parquet file; return the interval count."""
    intervals = parse_reports(read_reports(reports_url), reports_url, id_column, start_column, end_column)
    storage.write_parquet(intervals, out_url)
    return len(intervals)


def run_label_series(
    telemetry_url: str,
    intervals_url: str,
    out_url: str,
    tasks: Tasks,
    label_column: str = "label",
    batch_rows: int = 65_536,
    scratch_url: str = "",
) -> dict[str, int]:
    """Add a 0/1 `label_column` to the telemetry: 1 where a row's grid period overlaps an anomaly
    interval (see `label_rows`; the period is the telemetry's median step, as preprocess's grid).

    An interval join per part of the telemetry (a dataset), one Dask task per part, each streaming
    its part in batches of `batch_rows` rows into the same part of the output: memory holds a
    batch per worker thread and the intervals, whatever the number of rows.

    Args:
        tasks: Where the tasks run (`cluster.dask.step_tasks`).
        scratch_url: See `datasets.map_parts` (workers in pods of their own).

    Raises:
        InputError: The telemetry is not readable parquet, has no time index, or has the column.
    """
    intervals = read_intervals(intervals_url)
    if label_column in datasets.schema(telemetry_url).names:
        raise InputError(f"telemetry {telemetry_url} already has a column '{label_column}'")
    period = grid_period_ns(telemetry_url)
    args = (to_ns(intervals["start"]), to_ns(intervals["end"]), period, label_column, batch_rows, telemetry_url)
    counts = datasets.map_parts(tasks, telemetry_url, [out_url], _label_part, args, scratch_url, "label")
    return {
        "rows": sum(rows for rows, _ in counts),
        "anomalous_rows": sum(anomalous for _, anomalous in counts),
        "intervals": len(intervals),
        "period_s": period / 1e9,
    }


def grid_period_ns(url: str) -> int:
    """The grid period of a time-indexed dataset: its median step (one streaming pass over its
    time index; 0 for fewer than two rows).

    Raises:
        InputError: The dataset has no time index.
    """
    from container_component_src.data.segments import median_step_ns

    return int(median_step_ns(datasets.time_index_ns(frame, url) for frame in datasets.iter_frames(url, [])))


def _label_part(
    part_url: str,
    targets: list[str],
    starts: np.ndarray,
    ends: np.ndarray,
    period_ns: int,
    label_column: str,
    batch_rows: int,
    telemetry_url: str,
) -> tuple[list[datasets.Part], tuple[int, int]]:
    """One Dask task of `run_label_series`: label one part; its rows and anomalous rows."""
    out = datasets.PartWriter(targets[0])
    anomalous = 0
    try:
        for frame in datasets.iter_part(part_url, batch_rows=batch_rows):
            if not isinstance(frame.index, pd.DatetimeIndex):
                raise InputError(
                    f"telemetry {telemetry_url} has no time index (preprocess writes one): its rows cannot be labelled"
                )
            labels = label_rows(to_ns(frame.index), starts, ends, period_ns)
            out.write(frame.assign(**{label_column: labels}))
            anomalous += int(labels.sum())
    except BaseException:
        out.abort()
        raise
    return [out.close()], (out.rows, anomalous)
