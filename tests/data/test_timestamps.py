"""The one timestamp parser: each case of the inputs round that was read wrong, and a generated
comparison of import-telemetry with the instants the files were written from."""

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from container_component_src.data.import_telemetry import ImportOptions, run_import_telemetry
from container_component_src.data.timestamps import TimeFormat, parse_times
from container_component_src.storage import InputError


def _parse(values: list, **spec) -> list[str]:
    return [t.isoformat() for t in parse_times(pd.Series(values), "f.csv: column 't'", TimeFormat(**spec))]


@pytest.mark.parametrize(
    ("values", "spec", "expected"),
    [
        # 1: a zone name is its zone (CET keeps its summer time), never dropped for UTC.
        (
            ["2021-03-01 01:00:00 CET", "2021-07-01 01:00:00 CET"],
            {},
            ["2021-03-01T00:00:00+00:00", "2021-06-30T23:00:00+00:00"],
        ),
        (["2021-03-01 01:00:00 EST"], {}, ["2021-03-01T06:00:00+00:00"]),
        # 2, 3: day first only when said so, whatever the separator, and the zone applies.
        (
            ["01/03/2021 10:00", "13/03/2021 10:00"],
            {"dayfirst": True},
            ["2021-03-01T10:00:00+00:00", "2021-03-13T10:00:00+00:00"],
        ),
        (["02-01-2000"], {"dayfirst": True, "timezone": "Europe/Berlin"}, ["2000-01-01T23:00:00+00:00"]),
        (["01.03.2021 00:30"], {"dayfirst": True}, ["2021-03-01T00:30:00+00:00"]),
        # 17: decimal epoch seconds, exact to the nanosecond.
        (
            ["1609459200.123456789", "-1.5"],
            {"unit": "s"},
            ["2021-01-01T00:00:00.123456789+00:00", "1969-12-31T23:59:58.500000+00:00"],
        ),
        # Refused before, valid: a fraction on some rows only; hour-only offsets; month names with a format.
        (
            ["2021-01-01T00:00:00", "2021-01-01T00:00:00.5"],
            {},
            ["2021-01-01T00:00:00+00:00", "2021-01-01T00:00:00.500000+00:00"],
        ),
        (["2021-01-01T05:00+05"], {}, ["2021-01-01T00:00:00+00:00"]),
        (
            ["May 3 2021 10:00", "Jun 4 2021 11:00"],
            {"fmt": "%b %d %Y %H:%M"},
            ["2021-05-03T10:00:00+00:00", "2021-06-04T11:00:00+00:00"],
        ),
        (["2020/366/23:59:59.999999999"], {}, ["2020-12-31T23:59:59.999999999+00:00"]),
    ],
)
def test_times_that_were_read_wrong_are_read_right(values: list, spec: dict, expected: list[str]) -> None:
    assert _parse(values, **spec) == expected


@pytest.mark.parametrize(
    ("values", "spec", "message"),
    [
        (["2021-03-01 01:00:00 PST"], {}, "row 2 value '2021-03-01 01:00:00 PST': 'PST' is not an IANA time zone"),
        (["01/03/2021 10:00"], {}, "day and month in an order the text does not tell: give --dayfirst"),
        (["2021-01-01 00:00", "01/02/2021 00:00"], {}, "row 3 value '01/02/2021 00:00' is not ISO 8601 like row 2"),
        (["-9223372036854775808"], {"unit": "ns"}, "beyond the timestamps' range"),
        (["9223372036854775808"], {"unit": "ns"}, "beyond the timestamps' range"),
        ([2**63], {"unit": "ns"}, "beyond the timestamps' range"),
        ([10**12], {"unit": "s"}, "beyond the timestamps' range"),
        (["1.0000000001"], {"unit": "s"}, "finer than a nanosecond"),
        (["2016-12-31 23:59:60"], {}, "is a leap second"),
        (["2021-02-29"], {}, "is not a date of the calendar"),
        (["2021-01-01 24:00"], {}, "is not a time of day"),
        (["3000-01-01"], {}, "beyond the timestamps' range"),
        (["2021-01-01 00:00Z", "2021-01-01 01:00"], {}, "row 3 .* times with and without a zone are mixed"),
        (["1609459200"], {}, "give --timestamp-unit"),
        (["03/05/2021"], {"fmt": "%Y-%m-%d"}, "does not follow --timestamp-format '%Y-%m-%d'"),
        (["2021-03-28 02:30"], {"timezone": "Europe/Berlin"}, "does not exist or is ambiguous in Europe/Berlin"),
    ],
)
def test_what_cannot_be_read_for_sure_is_refused(values: list, spec: dict, message: str) -> None:
    with pytest.raises(InputError, match=f"f.csv: column 't'.*{message}"):
        _parse(values, **spec)


