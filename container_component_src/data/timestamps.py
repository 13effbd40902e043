"""One strict timestamp parser for every time a user writes: the sources and interval files of
import-telemetry, and the split's test periods. A format is unambiguous or given, never guessed:

- ISO 8601: `2021-03-01`, `2021-03-01T01:00`, `2021-03-01 01:00:00.123456789`;
- year first with slashes: `2021/03/01 01:00:00`; day of year: `2021/060/01:00:00`;
- day first (`01/03/2021`, `01.03.2021`, `01-03-2021`, with a time) only when `dayfirst` is set:
  `01/03/2021` is March 1st in Europe and January 3rd in the US;
- any other text with an explicit strptime `fmt` (`%m/%d/%Y %H:%M`, `%d %b %Y %H:%M:%S`);
- numbers since the epoch, only with a `unit`: exact to the nanosecond, from integer or decimal text.

The time's fraction, up to nanoseconds, is optional row by row. A zone is an offset (`Z`,
`+01:00`, `+0100`, `+01`) or an IANA name after a space (`2021-03-01 01:00 Europe/Berlin`; the
legacy names `CET`, `EST` are IANA names too, with their own rules); any other name (`PST`,
`MESZ`) is refused rather than dropped. Times without a zone are in `timezone`; a column mixes
zoned and naive times never. A leap second (`23:59:60`) is refused: UTC timestamps here have none.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd

from container_component_src.errors import OptionError
from container_component_src.storage import InputError

EPOCH_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
NS_PER_DAY = 86_400 * 10**9
# What a nanosecond timestamp can hold: 1677-09-21 to 2262-04-11.
FIRST_YEAR, LAST_YEAR = 1678, 2261

_TIME = r"(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<f>\d{1,9}))?)?"
_ZONE = r"(?P<zone>Z|[+-]\d{2}(?::?\d{2})?| [A-Za-z][A-Za-z0-9_+/-]*)?"
FAMILIES = {
    "ISO 8601 (2021-03-01 01:00:00[.fraction][zone])": (
        rf"^(?P<y>\d{{4}})-(?P<m>\d{{2}})-(?P<d>\d{{2}})(?:[T ]{_TIME})?{_ZONE}$"
    ),
    "year/month/day (2021/03/01 01:00:00)": (
        rf"^(?P<y>\d{{4}})/(?P<m>\d{{1,2}})/(?P<d>\d{{1,2}})(?:[T ]{_TIME})?{_ZONE}$"
    ),
    "year/day of year/time (2021/060/01:00:00)": rf"^(?P<y>\d{{4}})/(?P<doy>\d{{3}})/{_TIME}{_ZONE}$",
    "day first (01/03/2021 01:00:00)": (
        rf"^(?P<d>\d{{1,2}})(?P<sep>[/.-])(?P<m>\d{{1,2}})(?P=sep)(?P<y>\d{{4}})(?:[T ]{_TIME})?{_ZONE}$"
    ),
}
DAY_FIRST = "day first (01/03/2021 01:00:00)"
_NUMBER = r"^[+-]?\d+(?:\.\d+)?$"


@dataclass(frozen=True)
class TimeFormat:
    """How the times of a column are written.

    Attributes:
        timezone: IANA zone of times written without one.
        unit: Unit of numbers since the epoch (s, ms, us, ns); numbers are refused without it.
        dayfirst: Dates such as 01/03/2021 are day first (else they are refused as ambiguous).
        fmt: A strptime format every value follows (for forms not listed above).
    """

    timezone: str = "UTC"
    unit: str = ""
    dayfirst: bool = False
    fmt: str = ""

    def validate(self) -> None:
        if self.unit not in ("", *EPOCH_UNITS):
            raise OptionError(f"--timestamp-unit must be one of {', '.join(EPOCH_UNITS)}, got {self.unit!r}")
        _zone(self.timezone, "--timezone")


def _zone(name: str, what: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise OptionError(f"{what} {name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None


class _Cells:
    """The values of a column and the row number of each, so messages name a value as the user
    finds it (a CSV's file line: blank lines counted)."""

    def __init__(self, where: str, values: pd.Series, rows: np.ndarray | None, first_row: int) -> None:
        self.where, self.values = where, values
        self.rows = np.arange(len(values)) + first_row if rows is None else np.asarray(rows)

    def at(self, bad: np.ndarray | int) -> str:
        """`where` and "row N value V" of the first True of `bad` (or of position `bad`)."""
        position = int(np.flatnonzero(bad)[0]) if isinstance(bad, np.ndarray) else bad
        return f"{self.where} row {int(self.rows[position])} value {self.values.iloc[position]!r}"


def parse_times(
    values: pd.Series, where: str, spec: TimeFormat, rows: np.ndarray | None = None, first_row: int = 2
) -> pd.DatetimeIndex:
    """UTC nanosecond timestamps of a column, by the rules of this module.

    Args:
        values: The column: text, numbers, or datetimes (parquet).
        where: The file and column, as messages name them.
        spec: How the times are written.
        rows: The row number of each value in messages; default `first_row` on (2: a CSV line
            after its header).

    Raises:
        InputError: A value is empty, does not parse, is out of range, or does not follow the
            column's form; names `where`, the row and the value.
    """
    values = values.reset_index(drop=True)
    cells = _Cells(where, values, rows, first_row)
    if values.isna().any():
        raise InputError(f"{where} row {int(cells.rows[np.flatnonzero(values.isna().to_numpy())[0]])} is empty")
    if pd.api.types.is_datetime64_any_dtype(values):
        times = pd.DatetimeIndex(values)
        return _to_utc(times, where, spec.timezone) if times.tz is None else times.tz_convert("UTC").as_unit("ns")
    if pd.api.types.is_bool_dtype(values):
        raise InputError(f"{where} holds true/false values, not times")
    if pd.api.types.is_numeric_dtype(values):
        return _epoch_numbers(values, cells, spec)
    text = values.astype(str).str.strip()
    cells.values = text
    if spec.fmt:
        return _with_format(text, cells, spec)
    if re.fullmatch(_NUMBER, text.iloc[0]):
        return _epoch_text(text, cells, spec)
    return _with_family(text, cells, spec)


def parse_timestamp(text: str, what: str, timezone: str = "UTC") -> pd.Timestamp:
    """One timestamp an option (`what`) names: ISO 8601, by the same rules; naive in `timezone`.

    Raises:
        OptionError: Not ISO 8601, or a value, zone or local time that does not exist.
    """
    iso = next(iter(FAMILIES))
    if not re.fullmatch(FAMILIES[iso], text.strip()):
        raise OptionError(f"{what} {text!r} is not an ISO 8601 timestamp (2021-03-01 01:00:00[.fraction][zone])")
    try:
        return parse_times(pd.Series([text]), what, TimeFormat(timezone=timezone), first_row=1)[0]
    except InputError as exc:
        raise OptionError(str(exc).replace(f" row 1 value {text.strip()!r}", f" {text.strip()!r}")) from None


def _no_unit(cells: _Cells) -> InputError:
    return InputError(
        f"{cells.where} holds numbers ({cells.values.iloc[0]!r}...): if they are times since the epoch, "
        "give --timestamp-unit s, ms, us or ns"
    )


def _beyond(cells: _Cells, bad: np.ndarray | int, spec: TimeFormat) -> InputError:
    return InputError(
        f"{cells.at(bad)} is beyond the timestamps' range (1677-09-21 to 2262-04-11) in {spec.unit} since the epoch"
    )


def _epoch_numbers(values: pd.Series, cells: _Cells, spec: TimeFormat) -> pd.DatetimeIndex:
    if not spec.unit:
        raise _no_unit(cells)
    scale = EPOCH_UNITS[spec.unit]
    if pd.api.types.is_integer_dtype(values):
        numbers = values.to_numpy()
        limit = np.iinfo(np.int64).max // scale
        beyond = (numbers > limit) | (numbers < -limit) if numbers.dtype.kind == "i" else numbers > limit
        if beyond.any():
            raise _beyond(cells, beyond, spec)
        return _checked(numbers.astype(np.int64) * scale, cells)
    numbers = values.to_numpy(np.float64) * scale
    beyond = ~np.isfinite(numbers) | (np.abs(numbers) >= 2.0**63)
    if beyond.any():
        raise _beyond(cells, beyond, spec)
    return _checked(np.round(numbers).astype(np.int64), cells)


def _epoch_text(text: pd.Series, cells: _Cells, spec: TimeFormat) -> pd.DatetimeIndex:
    """Numbers written as text (the first row is one), read exactly: a float would drift by tens
    of nanoseconds."""
    if not spec.unit:
        raise _no_unit(cells)
    numbers = text.str.fullmatch(_NUMBER).to_numpy()
    if not numbers.all():
        raise InputError(f"{cells.at(~numbers)} is not a number like row {int(cells.rows[0])} (times since the epoch)")
    scale = EPOCH_UNITS[spec.unit]
    places = len(str(scale)) - 1  # the fraction's digits a nanosecond can hold in this unit
    ns = np.empty(len(text), np.int64)
    for position, value in enumerate(text.tolist()):
        whole, _, fraction = value.partition(".")
        sign = -1 if whole.startswith("-") else 1
        exact = int(whole) * scale + sign * int(fraction.ljust(places, "0")[:places] or 0)
        if fraction.rstrip("0")[places:]:
            raise InputError(f"{cells.at(position)} is finer than a nanosecond in {spec.unit}")
        if not -(2**63) < exact < 2**63:
            raise _beyond(cells, position, spec)
        ns[position] = exact
    return _checked(ns, cells)


def _checked(ns: np.ndarray, cells: _Cells) -> pd.DatetimeIndex:
    """UTC timestamps of nanoseconds, refusing NaT's value (the int64 minimum)."""
    nat = ns == np.iinfo(np.int64).min
    if nat.any():
        raise InputError(f"{cells.at(nat)} is beyond the timestamps' range")
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")


def _with_format(text: pd.Series, cells: _Cells, spec: TimeFormat) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(text, format=spec.fmt, exact=True, errors="coerce")
    if parsed.isna().any():
        raise InputError(f"{cells.at(parsed.isna().to_numpy())} does not follow --timestamp-format {spec.fmt!r}")
    times = pd.DatetimeIndex(parsed)
    if times.tz is None:
        return _to_utc(times, cells.where, spec.timezone)
    return times.tz_convert("UTC").as_unit("ns")


def _with_family(text: pd.Series, cells: _Cells, spec: TimeFormat) -> pd.DatetimeIndex:
    """Times of one of `FAMILIES`: the first value's, which every row must follow."""
    first = text.iloc[0]
    family = next((name for name, pattern in FAMILIES.items() if re.fullmatch(pattern, first)), None)
    if family is None:
        raise InputError(
            f"{cells.at(0)} is not a timestamp this parser reads: ISO 8601 "
            "(2021-03-01 01:00:00[.fraction][Z|+01:00| Europe/Berlin]), 2021/03/01 01:00:00, 2021/060/01:00:00, "
            "or day first with --dayfirst; give its --timestamp-format (e.g. '%m/%d/%Y %H:%M') otherwise"
        )
    if family == DAY_FIRST and not spec.dayfirst:
        raise InputError(
            f"{cells.at(0)} has its day and month in an order the text does not tell: "
            "give --dayfirst (01/03/2021 is March 1st), or --timestamp-format '%m/%d/%Y %H:%M:%S' for month first"
        )
    parts = text.str.extract(FAMILIES[family])
    unmatched = parts["y"].isna().to_numpy()
    if unmatched.any():
        raise InputError(
            f"{cells.at(unmatched)} is not {family.split(' (')[0]} like row {int(cells.rows[0])} ({first!r}): "
            "one form per column"
        )
    return _zoned(_civil_ns(parts, cells), parts["zone"], cells, spec.timezone)


def _number(parts: pd.DataFrame, name: str, default: int = 0) -> np.ndarray:
    if name not in parts:
        return np.full(len(parts), default, np.int64)
    return parts[name].fillna(str(default)).astype(np.int64).to_numpy()


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    year = year - (month <= 2)
    era = np.floor_divide(year, 400)
    year_of_era = year - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _civil_ns(parts: pd.DataFrame, cells: _Cells) -> np.ndarray:
    """Nanoseconds since the epoch of the date and time fields (no zone yet), range-checked."""
    year, hour, minute, second = (_number(parts, name) for name in ("y", "H", "M", "S"))
    fraction = parts["f"].fillna("").str.ljust(9, "0").replace("", "0").astype(np.int64).to_numpy()
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    if "doy" in parts:
        day_of_year = _number(parts, "doy")
        bad_date = (day_of_year < 1) | (day_of_year > 365 + leap)
        days = _days_from_civil(year, np.ones_like(year), np.ones_like(year)) + day_of_year - 1
    else:
        month, day = _number(parts, "m"), _number(parts, "d")
        lengths = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 1, 12) - 1] + (
            (month == 2) & leap
        )
        bad_date = (month < 1) | (month > 12) | (day < 1) | (day > lengths)
        days = _days_from_civil(year, month, day)
    problems = (
        (bad_date, "is not a date of the calendar"),
        ((hour > 23) | (minute > 59) | (second > 60), "is not a time of day"),
        (second == 60, "is a leap second: UTC timestamps here have none (write 23:59:59.999999999 or the next second)"),
        ((year < FIRST_YEAR) | (year > LAST_YEAR), "is beyond the timestamps' range (1677-09-21 to 2262-04-11)"),
    )
    for bad, why in problems:
        if bad.any():
            raise InputError(f"{cells.at(bad)} {why}")
    return days * NS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 10**9 + fraction


