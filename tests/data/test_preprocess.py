import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from container_component_src.data.labels import to_ns
from container_component_src.data.partitions import MANIFEST_NAME
from container_component_src.data.preprocess import (
    PreprocessOptions,
    fill_gaps,
    resample,
    run_preprocess,
    time_indexed_table,
)
from container_component_src.data.split_archive import list_archives, run_split_archive
from container_component_src.storage import InputError, list_files, read_parquet

MIN = 60_000_000_000


@pytest.fixture(scope="module")
def tiny_partitions(tiny_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("parts") / "2021"
    run_split_archive(list_archives(tiny_data["archives"])[0], str(out))
    return str(out)


@pytest.mark.parametrize("empty_period", [False, True])
@pytest.mark.parametrize("rows", [[0, 1, 2], [0, 2, 3]])
@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("how", ["mean", "min", "max", "median", "first", "last"])
def test_resample_matches_pandas(how: str, shuffled: bool, rows: list[int], empty_period: bool) -> None:
    rng = np.random.default_rng(0)
    ts = np.sort(rng.integers(0, 50 * MIN, 2_000))
    if empty_period:
        ts = ts[(ts < 20 * MIN) | (ts >= 21 * MIN)]
    values = rng.normal(size=(ts.size, 3)).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = np.nan
    values[(ts > 10 * MIN) & (ts < 12 * MIN), 1] = np.nan
    frame = pd.DataFrame(values, index=pd.to_datetime(ts, utc=True))
    expected = (
        frame.resample("1min", origin="epoch").agg(how).reindex(pd.date_range(0, periods=50, freq="1min", tz="UTC"))
    )
    if shuffled:  # sorted stably first, so "first" and "last" keep their meaning
        order = rng.permutation(ts.size)
        ts, values = ts[order], values[order]
    got, valid = resample(ts, values.T, 0, 50, MIN, how, out=np.full((4, 50), np.nan, np.float32), rows=rows)
    absent = ({0, 1, 2, 3} - set(rows)).pop()
    assert list(valid[rows]) == list((~np.isnan(values)).sum(axis=0)) and valid[absent] == 0
    assert np.isnan(got[absent]).all()
    np.testing.assert_allclose(got[rows].T, expected.to_numpy(), equal_nan=True, rtol=1e-5, atol=1e-6)


def test_resample_writes_into_a_given_grid_and_refuses_samples_outside_it() -> None:
    ts = np.array([30, 31, 31, 34]) * MIN
    values = np.array([1.0, 3.0, 5.0, 7.0], dtype=np.float32)
    batch = np.full((1, 12), np.nan)
    resample(ts, values[None, :], 30 * MIN, 5, MIN, "mean", out=batch[:, 7:])
    np.testing.assert_allclose(batch[0], [np.nan] * 7 + [1, 4, np.nan, np.nan, 7])
    for start, bins in ((31 * MIN, 5), (30 * MIN, 4)):
        with pytest.raises(ValueError, match="samples outside the grid"):
            resample(ts, values[None, :], start, bins, MIN, "mean")


def _filled(values: np.ndarray, max_gap: int, **kwargs: object) -> tuple[np.ndarray, int]:
    grid = np.array(values, dtype=np.float64, ndmin=2)
    count = fill_gaps(grid, max_gap, **kwargs)
    return grid, count


def test_fill_gaps_only_short_bounded_runs() -> None:
    column = [np.nan, 1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 7.0, np.nan]
    filled, count = _filled(column, max_gap=2)
    np.testing.assert_allclose(filled[0], [np.nan, 1, 2, 3, np.nan, np.nan, np.nan, 7, np.nan], equal_nan=True)
    assert count == 1
    filled, count = _filled(column, max_gap=3)
    np.testing.assert_allclose(filled[0], [np.nan, 1, 2, 3, 4, 5, 6, 7, np.nan])
    assert count == 4
    assert _filled(column, max_gap=0)[1] == 0


def test_fill_gaps_context_is_not_counted() -> None:
    filled, count = _filled([1.0, np.nan, 3.0, np.nan, 5.0], max_gap=1, before=2, after=1)
    assert filled[0, 1] == 2.0 and filled[0, 3] == 4.0 and count == 1


@pytest.mark.parametrize("at", [1, 2, 3])
def test_fill_gaps_never_across_a_break_in_time(at: int) -> None:
    breaks = np.zeros(4, dtype=bool)
    breaks[at] = True
    filled, count = _filled([[1.0, np.nan, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0]], max_gap=3, breaks=breaks)
    assert count == 0 and np.isnan(filled[0, 1:3]).all()
    assert _filled([[1.0, np.nan, np.nan, 4.0]], max_gap=3)[1] == 2


def test_fill_gaps_matches_pandas_interpolation() -> None:
    rng = np.random.default_rng(3)
    grid = rng.normal(size=(4, 500))
    grid[rng.random(grid.shape) < 0.3] = np.nan
    expected = pd.DataFrame(grid.T).interpolate(limit_area="inside").to_numpy().T
    runs = pd.DataFrame(np.isnan(grid).T).apply(lambda c: c.groupby((~c).cumsum()).transform("sum")).to_numpy().T
    expected[np.isnan(grid) & (runs > 2)] = np.nan
    filled, count = _filled(grid, max_gap=2)
    np.testing.assert_allclose(filled, expected, equal_nan=True)
    assert count == int((np.isnan(grid) & ~np.isnan(expected)).sum())


def test_preprocess_generated_data(tiny_partitions: str, thread_tasks: object, tmp_path: Path) -> None:
    out, report_path = tmp_path / "telemetry", tmp_path / "quality.json"
    report = run_preprocess([tiny_partitions], str(out), str(report_path), thread_tasks, PreprocessOptions())
    frame = pd.read_parquet(out)
    assert frame.index.name == "normalizedTime" and str(frame.index.tz) == "UTC"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert (np.diff(to_ns(frame.index)) % MIN == 0).all()
    assert not frame.isna().any().any()
    assert len(frame.columns) == 6
    assert report["output_rows"] == len(frame) <= report["grid_rows"] == 4 * 1440
    assert report["output_rows"] + report["dropped_incomplete_rows"] == report["grid_rows"]
    saved = json.loads(report_path.read_text())
    channel = saved["channels"]["cabin_air_temp_degC"]
    assert set(channel) == {
        "raw_missing_share",
        "grid_missing_share",
        "min",
        "max",
        "mean",
        "std",
        "flat_line_share",
        "dropped",
    }
    assert 21 < channel["mean"] < 24 and channel["min"] < channel["mean"] < channel["max"] and channel["std"] > 0


def _partition(path: Path, start: str, minutes: list[float], **channels: list) -> None:
    base = pd.Timestamp(start, tz="UTC")
    data = {"normalizedTime": pa.array([base + pd.Timedelta(minutes=m) for m in minutes], pa.timestamp("ns", tz="UTC"))}
    data.update({k: pa.array(v) for k, v in channels.items()})
    table = pa.table(data)
    meta = {
        b"eclss.partition": json.dumps(
            {"start": base.isoformat(), "end": (base + pd.Timedelta(hours=1)).isoformat()}
        ).encode()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_gap_across_partitions_and_channel_drop(tmp_path: Path, thread_tasks: object) -> None:
    parts = tmp_path / "parts"
    minutes = [float(m) for m in range(60)]
    x1 = [float(m) for m in range(58)] + [np.nan, np.nan]
    x2 = [np.nan] + [float(m) for m in range(61, 120)]
    _partition(parts / "a.parquet", "2021-01-01 00:00", minutes, x=x1, dead=[np.nan] * 60, mode=["a"] * 60)
    _partition(parts / "b.parquet", "2021-01-01 01:00", minutes, x=x2, dead=[np.nan] * 60, mode=["b"] * 60)
    options = PreprocessOptions(max_gap_periods=3)
    report = run_preprocess([str(parts)], str(tmp_path / "out"), str(tmp_path / "q.json"), thread_tasks, options)
    frame = pd.read_parquet(tmp_path / "out")
    assert list(frame.columns) == ["x"]
    np.testing.assert_allclose(frame["x"].to_numpy(), np.arange(120.0))
    assert report["filled_cells"] == 3
    assert report["channels"]["dead"]["dropped"] == "no value at all"
    assert report["non_numeric_columns_dropped"] == ["mode"]


def test_sample_frac_and_flat_line(tmp_path: Path, thread_tasks: object) -> None:
    parts = tmp_path / "parts"
    _partition(parts / "a.parquet", "2021-01-01", [float(m) for m in range(60)], x=[1.0] * 60, y=list(np.arange(60.0)))
    options = PreprocessOptions(sample_frac=0.5, seed=1)
    report = run_preprocess([str(parts)], str(tmp_path / "o"), str(tmp_path / "q.json"), thread_tasks, options)
    assert 15 < report["output_rows"] < 45
    assert report["output_rows"] + report["sampled_out_rows"] == 60
    assert report["channels"]["x"]["flat_line_share"] == 1.0 and report["channels"]["y"]["flat_line_share"] == 0.0


def test_unusable_data(tmp_path: Path, thread_tasks: object) -> None:
    only_text = tmp_path / "text"
    _partition(only_text / "a.parquet", "2021-01-01", [0.0, 1.0], mode=["a", "b"])
    with pytest.raises(InputError, match=r"no numeric channel in .*a.parquet .*non-numeric columns: mode"):
        run_preprocess([str(only_text)], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions())
    all_nan = tmp_path / "nan"
    _partition(all_nan / "a.parquet", "2021-01-01", [0.0, 1.0], x=[np.nan, np.nan])
    with pytest.raises(InputError, match="no usable channel in .*a.parquet"):
        run_preprocess([str(all_nan)], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions())
    assert not (tmp_path / "o").exists() and not (tmp_path / "q").exists()


def test_a_run_without_a_complete_row_leaves_the_previous_output(tmp_path: Path, thread_tasks: object) -> None:
    good, apart = tmp_path / "good", tmp_path / "apart"
    _partition(good / "a.parquet", "2021-01-01", [float(m) for m in range(60)], x=[1.0] * 60, y=[2.0] * 60)
    out, report = str(tmp_path / "out"), str(tmp_path / "q.json")
    run_preprocess([str(good)], out, report, thread_tasks, PreprocessOptions())
    # x in the first half hour, y in the second: both kept (half missing each), no row complete.
    halves = [1.0] * 30 + [np.nan] * 30
    _partition(apart / "a.parquet", "2021-01-01", [float(m) for m in range(60)], x=halves, y=halves[::-1])
    with pytest.raises(InputError, match="no complete row left"):
        run_preprocess([str(apart)], out, report, thread_tasks, PreprocessOptions(max_missing_share=0.6))
    assert len(pd.read_parquet(out)) == 60, "the previous good output stays"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apart", "good", "out", "q.json"]


def test_bad_partitions(tmp_path: Path, thread_tasks: object) -> None:
    empty = tmp_path / "empty"
    _partition(empty / "a.parquet", "2021-01-01", [], x=pa.array([], pa.float64()))
    with pytest.raises(InputError, match=r"partition .*empty/a.parquet holds no rows"):
        run_preprocess([str(empty)], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions())
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(
        pa.table({"normalizedTime": pa.array([0], pa.timestamp("ns", tz="UTC")), "x": [1.0]}), plain / "p.parquet"
    )
    with pytest.raises(InputError, match="no time range: was it written by split-archive"):
        run_preprocess([str(plain)], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions())
    with pytest.raises(InputError, match="partition input .*missing does not exist"):
        run_preprocess(
            [str(tmp_path / "missing")], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions()
        )


def test_period_must_divide_partitions(tiny_partitions: str, thread_tasks: object, tmp_path: Path) -> None:
    options = PreprocessOptions(resample_period="7min")
    with pytest.raises(
        ValueError,
        match=r"--resample-period 7min does not divide the partitions \(1D from 2021-01-01T00:00:00\+00:00\)",
    ):
        run_preprocess([tiny_partitions], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, options)


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"aggregation": "sum"}, "--aggregation"),
        ({"sample_frac": 0.0}, "--sample-frac"),
        ({"max_missing_share": 2.0}, "--max-missing-share"),
        ({"max_gap_periods": -1}, "--max-gap-periods"),
        ({"resample_period": "soon"}, "--resample-period"),
    ],
)
def test_bad_options(change: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        PreprocessOptions(**change).validate()


def test_an_outage_of_every_channel_counts_against_none() -> None:
    from container_component_src.data.preprocess import grid_statistics

    nan = np.nan
    grid = np.array([[1.0, 2.0, nan, nan, 3.0, 4.0], [1.0, 2.0, nan, nan, 3.0, nan]])
    stats = grid_statistics(grid, raw_rows=6, raw_valid=np.array([4, 3]))
    assert stats["grid_bins"].tolist() == [4, 4]
    assert (1 - stats["n"] / stats["grid_bins"]).tolist() == [0.0, 0.25]


def test_statistics_count_no_pair_across_a_break_in_time() -> None:
    from container_component_src.data.preprocess import grid_statistics

    grid = np.array([[1.0, 1.0, 1.0, 1.0, 2.0]])
    joined = grid_statistics(grid, raw_rows=5, raw_valid=np.array([5]))
    broken = grid_statistics(grid, raw_rows=5, raw_valid=np.array([5]), breaks=np.array([0, 0, 1, 0, 0], dtype=bool))
    assert (joined["pairs"][0], joined["flat"][0]) == (4, 3)
    assert (broken["pairs"][0], broken["flat"][0]) == (3, 2)
    assert joined["mean"][0] == pytest.approx(1.2) and joined["m2"][0] == pytest.approx(0.8)
    assert (joined["min"][0], joined["max"][0]) == (1.0, 2.0)
    empty = grid_statistics(np.full((1, 3), np.nan), raw_rows=0, raw_valid=np.array([0]))
    assert empty["n"][0] == 0 and np.isnan(empty["min"][0]) and empty["grid_bins"][0] == 0


def test_partitions_with_integer_channels_nulls_row_groups_and_microseconds(
    tmp_path: Path, thread_tasks: object
) -> None:
    base = pd.Timestamp("2021-01-01", tz="UTC")
    times = pa.array([base + pd.Timedelta(seconds=30 * i) for i in range(120)], pa.timestamp("us", tz="UTC"))
    counts = pa.array([None if i == 5 else i for i in range(120)], pa.int32())
    table = pa.table({"normalizedTime": times, "count": counts, "level": pa.array(np.arange(120.0) / 2)})
    meta = {
        b"eclss.partition": json.dumps({"start": base.isoformat(), "end": (base + pd.Timedelta(hours=1)).isoformat()})
    }
    (tmp_path / "parts").mkdir()
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "parts" / "a.parquet", row_group_size=7)
    report = run_preprocess(
        [str(tmp_path / "parts")], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions()
    )
    frame = pd.read_parquet(tmp_path / "o")
    assert len(frame) == 60 and report["channels"]["count"]["raw_missing_share"] == pytest.approx(1 / 120)
    np.testing.assert_allclose(frame["count"], [4.0 if m == 2 else 2 * m + 0.5 for m in range(60)])
    np.testing.assert_allclose(frame["level"], np.arange(60) + 0.25)