def test_parquet_datetimes_are_taken_as_they_are() -> None:
    """A tz-aware column whose later rows only have a fraction was refused (text formats per file)."""
    times = pd.Series(
        pd.to_datetime(["2021-01-01 00:00:00", "2021-01-01 00:00:00.25"], format="ISO8601").tz_localize("Europe/Berlin")
    )
    assert _parse(times) == ["2020-12-31T23:00:00+00:00", "2020-12-31T23:00:00.250000+00:00"]
    naive = pd.Series(pd.to_datetime(["2021-07-01 12:00"]))
    assert _parse(naive, timezone="America/New_York") == ["2021-07-01T16:00:00+00:00"]


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "CET", "EST"]
FIRST, LAST = datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def _instant(rng: random.Random) -> int:
    """A UTC instant in ns with a random number of meaningful fraction digits."""
    seconds = rng.randrange(int(FIRST.timestamp()), int(LAST.timestamp()))
    digits = rng.choice([0, 0, 1, 3, 6, 9])
    fraction = rng.randrange(10**digits) * 10 ** (9 - digits) if digits else 0
    return seconds * 10**9 + fraction


def _fraction(ns: int) -> str:
    digits = f"{ns % 10**9:09d}".rstrip("0")
    return f".{digits}" if digits else ""


def _ambiguous(local: datetime, zone: ZoneInfo) -> bool:
    naive = local.replace(tzinfo=None)
    return naive.replace(tzinfo=zone, fold=0).utcoffset() != naive.replace(tzinfo=zone, fold=1).utcoffset()


