"""Issue 18's bad inputs, one test each: a clear one-line error (exit 1, no traceback) naming the
file, column, row or value, or an explicit, documented behaviour; nothing stale left behind."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from container_component_src.main import app

runner = CliRunner()


def _fails(args: list[str], *needles: str) -> str:
    """Exit 1 with exactly one `Error: ...` line (progress bars may precede it) and no traceback."""
    result = runner.invoke(app, args)
    errors = [line[line.index("Error: ") :] for line in result.output.splitlines() if "Error: " in line]
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _import(tmp_path: Path, source: Path, *extra: str) -> list[str]:
    return [
        "import-telemetry", "--source", str(source), "--archives", str(tmp_path / "archives"),
        "--reports", str(tmp_path / "reports.csv"), "--timestamp-column", "time", *extra,
    ]  # fmt: skip


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- silently wrong before -----------------------------------------------------------------------
def test_1_epoch_numbers_need_a_unit(tmp_path: Path) -> None:
    source = _csv(tmp_path / "t.csv", "time,x\n1614556800,1.0\n1614556810,2.0\n")
    _fails(_import(tmp_path, source), "t.csv", "column 'time' holds numbers", "--timestamp-unit")
    assert runner.invoke(app, _import(tmp_path, source, "--timestamp-unit", "s")).exit_code == 0
    assert [p.name for p in (tmp_path / "archives").iterdir()] == ["telemetry_2021.parquet"]


def test_2_one_date_format_per_file(tmp_path: Path) -> None:
    source = _csv(tmp_path / "t.csv", "time,x\n2021-03-01 00:00:00,1.0\n01/03/2021 00:00:10,2.0\n")
    _fails(_import(tmp_path, source), "t.csv", "column 'time' row 3", "'01/03/2021 00:00:10'", "one form per column")


@pytest.mark.parametrize("value", ["inf", "-inf", "1e40"])
def test_3_infinite_or_huge_values_are_refused_at_import(tmp_path: Path, value: str) -> None:
    source = _csv(tmp_path / "t.csv", f"time,x\n2021-01-01 00:00:00,1.0\n2021-01-01 00:00:10,{value}\n")
    _fails(_import(tmp_path, source), "t.csv", "channel 'x' row 3", "beyond the float32 range")


def test_3_infinite_values_are_refused_by_split_archive_and_fit_scaler(tmp_path: Path) -> None:
    times = pd.date_range("2021-01-01", periods=3, freq="10s", tz="UTC")
    pq.write_table(pa.table({"normalizedTime": times, "x": [1.0, np.inf, 2.0]}), tmp_path / "eclss_2021.parquet")
    args = ["split-archive", "--archive", str(tmp_path / "eclss_2021.parquet"), "--out", str(tmp_path / "parts")]
    _fails(args, "eclss_2021.parquet", "channel 'x' is inf")
    pd.DataFrame({"x": [1.0, np.inf], "label": 0}).to_parquet(tmp_path / "train.parquet")
    _fails(["fit-scaler", "--train", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "s.json")], "channel 'x'")
    assert not (tmp_path / "s.json").exists()


def test_4_a_second_import_never_mixes_with_the_first(tmp_path: Path) -> None:
    first = _csv(tmp_path / "a.csv", "time,x\n2020-01-01 00:00:00,1.0\n2021-01-01 00:00:00,2.0\n")
    second = _csv(tmp_path / "b.csv", "time,x\n2022-01-01 00:00:00,1.0\n")
    assert runner.invoke(app, _import(tmp_path, first)).exit_code == 0
    _fails(_import(tmp_path, second), "is not empty", "--overwrite")
    assert runner.invoke(app, _import(tmp_path, second, "--overwrite")).exit_code == 0
    assert [p.name for p in (tmp_path / "archives").iterdir()] == ["telemetry_2022.parquet"]


def test_5_a_corrupted_archive_is_an_error_naming_it(tmp_path: Path) -> None:
    from container_component_src import storage

    times = pd.date_range("2021-01-01", periods=5000, freq="10s", tz="UTC")
    table = pa.table({"normalizedTime": times, "x": np.random.default_rng(0).normal(size=5000)})
    archive = tmp_path / "eclss_2021.parquet"
    storage.write_table(table, str(archive))
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(reversed(data[middle : middle + 200]))
    archive.write_bytes(bytes(data))
    _fails(["split-archive", "--archive", str(archive), "--out", str(tmp_path / "parts")], "eclss_2021.parquet")
    assert not (tmp_path / "parts").exists()


@pytest.mark.parametrize(
    ("start", "end", "needle"),
    [
        ("2021/366/00:00:00", "01:00:00", "2021/366/00:00:00"),
        ("2021/001/23:59:60", "01:00:00", "23:59:60"),
        ("2021/001/00:00:00", "99:99:99", "99:99:99"),
        ("2021/001/00:00:00", "00:60:00", "00:60:00"),
    ],
)
def test_6_report_dates_and_durations_are_checked(tmp_path: Path, start: str, end: str, needle: str) -> None:
    reports = _csv(tmp_path / "r.csv", f"ID,EVENT GMT (DOY/HH:MM:SS),Duration/End GMT\nAR-1,{start},{end}\n")
    _fails(["parse-reports", "--reports", str(reports), "--out", str(tmp_path / "i.parquet")], "r.csv", "AR-1", needle)


def test_6_a_leap_day_of_a_leap_year_is_fine(tmp_path: Path) -> None:
    from container_component_src.data.labels import parse_doy

    assert parse_doy("2020/366/23:59:59.123456789") == pd.Timestamp("2020-12-31 23:59:59.123456789", tz="UTC")


def test_7_a_header_without_rows_is_refused(tmp_path: Path) -> None:
    _fails(_import(tmp_path, _csv(tmp_path / "t.csv", "time,x\n")), "t.csv has no rows")
    assert not (tmp_path / "archives").exists() and not (tmp_path / "reports.csv").exists()


def test_8_split_archive_refuses_repeated_times_and_other_years(tmp_path: Path) -> None:
    times = pd.to_datetime(["2021-01-01 00:00", "2021-01-01 00:00", "2021-01-02 00:00"], utc=True)
    pq.write_table(pa.table({"normalizedTime": times, "x": [1.0, 2.0, 3.0]}), tmp_path / "eclss_2021.parquet")
    args = ["split-archive", "--archive", str(tmp_path / "eclss_2021.parquet"), "--out", str(tmp_path / "p")]
    _fails(args, "eclss_2021.parquet", "1 repeated timestamp", "2021-01-01 00:00:00")
    times = pd.DatetimeIndex([pd.Timestamp("2021-01-01", tz="UTC"), pd.Timestamp("2261-01-01", tz="UTC")])
    pq.write_table(pa.table({"normalizedTime": times, "x": [1.0, 2.0]}), tmp_path / "eclss_2021.parquet")
    _fails(args, "eclss_2021.parquet (year 2021) has a row at 2261-01-01")


def test_9_report_times_keep_their_nanoseconds(tmp_path: Path) -> None:
    from container_component_src.data.labels import label_rows, parse_doy, to_ns

    times = pd.to_datetime(["2021-01-01 00:00:00.000000001", "2021-01-01 00:00:00.000000002"])
    source = _csv(tmp_path / "t.csv", f"time,x,anomaly\n{times[0]},1.0,1\n{times[1]},2.0,0\n")
    assert runner.invoke(app, _import(tmp_path, source, "--label-column", "anomaly")).exit_code == 0
    reports = pd.read_csv(tmp_path / "reports.csv", dtype=str)
    start = parse_doy(reports["EVENT GMT (DOY/HH:MM:SS)"][0])
    end = parse_doy(reports["Duration/End GMT"][0])
    labels = label_rows(
        to_ns(times.tz_localize("UTC")), to_ns(pd.DatetimeIndex([start])), to_ns(pd.DatetimeIndex([end]))
    )
    assert labels.tolist() == [1, 0], "the interval covers its own row and not the next, a nanosecond later"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "ID,EVENT GMT (DOY/HH:MM:SS),Duration/End GMT\nA,2021/001/00:00:00,01:00:00\nA,2021/002/00:00:00,1:00:00\n",
            "report id 'A' appears more than once",
        ),
        (
            "ID,EVENT GMT (DOY/HH:MM:SS),Duration/End GMT\n,2021/001/00:00:00,01:00:00\n",
            "column 'ID' is empty in row 2",
        ),
        ("ID,ID,EVENT GMT (DOY/HH:MM:SS),Duration/End GMT\nA,B,2021/001/00:00:00,01:00:00\n", "column 'ID' twice"),
    ],
)
def test_9_report_ids_are_unique_and_present(tmp_path: Path, text: str, needle: str) -> None:
    reports = _csv(tmp_path / "r.csv", text)
    _fails(["parse-reports", "--reports", str(reports), "--out", str(tmp_path / "i.parquet")], "r.csv", needle)


# --- tracebacks before ---------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"ID,start\nA,1\n", bytes(range(256)) * 4, b""])
def test_an_unreadable_reports_spreadsheet_is_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "r.xlsx").write_bytes(content)
    _fails(["parse-reports", "--reports", str(tmp_path / "r.xlsx"), "--out", str(tmp_path / "i.parquet")], "r.xlsx")


def test_an_unknown_timezone_is_one_line(tmp_path: Path) -> None:
    source = _csv(tmp_path / "t.csv", "time,x\n2021-01-01 00:00:00,1.0\n")
    _fails(_import(tmp_path, source, "--timezone", "Mars/Olympus"), "--timezone 'Mars/Olympus'")


@pytest.mark.parametrize("time", ["2021-03-28 02:30:00", "2021-10-31 02:30:00"])
def test_a_time_in_a_daylight_saving_gap_or_overlap_is_one_line(tmp_path: Path, time: str) -> None:
    source = _csv(tmp_path / "t.csv", f"time,x\n{time},1.0\n")
    _fails(_import(tmp_path, source, "--timezone", "Europe/Berlin"), "t.csv", "daylight saving", "--timezone UTC")


def test_a_parquet_file_with_a_broken_footer_is_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"normalizedTime": pd.date_range("2021-01-01", periods=3, tz="UTC"), "x": [1.0] * 3}), good)
    data = good.read_bytes()
    broken = tmp_path / "eclss_2021.parquet"
    broken.write_bytes(data[:4] + b"\x00" * (len(data) - 12) + data[-8:])
    _fails(["split-archive", "--archive", str(broken), "--out", str(tmp_path / "p")], "eclss_2021.parquet")
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    _fails(_import(tmp_path, tmp_path / "t.parquet"), "t.parquet")


def test_a_csv_gz_that_is_not_gzipped_is_one_line(tmp_path: Path) -> None:
    _fails(_import(tmp_path, _csv(tmp_path / "t.csv.gz", "time,x\n")), "t.csv.gz", "gzip")
    with gzip.open(tmp_path / "ok.csv.gz", "wt") as handle:
        handle.write("time,x\n2021-01-01 00:00:00,1.0\n")
    assert runner.invoke(app, _import(tmp_path, tmp_path / "ok.csv.gz")).exit_code == 0


def test_latin1_empty_reports_and_mixed_zones_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes("time,température\n2021-01-01 00:00:00,1.0\n".encode("latin-1"))
    _fails(_import(tmp_path, tmp_path / "t.csv"), "t.csv is not UTF-8")
    (tmp_path / "r.csv").write_text("")
    _fails(
        ["parse-reports", "--reports", str(tmp_path / "r.csv"), "--out", str(tmp_path / "i.parquet")], "r.csv is empty"
    )
    mixed = _csv(tmp_path / "m.csv", "time,x\n2021-01-01 00:00:00+01:00,1.0\n2021-01-01 00:00:10,2.0\n")
    _fails(_import(tmp_path, mixed), "m.csv", "column 'time' row 3", "with and without a zone")


def test_table_step_inputs_that_used_to_end_in_a_traceback_or_a_wrong_label(tmp_path, thread_tasks) -> None:
    """Issue 35's cases where they touch the table steps: one-line errors, nothing written."""
    from container_component_src.data.labels import run_label_series
    from container_component_src.data.preprocess import PreprocessOptions, run_preprocess
    from container_component_src.data.scaling import run_apply_scaler
    from container_component_src.data.spans import parse_span
    from container_component_src.data.split import SplitOptions
    from container_component_src.errors import OptionError
    from container_component_src.storage import InputError
    from tests.dataset_files import write_dataset

    index = pd.date_range("2021-01-01", periods=20, freq="1min", tz="UTC", name="normalizedTime")
    write_dataset(str(tmp_path / "t"), pd.DataFrame({"x": np.arange(20.0)}, index=index), part_rows=10)
    outs = [str(tmp_path / n) for n in ("t", "i.parquet", "l")]
    # An interval without a start would label every row before its end.
    pd.DataFrame({"start": pd.to_datetime([None], utc=True), "end": index[[5]]}).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(InputError, match=r"i.parquet: row 0 has no start"):
        run_label_series(*outs, thread_tasks)
    pd.DataFrame({"begin": index[[1]], "end": index[[5]]}).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(InputError, match=r"i.parquet lack column.s. start: write them with parse-reports"):
        run_label_series(*outs, thread_tasks)
    assert not (tmp_path / "l").exists()
    # A scaler that is not JSON, or not a scaler.
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(InputError, match=r"s.json is not JSON"):
        run_apply_scaler(str(tmp_path / "s.json"), [(outs[0], str(tmp_path / "o"))], thread_tasks)
    (tmp_path / "s.json").write_text('{"channels": ["x"], "center": [0.0]}')
    with pytest.raises(InputError, match=r"s.json is not a scaler written by fit-scaler"):
        run_apply_scaler(str(tmp_path / "s.json"), [(outs[0], str(tmp_path / "o"))], thread_tasks)
    # Periods and hours that are not numbers, or beyond any archive.
    for text in ("nan", "NaT", "", "1MS", "1M", "1Y", "1T", "-1h", "1 fortnight"):
        with pytest.raises(OptionError, match="--partition-period: .* is not a time span such as 30s"):
            parse_span(text, "--partition-period")
    for text, message in (("0s", "must be longer than 0"), ("200000 days", "longer than a century")):
        with pytest.raises(OptionError, match=message):
            parse_span(text, "--partition-period")
    assert (
        parse_span("1h30min", "x") == pd.Timedelta(minutes=90).value
        and parse_span(" 1D ", "x") == pd.Timedelta(days=1).value
    )
    for bad in ({"test_window_hours": float("nan")}, {"block_hours": float("inf")}, {"block_hours": 1e12}):
        with pytest.raises(OptionError, match="a century"):
            SplitOptions(**bad).validate()
    # A grid period so short that one partition's grid would take terabytes: refused before allocating.
    parts = tmp_path / "parts"
    meta = {b"eclss.partition": b'{"start": "2021-01-01T00:00:00+00:00", "end": "2021-01-02T00:00:00+00:00"}'}
    table = pa.table({"normalizedTime": pa.array(index.as_unit("ns")), "x": pa.array(np.arange(20.0))})
    parts.mkdir()
    pq.write_table(table.replace_schema_metadata(meta), parts / "p.parquet")
    with pytest.raises(
        OptionError, match=r"--resample-period 1ns: one partition would be [\d,]+ grid rows x 1 channel.s., [\d,.]+ GiB"
    ):
        run_preprocess(
            [str(parts)],
            str(tmp_path / "g"),
            str(tmp_path / "q.json"),
            thread_tasks,
            PreprocessOptions(resample_period="1ns"),
        )


