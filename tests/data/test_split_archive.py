from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from container_component_src.data.partitions import MANIFEST_NAME, partition_range
from container_component_src.data.split_archive import list_archives, run_split_archive
from container_component_src.storage import InputError


def _archive(path: Path, times: list[str], tz: str | None = "UTC", **columns: list) -> str:
    frame = pd.DataFrame({"normalizedTime": pd.to_datetime(times).tz_localize(tz) if tz else pd.to_datetime(times)})
    for name, values in columns.items():
        frame[name] = values
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=2)
    return str(path)


def test_split_streams_into_daily_partitions(tiny_data: dict[str, str], tmp_path: Path) -> None:
    archive = list_archives(tiny_data["archives"])[0]
    counts = run_split_archive(archive, str(tmp_path / "parts"), batch_rows=1_000)
    files = sorted((tmp_path / "parts").glob("*.parquet"))
    assert counts["partitions"] == len(files) == 4
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == sorted([*(f.name for f in files), MANIFEST_NAME])
    assert counts["rows"] == pq.ParquetFile(archive).metadata.num_rows
    total = 0
    for f in files:
        table = pq.read_table(f)
        start, end = partition_range(table.schema.metadata, str(f))
        times = table.column("normalizedTime").to_numpy().view("int64")
        assert end - start == pd.Timedelta(days=1).value
        assert times.min() >= start and times.max() < end
        total += table.num_rows
    assert total == counts["rows"]


def test_unsorted_and_naive_timestamps(tmp_path: Path) -> None:
    times = ["2021-01-02 05:00", "2021-01-01 10:00", "2021-01-02 01:00", "2021-01-01 03:00", "2021-01-01 04:00"]
    archive = _archive(tmp_path / "a.parquet", times, tz=None, x=[1.0, 2.0, 3.0, 4.0, 5.0])
    run_split_archive(archive, str(tmp_path / "parts"), partition_period="1D", batch_rows=2)
    first = pq.read_table(tmp_path / "parts" / "part-20210101T000000.parquet").to_pandas()
    assert sorted(first["x"]) == [2.0, 4.0, 5.0]
    assert str(first["normalizedTime"].dt.tz) == "UTC"


def test_an_archive_out_of_order_with_one_open_writer_still_gives_whole_partitions(tmp_path: Path) -> None:
    hours = [f"2021-01-0{1 + h % 3} {h // 3:02d}:00" for h in range(30)]  # days interleaved row by row
    archive = _archive(tmp_path / "a.parquet", hours, x=[float(h) for h in range(30)])
    counts = run_split_archive(archive, str(tmp_path / "parts"), batch_rows=4, max_open_writers=1)
    assert counts == {"rows": 30, "partitions": 3}
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        MANIFEST_NAME,
        "part-20210101T000000.parquet",
        "part-20210102T000000.parquet",
        "part-20210103T000000.parquet",
    ]
    for day in range(3):
        part = pq.read_table(tmp_path / "parts" / f"part-2021010{day + 1}T000000.parquet")
        assert part.column("x").to_pylist() == [float(h) for h in range(day, 30, 3)]
        assert partition_range(part.schema.metadata, "p")[0] == pd.Timestamp(f"2021-01-0{day + 1}", tz="UTC").value
    repeated = _archive(tmp_path / "r.parquet", [*hours, hours[0]], x=[0.0] * 31)
    with pytest.raises(InputError, match="1 repeated timestamp.s., first 2021-01-01 00:00:00"):
        run_split_archive(repeated, str(tmp_path / "r"), batch_rows=4, max_open_writers=1)
    assert not (tmp_path / "r").exists()


def test_six_hour_partitions(tmp_path: Path) -> None:
    archive = _archive(
        tmp_path / "a.parquet", ["2021-01-01 01:00", "2021-01-01 07:00", "2021-01-01 13:00"], x=[1.0, 2, 3]
    )
    assert run_split_archive(archive, str(tmp_path / "p"), partition_period="6h")["partitions"] == 3


def test_missing_timestamp_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"time": [1, 2], "x": [1.0, 2.0]}), path)
    with pytest.raises(InputError, match=r"bad.parquet has no timestamp column 'normalizedTime' \(columns: time, x\)"):
        run_split_archive(str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_timestamp_column_of_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"normalizedTime": ["2021/001/00:00:00"], "x": [1.0]}), path)
    with pytest.raises(InputError, match="strings.parquet: column 'normalizedTime' is string, expected a timestamp"):
        run_split_archive(str(path), str(tmp_path / "out"))


def test_empty_archive_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(
        pa.table({"normalizedTime": pa.array([], pa.timestamp("us", tz="UTC")), "x": pa.array([], pa.float32())}), path
    )
    with pytest.raises(InputError, match="empty.parquet holds no rows"):
        run_split_archive(str(path), str(tmp_path / "out"))
    with pytest.raises(InputError, match="archive .*nope.parquet does not exist"):
        run_split_archive(str(tmp_path / "nope.parquet"), str(tmp_path / "out"))


def test_bad_partition_period(tiny_data: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--partition-period: 'daily' is not a time span"):
        run_split_archive(list_archives(tiny_data["archives"])[0], str(tmp_path / "out"), partition_period="daily")


def test_list_archives(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no .parquet archive"):
        list_archives(str(tmp_path))
    for year in (2022, 2021):
        _archive(tmp_path / f"eclss_{year}.parquet", ["2021-01-01"], x=[1.0])
    assert [Path(p).name for p in list_archives(str(tmp_path))] == ["eclss_2021.parquet", "eclss_2022.parquet"]


def test_split_to_and_from_s3(tiny_data: dict[str, str], s3_bucket: str) -> None:
    from container_component_src import storage

    archive = list_archives(tiny_data["archives"])[0]
    source = f"{s3_bucket}/archives/eclss_2021.parquet"
    with storage.atomic_write(source) as handle, open(archive, "rb") as local:
        handle.write(local.read())
    assert list_archives(f"{s3_bucket}/archives") == [source]
    counts = run_split_archive(source, f"{s3_bucket}/partitions/2021")
    assert len(storage.list_files(f"{s3_bucket}/partitions/2021", ".parquet")) == counts["partitions"] == 4