def _text(ns: int, style: str, zone: str, rng: random.Random) -> str | None:
    """`ns` written in `style`, local to `zone` where the style has no zone of its own (None: that
    local time is ambiguous there, so no file could name it)."""
    utc = datetime.fromtimestamp(ns // 10**9, UTC)
    if style == "epoch-s":
        return f"{ns // 10**9}{_fraction(ns)}" if ns >= 0 else None
    if style in ("offset", "offset-compact", "offset-hours"):
        minutes = rng.randrange(-12 * 60, 14 * 60 + 1, 60 if style == "offset-hours" else 15)
        local = utc + timedelta(minutes=minutes)
        sign, value = ("-" if minutes < 0 else "+"), abs(minutes)
        suffix = {
            "offset": f"{sign}{value // 60:02d}:{value % 60:02d}",
            "offset-compact": f"{sign}{value // 60:02d}{value % 60:02d}",
            "offset-hours": f"{sign}{value // 60:02d}",
        }[style]
        return f"{local:%Y-%m-%dT%H:%M:%S}{_fraction(ns)}{suffix}"
    local = utc.astimezone(ZoneInfo(zone))
    if _ambiguous(local, ZoneInfo(zone)):
        return None
    clock = f"{local:%H:%M:%S}{_fraction(ns)}"
    return {
        "iso-named": f"{local:%Y-%m-%d} {clock} {zone}",
        "iso-naive": f"{local:%Y-%m-%dT}{clock}",
        "slashes": f"{local:%Y/%m/%d} {clock}",
        "doy": f"{local:%Y/%j/}{clock}",
        "dayfirst": f"{local:%d.%m.%Y} {clock}",
    }[style]


STYLES = ["iso-named", "iso-naive", "slashes", "doy", "dayfirst", "offset", "offset-compact", "offset-hours", "epoch-s"]


def test_import_reads_generated_files_as_the_instants_they_were_written_from(tmp_path: Path) -> None:
    """2,000 rows in 40 CSV files, each in one style (ISO with zone names, offsets or none; year
    first; day of year; day first; decimal epoch seconds) and zone: the archives hold exactly the
    instants the text was written from (Python's datetime and zoneinfo, not pandas)."""
    rng, compared = random.Random(7), 0
    for number in range(40):
        style, zone = STYLES[number % len(STYLES)], rng.choice(ZONES)
        instants: dict[int, str] = {}
        while len(instants) < 50:
            ns = _instant(rng)
            text = _text(ns, style, zone, rng)
            if text is not None:
                instants[ns] = text
        source = tmp_path / f"s{number}.csv"
        pd.DataFrame({"time": list(instants.values()), "x": 1.0}).to_csv(source, index=False)
        options = ImportOptions(
            timestamp_column="time",
            timezone=zone,
            dayfirst=style == "dayfirst",
            timestamp_unit="s" if style == "epoch-s" else "",
        )
        archives = tmp_path / f"a{number}"
        run_import_telemetry([str(source)], str(archives), str(tmp_path / f"r{number}.csv"), options)
        read = pd.concat(pd.read_parquet(p) for p in sorted(archives.glob("*.parquet")))
        got = np.sort(pd.DatetimeIndex(read["normalizedTime"]).as_unit("ns").asi8)
        np.testing.assert_array_equal(got, np.sort(np.fromiter(instants, np.int64)), err_msg=f"{style} in {zone}")
        compared += len(got)
    assert compared == 2_000


FLOAT32_EDGES = np.array(
    [np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, 0.1, -0.0, 16777217.0],
)


def test_parquet_sources_keep_their_instants_and_float32_values(tmp_path: Path) -> None:
    """Parquet times as the file types them (zoned, naive in --timezone, integer epochs) and values
    at float32's edges (largest, smallest normal, a subnormal, one past 2^24) arrive exactly."""
    rng = random.Random(11)
    for number, kind in enumerate(["zoned", "naive", "epoch-ms"] * 4):
        zone = rng.choice(ZONES)
        instants = sorted({_instant(rng) // 10**6 * 10**6 for _ in range(60)})
        utc = pd.DatetimeIndex(np.array(instants, "datetime64[ns]")).tz_localize("UTC")
        if kind == "zoned":
            column = pd.Series(utc.tz_convert(ZoneInfo(zone)))
        elif kind == "naive":
            local = [datetime.fromtimestamp(ns // 10**9, UTC).astimezone(ZoneInfo(zone)) for ns in instants]
            keep = [i for i, t in enumerate(local) if not _ambiguous(t, ZoneInfo(zone))]
            utc, instants = utc[keep], [instants[i] for i in keep]
            column = pd.Series(utc.tz_convert(ZoneInfo(zone)).tz_localize(None))  # not pytz: see timestamps._to_utc
        else:
            column = pd.Series(np.array(instants) // 10**6)
        values = np.resize(FLOAT32_EDGES, len(instants))
        source = tmp_path / f"s{number}.parquet"
        pd.DataFrame({"time": column, "x": values}).to_parquet(source)
        options = ImportOptions(
            timestamp_column="time", timezone=zone, timestamp_unit="ms" if kind == "epoch-ms" else ""
        )
        archives = tmp_path / f"a{number}"
        run_import_telemetry([str(source)], str(archives), str(tmp_path / f"r{number}.csv"), options)
        read = pd.concat(pd.read_parquet(p) for p in sorted(archives.glob("*.parquet"))).sort_values("normalizedTime")
        np.testing.assert_array_equal(pd.DatetimeIndex(read["normalizedTime"]).as_unit("ns").asi8, instants)
        np.testing.assert_array_equal(read["x"].to_numpy(), values.astype(np.float32), err_msg=f"{kind} in {zone}")