def test_samples_outside_their_partition_are_refused(tmp_path: Path, thread_tasks: object) -> None:
    _partition(tmp_path / "parts" / "a.parquet", "2021-01-01", [float(m) for m in range(70)], x=[1.0] * 70)
    with pytest.raises(InputError, match=r"partition .*a.parquet: samples outside the grid 2021-01-01 00:00:00\+00:00"):
        run_preprocess(
            [str(tmp_path / "parts")], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions()
        )
    assert not (tmp_path / "o").exists()


def test_time_indexed_table_is_what_pandas_would_write() -> None:
    times = np.array([0, 60, 180]) * 1_000_000_000
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    table = time_indexed_table(times, values, ["a", "b"], "t")
    expected = pd.DataFrame(values.T, index=pd.DatetimeIndex(times, tz="UTC", name="t"), columns=["a", "b"])
    assert table.schema.equals(pa.Table.from_pandas(expected, preserve_index=True).schema, check_metadata=True)
    pd.testing.assert_frame_equal(table.to_pandas(), expected)


def test_s3_partitions_on_dask_workers_give_the_same_grid(
    tiny_data: dict[str, str],
    tiny_partitions: str,
    s3_bucket: str,
    thread_tasks: object,
    dask_tasks: object,
    tmp_path: Path,
) -> None:
    """The cluster's way (a Dask cluster's workers, object storage) and the local way (threads, a
    folder) give the same grid and report."""
    run_split_archive(list_archives(tiny_data["archives"])[0], f"{s3_bucket}/partitions/2021")
    local = run_preprocess(
        [tiny_partitions], str(tmp_path / "l"), str(tmp_path / "l.json"), thread_tasks, PreprocessOptions()
    )
    files = list_files(f"{s3_bucket}/partitions/2021", ".parquet")
    for inputs in ([f"{s3_bucket}/partitions/2021"], files):  # the manifest, then the footers
        remote = run_preprocess(inputs, f"{s3_bucket}/out", f"{s3_bucket}/q.json", dask_tasks, PreprocessOptions())
        assert remote == local
        pd.testing.assert_frame_equal(read_parquet(f"{s3_bucket}/out"), pd.read_parquet(tmp_path / "l"))


