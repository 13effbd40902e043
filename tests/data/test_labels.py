from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src.data.labels import (
    label_rows,
    parse_doy,
    parse_duration,
    parse_reports,
    read_reports,
    run_label_series,
    run_parse_reports,
    to_ns,
)
from container_component_src.storage import InputError

COLUMNS = ("ID", "EVENT GMT (DOY/HH:MM:SS)", "Duration/End GMT")


def _reports(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_doy_and_durations() -> None:
    assert parse_doy("2021/045/13:22:05") == pd.Timestamp("2021-02-14 13:22:05", tz="UTC")
    assert parse_doy(" 2020/366/23:59:59.5 ") == pd.Timestamp("2020-12-31 23:59:59.5", tz="UTC")
    assert parse_duration("26:01:02") == pd.Timedelta(hours=26, minutes=1, seconds=2)
    assert parse_duration("2/01:00:00") == pd.Timedelta(days=2, hours=1)
    for bad in ("2021-02-14 13:22:05", "2021/045", "yesterday"):
        with pytest.raises(ValueError):
            parse_doy(bad)


def test_end_as_time_or_duration() -> None:
    intervals = parse_reports(
        _reports(("B", "2021/002/00:00:00", "01:30:00"), ("A", "2021/001/10:00:00", "2021/001/12:00:00")),
        "r.csv",
        *COLUMNS,
    )
    assert list(intervals["id"]) == ["A", "B"]
    assert intervals.loc[1, "end"] == pd.Timestamp("2021-01-02 01:30", tz="UTC")
    assert intervals.loc[0, "end"] - intervals.loc[0, "start"] == pd.Timedelta(hours=2)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            ("AR-7", "2021-01-01 00:00", "01:00:00"),
            r"r.xlsx, report AR-7: column 'EVENT GMT \(DOY/HH:MM:SS\)' value '2021-01-01 00:00'",
        ),
        (("AR-8", "2021/001/00:00:00", "soon"), r"report AR-8: column 'Duration/End GMT' value 'soon' is neither"),
        (("AR-9", "2021/002/00:00:00", "2021/001/23:00:00"), r"report AR-9: end '2021/001/23:00:00' is before start"),
        (("", "2021/001/00:00:00", "01:00:00"), r"r.xlsx: column 'ID' is empty in row 2"),
    ],
)
def test_bad_reports_name_file_report_and_value(row: tuple[str, str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_reports(_reports(row), "r.xlsx", *COLUMNS)


def test_missing_column() -> None:
    with pytest.raises(InputError, match="r.csv has no column 'Duration/End GMT'"):
        parse_reports(_reports(("A", "2021/001/00:00:00", "01:00:00")).drop(columns=COLUMNS[2]), "r.csv", *COLUMNS)


def test_reads_xls_xlsx_and_csv(tmp_path: Path) -> None:
    frame = _reports(("A", "2021/001/10:00:00", "02:00:00"))
    frame.to_csv(tmp_path / "r.csv", index=False)
    frame.to_excel(tmp_path / "r.xlsx", index=False)
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("reports")
    for i, values in enumerate([COLUMNS, *frame.itertuples(index=False)]):
        for j, value in enumerate(values):
            sheet.write(i, j, value)
    book.save(str(tmp_path / "r.xls"))
    for name in ("r.csv", "r.xlsx", "r.xls"):
        pd.testing.assert_frame_equal(read_reports(str(tmp_path / name)), frame, check_dtype=False)
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(InputError, match=r"r.txt must be .xls, .xlsx or .csv"):
        read_reports(str(tmp_path / "r.txt"))


def _naive_labels(times: np.ndarray, starts: np.ndarray, ends: np.ndarray, period: int = 0) -> np.ndarray:
    """The rule as stated: the row's period [t, t + period) (the instant t for 0) meets [start, end]."""
    overlaps = [
        any((s <= t <= e) if period == 0 else (t <= e and t + period > s) for s, e in zip(starts, ends, strict=True))
        for t in times
    ]
    return np.array(overlaps, dtype=np.int8)


@pytest.mark.parametrize("period", [0, 1, 7, 60])
def test_label_rows_matches_naive_loop(period: int) -> None:
    rng = np.random.default_rng(1)
    times = np.sort(rng.integers(0, 10_000, 3_000))
    starts = rng.integers(0, 10_000, 40)
    ends = starts + rng.integers(0, 400, 40)
    expected = _naive_labels(times, starts, ends, period)
    np.testing.assert_array_equal(label_rows(times, starts, ends, period), expected)


def test_label_rows_edges_and_nesting() -> None:
    times = np.arange(0, 20)
    # A long interval containing a short one that ends first: the long one still counts.
    got = label_rows(times, np.array([2, 4, 15]), np.array([10, 5, 15]))
    assert list(np.flatnonzero(got)) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 15]
    assert label_rows(times, np.array([], dtype=np.int64), np.array([], dtype=np.int64)).sum() == 0


def test_run_label_series(tmp_path: Path, dask_tasks: object) -> None:
    index = pd.date_range("2021-01-01", periods=10, freq="1h", tz="UTC", name="normalizedTime")
    pd.DataFrame({"x": np.arange(10.0)}, index=index).to_parquet(tmp_path / "t.parquet")
    _reports(("A", "2021/001/02:00:00", "02:00:00")).to_csv(tmp_path / "r.csv", index=False)
    assert run_parse_reports(str(tmp_path / "r.csv"), str(tmp_path / "i.parquet")) == 1
    paths = [str(tmp_path / name) for name in ("t.parquet", "i.parquet", "l.parquet")]
    counts = run_label_series(*paths, dask_tasks)
    labelled = pd.read_parquet(tmp_path / "l.parquet")
    assert list(labelled["label"]) == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0], "02:00 - 04:00 meets the hours from 02 to 04"
    assert counts == {"rows": 10, "anomalous_rows": 3, "intervals": 1, "period_s": 3600.0}


