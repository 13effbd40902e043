from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src.data.split import SplitOptions, assign_splits, run_split_dataset
from container_component_src.errors import OptionError
from container_component_src.storage import InputError
from tests.dataset_files import write_dataset

HOUR = 3_600_000_000_000


def test_test_windows_and_whole_blocks() -> None:
    times = np.arange(0, 24 * 10) * HOUR
    split = assign_splits(
        times,
        np.zeros(times.size, np.int8),
        np.array([50 * HOUR]),
        np.array([52 * HOUR]),
        SplitOptions(test_window_hours=3, val_share=0.3, block_hours=24),
    )
    assert set(np.flatnonzero(split == 2)) == set(range(47, 56))
    rest = split < 2
    blocks = times[rest] // (24 * HOUR)
    for block in np.unique(blocks):
        assert len(set(split[rest][blocks == block])) == 1, "a block is split between train and val"
    val_blocks = np.unique(blocks[split[rest] == 1])
    assert len(val_blocks) == 3


def test_a_labelled_row_is_held_out_even_beyond_the_test_window() -> None:
    """label-series labels a row by its period's overlap; split-dataset keeps every labelled row
    out of training, even with no margin around the intervals."""
    times = np.arange(0, 24 * 10) * HOUR
    labels = np.zeros(times.size, np.int8)
    labels[49] = 1  # the hour before the interval: its period holds the event's start
    options = SplitOptions(test_window_hours=0, val_share=0.3, block_hours=24)
    split = assign_splits(times, labels, np.array([50 * HOUR + 1]), np.array([52 * HOUR]), options)
    assert set(np.flatnonzero(split == 2)) == {49, 51, 52}
    with_periods = SplitOptions(test_periods="1970-01-05/1970-01-06", val_share=0.3, block_hours=24)
    assert assign_splits(times, labels, np.array([50 * HOUR + 1]), np.array([52 * HOUR]), with_periods)[49] == -1


def test_seeded() -> None:
    times = np.arange(0, 24 * 30) * HOUR
    args = (times, np.zeros(times.size, np.int8), np.array([5 * HOUR]), np.array([6 * HOUR]))
    np.testing.assert_array_equal(
        assign_splits(*args, SplitOptions(seed=1)), assign_splits(*args, SplitOptions(seed=1))
    )
    assert not np.array_equal(assign_splits(*args, SplitOptions(seed=1)), assign_splits(*args, SplitOptions(seed=2)))


