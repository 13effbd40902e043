"""Anomaly labels: reports -> validated UTC intervals -> a 0/1 label per telemetry row."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd

from container_component_src import storage
from container_component_src.storage import InputError

DOY_FORMAT = "%Y/%j/%H:%M:%S"
_DOY = re.compile(r"^\d{4}/\d{1,3}/\d{1,2}:\d{2}:\d{2}(\.\d+)?$")
_DURATION = re.compile(r"^(?:(\d+)/)?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


def read_reports(url: str) -> pd.DataFrame:
    """Read an anomaly-report table from .xls, .xlsx or .csv, every cell as text."""
    storage.require(url, "reports file")
    suffix = url.rsplit(".", 1)[-1].lower()
    if suffix not in ("xls", "xlsx", "csv"):
        raise InputError(f"reports file {url} must be .xls, .xlsx or .csv")
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        data = io.BytesIO(handle.read())
    if suffix == "csv":
        return pd.read_csv(data, dtype=str, keep_default_na=False)
    return pd.read_excel(data, dtype=str, engine="calamine", keep_default_na=False)


def parse_doy(text: str) -> pd.Timestamp:
    """Parse 'YYYY/DOY/HH:MM:SS' (UTC); raise ValueError when it is not that."""
    text = text.strip()
    if not _DOY.match(text):
        raise ValueError(text)
    fmt = DOY_FORMAT + (".%f" if "." in text else "")
    return pd.to_datetime(text, format=fmt, utc=True)


def parse_duration(text: str) -> pd.Timedelta:
    """Parse 'HH:MM:SS' or 'D/HH:MM:SS'; raise ValueError when it is not that."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(text)
    days, hours, minutes, seconds = match.groups()
    return pd.Timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def parse_reports(raw: pd.DataFrame, source: str, id_column: str, start_column: str, end_column: str) -> pd.DataFrame:
    """Return one row per report: id, UTC start and end (end given as a time or a duration).

    Raises:
        InputError: A column is missing, a time does not parse, or an end precedes its start;
            the message names the file, the column, the report and the value.
    """
    missing = [c for c in (id_column, start_column, end_column) if c not in raw.columns]
    if missing:
        raise InputError(f"reports file {source} has no column {', '.join(repr(c) for c in missing)}")
    rows = []
    for position, (rid, start_text, end_text) in enumerate(
        raw[[id_column, start_column, end_column]].itertuples(index=False, name=None)
    ):
        where = f"reports file {source}, report {rid or f'in row {position + 2}'}"
        try:
            start = parse_doy(str(start_text))
        except ValueError:
            raise InputError(
                f"{where}: column '{start_column}' value {start_text!r} is not YYYY/DOY/HH:MM:SS"
            ) from None
        end_text = str(end_text).strip()
        try:
            end = parse_doy(end_text) if _DOY.match(end_text) else start + parse_duration(end_text)
        except ValueError:
            raise InputError(
                f"{where}: column '{end_column}' value {end_text!r} is neither YYYY/DOY/HH:MM:SS "
                "nor a duration HH:MM:SS"
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


def label_rows(times_ns: np.ndarray, starts_ns: np.ndarray, ends_ns: np.ndarray) -> np.ndarray:
    """Return 1 where a time falls in any closed interval [start, end], else 0.

    Sort the intervals once, then one binary search per row: O((n + m) log m), no Python loop.
    Overlapping intervals are fine: after sorting by start, the running maximum of the ends
    tells whether any interval that started before a time is still open at it.
    """
    if starts_ns.size == 0:
        return np.zeros(times_ns.size, dtype=np.int8)
    order = np.argsort(starts_ns, kind="stable")
    starts, reach = starts_ns[order], np.maximum.accumulate(ends_ns[order])
    idx = np.searchsorted(starts, times_ns, side="right") - 1
    inside = (idx >= 0) & (times_ns <= reach[np.clip(idx, 0, None)])
    return inside.astype(np.int8)


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
    telemetry_url: str, intervals_url: str, out_url: str, label_column: str = "label"
) -> dict[str, int]:
    """Add a 0/1 `label_column` to the telemetry: 1 inside any anomaly interval."""
    telemetry = storage.read_parquet(telemetry_url)
    intervals = storage.read_parquet(intervals_url)
    if label_column in telemetry.columns:
        raise InputError(f"telemetry {telemetry_url} already has a column '{label_column}'")
    labels = label_rows(to_ns(telemetry.index), to_ns(intervals["start"]), to_ns(intervals["end"]))
    labelled = telemetry.assign(**{label_column: labels})
    storage.write_parquet(labelled, out_url)
    return {"rows": len(labelled), "anomalous_rows": int(labels.sum()), "intervals": len(intervals)}