@pytest.mark.parametrize("manifest", [True, False])
def test_a_partition_changed_after_the_split_is_an_error_naming_it(
    tiny_partitions: str, thread_tasks: object, tmp_path: Path, manifest: bool
) -> None:
    """With the manifest, the file's CRC-32C is checked; without it, every page's checksum."""
    folder = tmp_path / "parts"
    shutil.copytree(tiny_partitions, folder)
    if not manifest:
        (folder / MANIFEST_NAME).unlink()
    victim = sorted(folder.glob("*.parquet"))[1]
    data = bytearray(victim.read_bytes())
    middle = len(data) // 2  # in a data page; the size stays, so the manifest still describes the folder
    data[middle : middle + 200] = bytes(reversed(data[middle : middle + 200]))
    victim.write_bytes(bytes(data))
    problem = "does not match the CRC-32C split-archive recorded" if manifest else "is not readable"
    with pytest.raises(InputError, match=rf"partition \S*{victim.name} {problem}"):
        run_preprocess([str(folder)], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions())
    assert not (tmp_path / "o").exists()


def test_empty_timestamps_are_refused(tmp_path: Path, thread_tasks: object) -> None:
    base = pd.Timestamp("2021-01-01", tz="UTC")
    times = pa.array([base, None, base + pd.Timedelta(minutes=2)], pa.timestamp("ns", tz="UTC"))
    meta = {
        b"eclss.partition": json.dumps({"start": base.isoformat(), "end": (base + pd.Timedelta(hours=1)).isoformat()})
    }
    (tmp_path / "parts").mkdir()
    table = pa.table({"normalizedTime": times, "x": [1.0, 2.0, 3.0]}).replace_schema_metadata(meta)
    pq.write_table(table, tmp_path / "parts" / "a.parquet")
    with pytest.raises(InputError, match=r"partition .*a.parquet: column 'normalizedTime' has 1 empty timestamps"):
        run_preprocess(
            [str(tmp_path / "parts")], str(tmp_path / "o"), str(tmp_path / "q"), thread_tasks, PreprocessOptions()
        )