# --- an import is one unit; paths that cannot be used are named ---------------------------------


def test_outputs_that_overlap_the_inputs_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = _csv(tmp_path / "t.csv", "time,x\n2021-01-01 00:00,1\n2021-01-01 00:01,2\n")
    before = source.read_text()
    args = ["import-telemetry", "--source", str(source), "--archives", str(tmp_path / "archives")]
    _fails([*args, "--reports", str(source), "--timestamp-column", "time"], "is the --source file")
    assert source.read_text() == before, "the source is untouched"
    inside = str(tmp_path / "archives" / "reports.csv")
    _fails([*args, "--reports", inside, "--timestamp-column", "time"], "--reports", "lies in --archives")
    (tmp_path / "archives").mkdir()
    moved = tmp_path / "archives" / "t.csv"
    source.rename(moved)
    overwrite = ["--overwrite", "--timestamp-column", "time", "--reports", str(tmp_path / "r.csv")]
    _fails(["import-telemetry", "--source", str(moved), "--archives", str(tmp_path / "archives"), *overwrite],
           "--source", "lies in --archives")  # fmt: skip
    assert moved.exists()


def test_a_failed_swap_leaves_the_previous_import_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reports are renamed in after the archives: when that fails (a full disk, a busy mount),
    the new archive folder is taken out again and the old archives and reports are put back."""
    source = _csv(tmp_path / "t.csv", "time,x\n2021-01-01 00:00,1\n2021-01-01 00:01,2\n")
    first = runner.invoke(app, _import(tmp_path, source))
    assert first.exit_code == 0, first.output
    old_reports = (tmp_path / "reports.csv").read_text()
    old_archives = sorted(p.name for p in (tmp_path / "archives").iterdir())
    later = _csv(tmp_path / "u.csv", "time,x\n2022-01-01 00:00,1\n2022-01-01 00:01,2\n")
    real_rename = Path.rename

    def rename(self: Path, target: Path) -> Path:
        if Path(target).name == "reports.csv" and ".tmp-" in self.name:  # the new reports, not the old
            raise OSError(errno.EBUSY, "Device or resource busy", str(target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    _fails(_import(tmp_path, later, "--overwrite"), "reports.csv", "busy")
    monkeypatch.undo()
    assert (tmp_path / "reports.csv").read_text() == old_reports
    assert sorted(p.name for p in (tmp_path / "archives").iterdir()) == old_archives == ["telemetry_2021.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives", "reports.csv", "t.csv", "u.csv"], "no leftovers"


def test_a_path_that_is_not_a_readable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    _fails(_import(tmp_path, tmp_path / "folder.csv"), "telemetry file", "folder.csv is a folder, not a file")
    os.mkfifo(tmp_path / "pipe.csv")
    _fails(_import(tmp_path, tmp_path / "pipe.csv"), "pipe.csv is not a regular file")
    (tmp_path / "reports.xlsx").mkdir()
    _fails(["parse-reports", "--reports", str(tmp_path / "reports.xlsx"), "--out", str(tmp_path / "i.parquet")],
           "reports.xlsx is a folder, not a file")  # fmt: skip
    source = _csv(tmp_path / "t.csv", "time,x\n2021-01-01 00:00,1\n2021-01-01 00:01,2\n")
    (tmp_path / "taken.csv").mkdir()
    args = ["import-telemetry", "--source", str(source), "--archives", str(tmp_path / "a"), "--timestamp-column",
            "time", "--reports", str(tmp_path / "taken.csv"), "--overwrite"]  # fmt: skip
    _fails(args, "--reports", "taken.csv is a folder")


@pytest.mark.parametrize(
    ("text", "extra", "needles"),
    [
        # Blank lines count: the bad value is on line 5 of the file.
        ("time,x\n2021-01-01 00:00,1\n\n\n2021-01-01 00:01,x\n", [], ["channel 'x' row 5 value 'x'"]),
        ("time,x\n\n2021-01-01 00:00,1\n2021-01-01 00:01,2\nsoon,3\n", [], ["column 'time' row 5 value 'soon'"]),
        # A bad cell in a numeric time column is named, not its first row.
        ("time,x\n1609459200,1\nabc,2\n", ["--timestamp-unit", "s"], ["row 3 value 'abc' is not a number like row 2"]),
        (
            "time,x,a\n2021-01-01 00:00,1,0\n2021-01-01 00:01,2,7\n",
            ["--label-column", "a"],
            ["row 3 value 7 is not 0 or 1"],
        ),
        ("time,normalizedTime\n2021-01-01 00:00,1\n", [], ["channel 'normalizedTime' has the name of the archives'"]),
        ("time,x\n2021-01-01 00:00,1\n", ["--separator", ""], ["--separator is empty"]),
    ],
)
def test_messages_name_the_row_the_user_sees(tmp_path: Path, text: str, extra: list[str], needles: list[str]) -> None:
    _fails(
        _import(tmp_path, _csv(tmp_path / "t.csv", text), *extra),
        "t.csv" if extra[:1] != ["--separator"] else "",
        *needles,
    )


def test_an_archive_beyond_the_nanosecond_range_is_named_not_called_corrupt(tmp_path: Path) -> None:
    import datetime

    times = pa.array([datetime.datetime(3000, 1, 1), datetime.datetime(3000, 1, 2)], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"normalizedTime": times, "x": [1.0, 2.0]}), tmp_path / "eclss_3000.parquet")
    args = ["split-archive", "--archive", str(tmp_path / "eclss_3000.parquet"), "--out", str(tmp_path / "p")]
    _fails(args, "eclss_3000.parquet", "outside 1677-09-21 to 2262-04-11", "first 3000-01-01")


def test_an_output_file_given_as_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    reports = _csv(tmp_path / "r.csv", "ID,EVENT GMT (DOY/HH:MM:SS),Duration/End GMT\nA,2021/001/00:00:00,00:10:00\n")
    _fails(["parse-reports", "--reports", str(reports), "--out", str(tmp_path / "out")], "out is a folder")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anomalies-per-day", "-1"], "--anomalies-per-day must be >= 0"),
        (["--years", "0"], "--years must be from 1678"),
    ],
)
def test_generator_options_out_of_range_are_named(tmp_path: Path, extra: list[str], message: str) -> None:
    args = ["generate-data", "--archives", str(tmp_path / "a"), "--reports", str(tmp_path / "r.xlsx"),
            "--ground-truth", str(tmp_path / "g.parquet"), "--days-per-year", "1", "--sampling-period-s", "60",
            "--n-channels", "2", "--seed", "1", "--timestamp-column", "t"]  # fmt: skip
    years = [] if "--years" in extra else ["--years", "2021"]
    _fails([*args, *years, *extra], message)


def test_a_gzipped_source_with_a_label_column_imports(tmp_path: Path) -> None:
    text = b"time,x,a\n2021-01-01 00:00,1,0\n2021-01-01 00:01,2,1\n2021-01-01 00:02,3,0\n"
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(text))
    result = runner.invoke(app, _import(tmp_path, tmp_path / "t.csv.gz", "--label-column", "a"))
    assert result.exit_code == 0, result.output
    assert '"anomalies": 1' in result.output


def test_a_folder_this_process_may_not_write_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root a read-only folder cannot be made here: the system's refusal is raised instead."""
    reports = _csv(tmp_path / "r.csv", "ID,EVENT GMT (DOY/HH:MM:SS),Duration/End GMT\nA,2021/001/00:00:00,00:10:00\n")

    def refuse(source: str, target: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(target))

    monkeypatch.setattr(os, "replace", refuse)
    _fails(["parse-reports", "--reports", str(reports), "--out", str(tmp_path / "i.parquet")],
           "i.parquet: Permission denied")  # fmt: skip
