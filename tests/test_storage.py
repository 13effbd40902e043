from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from container_component_src import storage
from container_component_src.storage import InputError


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), storage.atomic_write(str(target), "w") as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_directory_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "parts"
    with storage.atomic_directory(str(target)) as folder:
        Path(folder, "a.txt").write_text("first")
    with pytest.raises(RuntimeError), storage.atomic_directory(str(target)) as folder:
        Path(folder, "b.txt").write_text("second")
        raise RuntimeError("boom")
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    with storage.atomic_directory(str(target)) as folder:
        Path(folder, "c.txt").write_text("third")
    assert [p.name for p in target.iterdir()] == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]


def test_parquet_round_trip_and_listing(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.date_range("2021-01-01", periods=2, tz="UTC", name="t"))
    storage.write_parquet(frame, str(tmp_path / "a.parquet"))
    (tmp_path / "note.txt").write_text("not parquet")
    pd.testing.assert_frame_equal(storage.read_parquet(str(tmp_path / "a.parquet")), frame, check_freq=False)
    assert storage.list_files(str(tmp_path), ".parquet") == [str(tmp_path / "a.parquet")]


def test_a_frame_is_written_a_row_group_at_a_time_as_one_table(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa

    rows = 2 * storage.ROW_GROUP_ROWS + 5
    times = pd.date_range("2021-01-01", periods=rows, freq="10s", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame(
        {"split": np.repeat(np.array(["val", "test"], dtype=object), [7, rows - 7]), "score": np.arange(rows) / 3},
        index=times,
    )
    frame["left_out"] = 1
    one_go = tmp_path / "whole.parquet"
    pq.write_table(pa.Table.from_pandas(frame[["split", "score"]], preserve_index=True), one_go)
    storage.write_parquet(frame, str(tmp_path / "a.parquet"), ["split", "score"])
    written = pq.ParquetFile(tmp_path / "a.parquet")
    assert [written.metadata.row_group(i).num_rows for i in range(written.num_row_groups)] == [
        storage.ROW_GROUP_ROWS,
        storage.ROW_GROUP_ROWS,
        5,
    ]
    assert written.schema_arrow.equals(pq.read_schema(one_go), check_metadata=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), frame[["split", "score"]], check_freq=False)
    empty = frame.iloc[:0]
    storage.write_parquet(empty, str(tmp_path / "empty.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "empty.parquet"), empty, check_freq=False)


def test_parquet_encodings_per_column_type(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"x": [1.5, 2.5] * 50, "mode": ["a", "b"] * 50},
        index=pd.date_range("2021-01-01", periods=100, freq="1min", tz="UTC", name="t"),
    )
    storage.write_parquet(frame, str(tmp_path / "a.parquet"))
    group = pq.read_metadata(tmp_path / "a.parquet").row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert chunks["x"].compression == "LZ4" and not dictionary & set(chunks["x"].encodings)
    assert not dictionary & set(chunks["t"].encodings)
    assert chunks["mode"].compression == "SNAPPY" and dictionary & set(chunks["mode"].encodings)
    pd.testing.assert_frame_equal(storage.read_parquet(str(tmp_path / "a.parquet")), frame, check_freq=False)


def test_missing_inputs_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere.parquet does not exist"):
        storage.read_parquet(str(tmp_path / "nowhere.parquet"))
    with pytest.raises(InputError, match="folder .*absent does not exist"):
        storage.list_files(str(tmp_path / "absent"), ".parquet")
    (tmp_path / "bad.parquet").write_text("not parquet at all")
    with pytest.raises(InputError, match="bad.parquet is not readable parquet"):
        storage.read_parquet(str(tmp_path / "bad.parquet"))


def test_s3_same_code_path(s3_bucket: str) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    url = f"{s3_bucket}/data/a.parquet"
    storage.write_parquet(frame, url)
    storage.write_json({"k": 1}, f"{s3_bucket}/data/meta.json")
    assert storage.list_files(f"{s3_bucket}/data", ".parquet") == [url]
    pd.testing.assert_frame_equal(storage.read_parquet(url), frame)
    assert storage.read_json(f"{s3_bucket}/data/meta.json") == {"k": 1}


def test_s3_failed_write_leaves_no_object(s3_bucket: str) -> None:
    url = f"{s3_bucket}/data/partial.bin"
    with pytest.raises(RuntimeError), storage.atomic_write(url) as handle:
        handle.write(b"x" * (6 * 2**20))
        raise RuntimeError("boom")
    assert not storage.exists(url)


def test_kfp_minio_uris_are_served_by_s3(s3_bucket: str) -> None:
    storage.write_json([1, 2], f"{s3_bucket}/artifacts/listing")
    assert storage.read_json("minio://telemetry/artifacts/listing") == [1, 2]


def test_copy_directory_between_local_and_s3(tmp_path: Path, s3_bucket: str) -> None:
    (tmp_path / "model" / "sub").mkdir(parents=True)
    (tmp_path / "model" / "a.json").write_text("{}")
    (tmp_path / "model" / "sub" / "b.bin").write_bytes(b"\x00\x01")
    storage.copy_directory(str(tmp_path / "model"), f"{s3_bucket}/scratch/model")
    storage.copy_directory(f"{s3_bucket}/scratch/model", str(tmp_path / "back"))
    assert (tmp_path / "back" / "a.json").read_text() == "{}"
    assert (tmp_path / "back" / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    storage.remove_directory(f"{s3_bucket}/scratch/model")
    assert not storage.exists(f"{s3_bucket}/scratch/model/a.json")
    with pytest.raises(InputError, match="folder .*nothing does not exist"):
        storage.copy_directory(str(tmp_path / "nothing"), str(tmp_path / "x"))
