"""Property-based tests of the data inputs (bounded examples): every generated input either gives
a one-line error (exit 1, no traceback) or output that round-trips exactly; and kill tests for
the steps that write folders."""

from __future__ import annotations

import calendar
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from container_component_src.main import app

runner = CliRunner()
FAST = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
COLUMNS = "ID,EVENT GMT (DOY/HH:MM:SS),Duration/End GMT"


def _one_line_error(result: object) -> bool:
    output = result.output  # type: ignore[attr-defined]
    errors = [line for line in output.splitlines() if "Error: " in line]
    return result.exit_code == 1 and len(errors) == 1 and "Traceback" not in output  # type: ignore[attr-defined]


def _parse(folder: Path, start: str, end: str) -> tuple[object, pd.DataFrame | None]:
    (folder / "r.csv").write_text(f"{COLUMNS}\nAR-1,{start},{end}\n")
    result = runner.invoke(app, ["parse-reports", "--reports", str(folder / "r.csv"), "--out", str(folder / "i.pq")])
    return result, pd.read_parquet(folder / "i.pq") if result.exit_code == 0 else None


fraction = st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9))


@FAST
@given(
    year=st.integers(1990, 2100),
    doy=st.integers(0, 367),
    hms=st.tuples(st.integers(0, 25), st.integers(0, 61), st.integers(0, 61)),
    digits=fraction,
)
def test_report_start_times(tmp_path_factory, year: int, doy: int, hms: tuple[int, int, int], digits: str) -> None:
    folder = tmp_path_factory.mktemp("doy")
    text = f"{year}/{doy:03d}/{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}" + (f".{digits}" if digits else "")
    result, intervals = _parse(folder, text, "00:00:01")
    valid = 1 <= doy <= (366 if calendar.isleap(year) else 365) and hms[0] < 24 and hms[1] < 60 and hms[2] < 60
    if not valid:
        assert _one_line_error(result), (text, result.output)
        return
    assert result.exit_code == 0, (text, result.output)
    expected = pd.Timestamp(year=year, month=1, day=1, tz="UTC") + pd.Timedelta(
        days=doy - 1, hours=hms[0], minutes=hms[1], seconds=hms[2], nanoseconds=int(digits.ljust(9, "0") or 0)
    )
    assert intervals["start"].iloc[0] == expected, text


@FAST
@given(
    days=st.one_of(st.none(), st.integers(0, 3)),
    hms=st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
    digits=fraction,
)
def test_report_durations(tmp_path_factory, days: int | None, hms: tuple[int, int, int], digits: str) -> None:
    folder = tmp_path_factory.mktemp("duration")
    text = ("" if days is None else f"{days}/") + f"{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}"
    text += f".{digits}" if digits else ""
    result, intervals = _parse(folder, "2021/001/00:00:00", text)
    if hms[1] >= 60 or hms[2] >= 60:
        assert _one_line_error(result), (text, result.output)
        return
    assert result.exit_code == 0, (text, result.output)
    expected = pd.Timedelta(
        days=days or 0, hours=hms[0], minutes=hms[1], seconds=hms[2], nanoseconds=int(digits.ljust(9, "0") or 0)
    )
    assert intervals["end"].iloc[0] - intervals["start"].iloc[0] == expected, text


values = st.floats(allow_nan=True, allow_infinity=True, width=64)


@FAST
@given(
    offsets=st.lists(st.integers(0, 10**15), min_size=1, max_size=12),
    channel=st.lists(values, min_size=12, max_size=12),
)
def test_csv_imports_round_trip_or_fail_in_one_line(tmp_path_factory, offsets: list[int], channel: list[float]) -> None:
    folder = tmp_path_factory.mktemp("csv")
    times = pd.Timestamp("2021-03-01", tz="UTC") + pd.to_timedelta(offsets, unit="ns")
    cells = channel[: len(offsets)]
    frame = pd.DataFrame(
        {
            "time": [t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond * 1000 + t.nanosecond:09d}Z" for t in times],
            "x": cells,
        }
    )
    frame.to_csv(folder / "t.csv", index=False)
    args = ["import-telemetry", "--source", str(folder / "t.csv"), "--archives", str(folder / "a")]
    result = runner.invoke(app, [*args, "--reports", str(folder / "r.csv"), "--timestamp-column", "time"])
    numbers = np.array(cells, dtype=np.float64)
    bad = (~np.isnan(numbers) & ~(np.abs(numbers) <= np.finfo(np.float32).max)).any()
    if bad or len(set(offsets)) < len(offsets):
        assert _one_line_error(result), result.output
        assert not (folder / "a").exists(), "nothing written"
        return
    assert result.exit_code == 0, result.output
    archive = pd.concat(pd.read_parquet(p) for p in sorted((folder / "a").glob("*.parquet")))
    order = np.argsort(offsets, kind="stable")
    assert pd.DatetimeIndex(archive["normalizedTime"]).equals(times[order]), "times exact to the nanosecond"
    np.testing.assert_array_equal(archive["x"].to_numpy(), numbers[order].astype(np.float32))


def _big_archive(path: Path, rows: int = 2_000_000) -> None:
    times = pd.date_range("2021-01-01", periods=rows, freq="1s", tz="UTC")
    rng = np.random.default_rng(0)
    table = pa.table({"normalizedTime": times, **{f"c{i}": rng.normal(size=rows) for i in range(4)}})
    pq.write_table(table, path, row_group_size=100_000)


def _kill_when_started(args: list[str], temporary: str, folder: Path) -> None:
    """Start a step, SIGKILL it as soon as its temporary output folder exists."""
    process = subprocess.Popen(
        [sys.executable, "-m", "container_component_src.main", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(folder.glob(temporary)):
        assert process.poll() is None, "the step ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_a_killed_split_and_preprocess_leave_nothing_the_next_run_trips_on(tmp_path: Path) -> None:
    _big_archive(tmp_path / "eclss_2021.parquet")
    split = [
        "split-archive",
        "--archive",
        str(tmp_path / "eclss_2021.parquet"),
        "--out",
        str(tmp_path / "parts"),
        "--partition-period",
        "1h",
    ]
    _kill_when_started(split, "parts.tmp-*", tmp_path)
    assert list(tmp_path.glob("parts.tmp-*")) and not (tmp_path / "parts").exists(), "killed half-way"
    assert runner.invoke(app, split).exit_code == 0
    assert not list(tmp_path.glob("parts.tmp-*")) and len(list((tmp_path / "parts").glob("*.parquet"))) > 100

    preprocess = [
        "preprocess",
        "--partitions",
        str(tmp_path / "parts"),
        "--out",
        str(tmp_path / "grid"),
        "--quality-report",
        str(tmp_path / "q.json"),
    ]
    _kill_when_started(preprocess, "grid.tmp-*", tmp_path)
    assert not (tmp_path / "grid").exists()
    assert runner.invoke(app, preprocess).exit_code == 0
    assert not list(tmp_path.glob("grid.tmp-*")) and (tmp_path / "grid").is_dir()