def _inputs(tmp_path: Path, hours: int, anomaly: tuple[str, str] | None) -> tuple[str, str]:
    index = pd.date_range("2021-01-01", periods=hours, freq="1h", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame({"x": np.arange(float(hours)), "label": np.zeros(hours, dtype=np.int8)}, index=index)
    intervals = pd.DataFrame({"id": [], "start": pd.to_datetime([], utc=True), "end": pd.to_datetime([], utc=True)})
    if anomaly:
        start, end = pd.Timestamp(anomaly[0], tz="UTC"), pd.Timestamp(anomaly[1], tz="UTC")
        intervals = pd.DataFrame({"id": ["A"], "start": [start], "end": [end]})
        frame.loc[start:end, "label"] = 1
    frame.to_parquet(tmp_path / "l.parquet")
    intervals.to_parquet(tmp_path / "i.parquet")
    return str(tmp_path / "l.parquet"), str(tmp_path / "i.parquet")


def test_run_split_dataset(tmp_path: Path, dask_tasks: object) -> None:
    labelled, intervals = _inputs(tmp_path, 24 * 8, ("2021-01-04 10:00", "2021-01-04 12:00"))
    outs = [str(tmp_path / f"{n}.parquet") for n in ("train", "val", "test")]
    counts = run_split_dataset(
        labelled, intervals, *outs, SplitOptions(test_window_hours=2, block_hours=24, val_share=0.25), dask_tasks
    )
    train, val, test = (pd.read_parquet(o) for o in outs)
    assert counts == {"train": len(train), "val": len(val), "test": len(test)}
    assert len(train) + len(val) + len(test) == 24 * 8
    assert test["label"].sum() == 3 and train["label"].sum() == 0 and val["label"].sum() == 0
    assert not set(train.index) & set(val.index)


def test_named_test_periods_take_every_row_in_them(tmp_path: Path, thread_tasks: object) -> None:
    labelled, intervals = _inputs(tmp_path, 24 * 8, ("2021-01-02 10:00", "2021-01-02 12:00"))
    frame = pd.read_parquet(labelled)
    frame.loc["2021-01-06 05:00":"2021-01-06 06:00", "label"] = 1  # a labelled fault in a test recording
    frame.to_parquet(labelled)
    outs = [str(tmp_path / f"{n}.parquet") for n in ("train", "val", "test")]
    periods = "2021-01-06T00:00:00/2021-01-07T23:00:00, 2021-01-08 00:00+00:00/2021-01-08 23:00+00:00"
    counts = run_split_dataset(
        labelled, intervals, *outs, SplitOptions(block_hours=24, test_periods=periods), thread_tasks
    )
    train, val, test = (pd.read_parquet(o) for o in outs)
    assert len(test) == 24 * 3 and test.index.min() == pd.Timestamp("2021-01-06", tz="UTC")
    assert test["label"].sum() == 2, "the labelled rows in the test periods are tested"
    assert counts["left_out"] == 3, "the labelled rows outside the test periods train nothing"
    assert train["label"].sum() == 0 and val["label"].sum() == 0 and len(train) + len(val) == 24 * 5 - 3


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        ("2021-01-02", "--test-periods: '2021-01-02' is not start/end"),
        ("2021-01-02/soon", "--test-periods: '2021-01-02/soon' is not start/end: two ISO 8601 timestamps"),
        ("2021-01-02/2021-13-01", "--test-periods '2021-01-02/2021-13-01': '2021-13-01' is not a date of the calendar"),
        ("2021-01-02 01:00 PST/2021-01-03", "'PST' is not an IANA time zone"),
        ("2021-01-03/2021-01-02", "--test-periods: .*ends before it starts"),
    ],
)
def test_bad_test_periods_are_named(periods: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        SplitOptions(test_periods=periods).validate()


def test_test_periods_read_zones_as_the_sources_do() -> None:
    """A zone name is the zone's (CET is one, with its summer time), never dropped."""
    starts, ends = SplitOptions(test_periods="2021-03-01 01:00 CET/2021-07-01 01:00 Europe/Berlin").periods()
    assert pd.Timestamp(starts[0], tz="UTC") == pd.Timestamp("2021-03-01 00:00", tz="UTC")
    assert pd.Timestamp(ends[0], tz="UTC") == pd.Timestamp("2021-06-30 23:00", tz="UTC")


def test_errors_name_the_problem(tmp_path: Path, thread_tasks: object) -> None:
    outs = [str(tmp_path / f"{n}.parquet") for n in ("train", "val", "test")]
    labelled, intervals = _inputs(tmp_path, 48, None)
    with pytest.raises(InputError, match="test set would be empty"):
        run_split_dataset(labelled, intervals, *outs, SplitOptions(), thread_tasks)
    labelled, intervals = _inputs(tmp_path, 24, ("2021-01-01 10:00", "2021-01-01 11:00"))
    with pytest.raises(InputError, match="lower --test-window-hours or --block-hours"):
        run_split_dataset(labelled, intervals, *outs, SplitOptions(test_window_hours=48), thread_tasks)
    pd.read_parquet(labelled).drop(columns="label").to_parquet(tmp_path / "unlabelled.parquet")
    with pytest.raises(InputError, match="has no label column 'label': run label-series first"):
        run_split_dataset(str(tmp_path / "unlabelled.parquet"), intervals, *outs, SplitOptions(), thread_tasks)
    with pytest.raises(ValueError, match="--val-share"):
        SplitOptions(val_share=1.0).validate()
    assert not any(Path(o).exists() for o in outs)


def test_streamed_over_many_parts_each_row_goes_where_the_whole_table_sends_it(
    tmp_path: Path, thread_tasks: object
) -> None:
    from container_component_src.data.labels import to_ns

    labelled, intervals = _inputs(tmp_path, 24 * 40, ("2021-01-14 10:00", "2021-01-14 12:00"))
    frame = pd.read_parquet(labelled)
    write_dataset(str(tmp_path / "parts"), frame, part_rows=50)
    outs = [str(tmp_path / n) for n in ("train", "val", "test")]
    options = SplitOptions(test_window_hours=2, block_hours=12, val_share=0.3, seed=5)
    counts = run_split_dataset(str(tmp_path / "parts"), intervals, *outs, options, thread_tasks)
    spans = pd.read_parquet(intervals)
    expected = assign_splits(
        to_ns(frame.index), frame["label"].to_numpy(), to_ns(spans["start"]), to_ns(spans["end"]), options
    )
    for code, out in enumerate(outs):
        pd.testing.assert_frame_equal(pd.read_parquet(out), frame[expected == code], check_freq=False)
    assert counts == {name: int((expected == code).sum()) for code, name in enumerate(("train", "val", "test"))}