def test_the_report_and_the_grid_do_not_depend_on_batching(
    tiny_partitions: str, thread_tasks: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from container_component_src.data import preprocess

    one = run_preprocess(
        [tiny_partitions], str(tmp_path / "one"), str(tmp_path / "1.json"), thread_tasks, PreprocessOptions()
    )
    monkeypatch.setattr(preprocess, "MIN_BATCH_GRID_CELLS", 1)
    monkeypatch.setattr(preprocess, "BATCH_GRID_CELLS", 1)  # a partition per batch
    many = run_preprocess(
        [tiny_partitions], str(tmp_path / "many"), str(tmp_path / "m.json"), thread_tasks, PreprocessOptions()
    )
    assert len(list((tmp_path / "many").glob("*.parquet"))) == 4 > len(list((tmp_path / "one").glob("*.parquet")))
    for channel, figures in one["channels"].items():
        for name, value in figures.items():
            expected = pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
            assert many["channels"][channel][name] == expected, (channel, name)
    assert {k: v for k, v in many.items() if k != "channels"} == {k: v for k, v in one.items() if k != "channels"}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "many"), pd.read_parquet(tmp_path / "one"))


def test_batches_are_consecutive_bounded_and_about_eight_per_thread() -> None:
    from container_component_src.data.preprocess import plan_batches

    days = [(0, 8640)] * 100  # a 10 s grid
    batches = plan_batches(days, channels=16, threads=2, max_cells=2**30)
    assert [i for batch in batches for i in batch] == list(range(100))
    assert 14 <= len(batches) <= 18
    alone = plan_batches(days, channels=16, threads=2, max_cells=5_000)
    assert len(alone) == 100  # a partition larger than the bound is a task of its own
    bounded = plan_batches(days, channels=16, threads=1, max_cells=300_000)
    assert all(sum(days[i][1] * 16 for i in batch) <= 300_000 for batch in bounded) and len(bounded) == 50
    hours = [(0, 60)] * 100  # small data: at least MIN_BATCH_GRID_CELLS a task, here one task
    assert plan_batches(hours, channels=16, threads=2) == [list(range(100))]


def test_the_local_step_imports_neither_pandas_nor_dask(tiny_partitions: str, tmp_path: Path) -> None:
    """Their imports cost a third of a second in a process whose whole work on the default data
    takes less: the local preprocess runs on numpy and pyarrow, on threads."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pandas", "dask", "distributed", "numba"):
                    raise RuntimeError(f"imported {{name}}")

        sys.meta_path.insert(0, Refuse())
        sys.argv = ["eclss", "preprocess", "--partitions", {tiny_partitions!r}, "--out", {str(tmp_path / "o")!r},
                    "--quality-report", {str(tmp_path / "q.json")!r}]
        from container_component_src.main import cli
        cli()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(pd.read_parquet(tmp_path / "o")) > 0