def _zoned(ns: np.ndarray, zones: pd.Series, cells: _Cells, timezone: str) -> pd.DatetimeIndex:
    """UTC timestamps from local nanoseconds and each row's zone (an offset, a name, or none)."""
    zones = zones.fillna("")
    zoned = (zones != "").to_numpy()
    if zoned.any() and not zoned.all():
        raise InputError(f"{cells.at(zoned != zoned[0])}: times with and without a zone are mixed")
    if not zoned.any():
        return _to_utc(pd.DatetimeIndex(ns.view("datetime64[ns]")), cells.where, timezone)
    utc = ns.copy()
    offsets = zones.str.fullmatch(r"Z|[+-]\d{2}(?::?\d{2})?").to_numpy()
    if offsets.any():
        digits = zones[offsets].str.replace(":", "").str.lstrip("Z")
        hours = digits.str[1:3].replace("", "0").astype(np.int64).to_numpy()
        minutes = digits.str[3:5].replace("", "0").astype(np.int64).to_numpy()
        sign = np.where(digits.str[:1].to_numpy() == "-", -1, 1)
        invalid = np.zeros(len(ns), bool)
        invalid[np.flatnonzero(offsets)[(hours > 23) | (minutes > 59)]] = True
        if invalid.any():
            raise InputError(f"{cells.at(invalid)} has no valid UTC offset")
        utc[offsets] = ns[offsets] - sign * (hours * 3600 + minutes * 60) * 10**9
    for name in zones[~offsets].unique():
        rows = (zones == name).to_numpy()
        zone = name.strip()
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InputError(
                f"{cells.at(rows)}: {zone!r} is not an IANA time zone "
                "(give an offset such as +01:00, or a name such as Europe/Berlin)"
            ) from None
        local = pd.DatetimeIndex(ns[rows].view("datetime64[ns]"))
        utc[rows] = _to_utc(local, f"{cells.where} (zone {zone})", zone).asi8
    return pd.DatetimeIndex(utc.view("datetime64[ns]")).tz_localize("UTC")


def _to_utc(times: pd.DatetimeIndex, where: str, timezone: str) -> pd.DatetimeIndex:
    """Naive local times in `timezone` as UTC; a time that does not exist, or exists twice, is refused."""
    try:
        # A ZoneInfo, not the name: pandas 2 resolves a name through pytz, whose rules stop in 2037
        # (no summer time after it) and give New York its local mean time in 1900.
        times = times.tz_localize(zoneinfo.ZoneInfo(timezone), ambiguous="raise", nonexistent="raise")
    except Exception as exc:  # pytz's NonExistentTimeError / AmbiguousTimeError
        if type(exc).__name__ not in ("NonExistentTimeError", "AmbiguousTimeError"):
            raise
        raise InputError(
            f"{where}: {exc} does not exist or is ambiguous in {timezone} (daylight saving): "
            "give times with a zone, or --timezone UTC"
        ) from None
    return times.tz_convert("UTC").as_unit("ns")