def test_a_grid_row_whose_period_holds_an_event_is_anomalous(tmp_path: Path, thread_tasks: object) -> None:
    """The row at 05:00 aggregates 05:00 - 05:59: an event from 05:30 to 05:40 lies inside it, and
    one starting at 07:45 begins in the row at 07:00 (the onset row)."""
    index = pd.date_range("2021-01-01", periods=10, freq="1h", tz="UTC", name="normalizedTime")
    pd.DataFrame({"x": np.arange(10.0)}, index=index).to_parquet(tmp_path / "t.parquet")
    _reports(("A", "2021/001/05:30:00", "00:10:00"), ("B", "2021/001/07:45:00", "01:00:00")).to_csv(
        tmp_path / "r.csv", index=False
    )
    run_parse_reports(str(tmp_path / "r.csv"), str(tmp_path / "i.parquet"))
    paths = [str(tmp_path / name) for name in ("t.parquet", "i.parquet", "l.parquet")]
    run_label_series(*paths, thread_tasks)
    assert list(pd.read_parquet(tmp_path / "l.parquet")["label"]) == [0, 0, 0, 0, 0, 1, 0, 1, 1, 0]


def test_label_series_streams_batches_and_parts_into_the_same_file_as_in_memory(
    tmp_path: Path, thread_tasks: object
) -> None:
    """Labels per batch across part boundaries equal the labels of the whole table at once; the
    result reads back as the same frame with its time index."""
    index = pd.date_range("2021-01-01", periods=1_000, freq="1min", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame({"x": np.arange(1_000.0), "y": np.float32(1.5)}, index=index)
    (tmp_path / "parts").mkdir()
    for i, lo in enumerate(range(0, 1_000, 300)):
        frame.iloc[lo : lo + 300].to_parquet(tmp_path / "parts" / f"part-{i}.parquet")
    intervals = pd.DataFrame(
        {"start": pd.to_datetime(["2021-01-01 04:55", "2021-01-01 10:00"], utc=True), "end": index[[310, 700]]}
    )
    intervals.to_parquet(tmp_path / "i.parquet")
    paths = [str(tmp_path / name) for name in ("parts", "i.parquet", "l.parquet")]
    counts = run_label_series(*paths, thread_tasks, batch_rows=64)
    minute = 60 * 10**9
    labels = label_rows(to_ns(index), to_ns(intervals["start"]), to_ns(intervals["end"]), minute)
    expected = frame.assign(label=labels)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "l.parquet"), expected, check_freq=False)
    assert counts == {"rows": 1_000, "anomalous_rows": int(labels.sum()), "intervals": 2, "period_s": 60.0}
    assert labels[295] == 1 and labels[294] == 0, "the row of 04:54 holds [04:54, 04:55): it ends as the event starts"


def test_label_series_refuses_telemetry_without_a_time_index(tmp_path: Path, thread_tasks: object) -> None:
    frame = pd.DataFrame({"time": pd.date_range("2021-01-01", periods=3, tz="UTC"), "x": 1.0})
    frame.to_parquet(tmp_path / "t.parquet")
    pd.DataFrame({"start": pd.to_datetime([], utc=True), "end": pd.to_datetime([], utc=True)}).to_parquet(
        tmp_path / "i.parquet"
    )
    with pytest.raises(InputError, match="t.parquet is not indexed by time"):
        run_label_series(*(str(tmp_path / n) for n in ("t.parquet", "i.parquet", "l.parquet")), thread_tasks)
    assert not (tmp_path / "l.parquet").exists(), "nothing written"
