import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src import datasets, storage
from container_component_src.storage import InputError
from tests.dataset_files import write_dataset


def _frame(rows: int, start: str = "2021-01-01") -> pd.DataFrame:
    index = pd.date_range(start, periods=rows, freq="10s", tz="UTC", name="normalizedTime")
    return pd.DataFrame({"a": np.arange(rows, dtype=np.float32), "b": np.ones(rows, np.float32)}, index=index)


def test_parts_in_time_order_with_a_manifest(tmp_path: Path) -> None:
    frame = _frame(250)
    write_dataset(str(tmp_path / "d"), frame, part_rows=100)
    listed = datasets.parts(str(tmp_path / "d"))
    assert [p.rows for p in listed] == [100, 100, 50]
    assert listed[0].start == "2021-01-01T00:00:00+00:00" and listed[-1].end == frame.index[-1].isoformat()
    manifest = json.loads((tmp_path / "d" / datasets.MANIFEST_NAME).read_text())
    assert manifest["rows"] == 250 and manifest["parts"][0]["file"] == "part-00000.parquet"
    back = pd.concat(datasets.iter_frames(str(tmp_path / "d"), batch_rows=64))
    pd.testing.assert_frame_equal(back, frame, check_freq=False)
    # Only the columns asked for, still indexed by time; pandas reads the folder as one table too.
    assert list(next(datasets.iter_frames(str(tmp_path / "d"), ["b"])).columns) == ["b"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "d"), frame, check_freq=False)
    assert datasets.count_rows(str(tmp_path / "d")) == 250
    assert datasets.data_columns(datasets.schema(str(tmp_path / "d"))) == ["a", "b"]


def test_an_empty_dataset_keeps_its_columns(tmp_path: Path) -> None:
    write_dataset(str(tmp_path / "d"), _frame(0), part_rows=10)
    frames = list(datasets.iter_frames(str(tmp_path / "d")))
    assert len(frames) == 1 and frames[0].empty and list(frames[0].columns) == ["a", "b"]


def test_a_file_or_a_folder_without_manifest_reads_as_a_dataset(tmp_path: Path) -> None:
    frame = _frame(10)
    storage.write_parquet(frame.iloc[5:], str(tmp_path / "f" / "part-1.parquet"))
    storage.write_parquet(frame.iloc[:5], str(tmp_path / "f" / "part-0.parquet"))
    assert [p.rows for p in datasets.parts(str(tmp_path / "f"))] == [5, 5]
    pd.testing.assert_frame_equal(pd.concat(datasets.iter_frames(str(tmp_path / "f"))), frame, check_freq=False)
    assert datasets.parts(str(tmp_path / "f" / "part-0.parquet"))[0].rows == 5


def test_rows_out_of_time_order_or_with_other_columns_are_refused(tmp_path: Path) -> None:
    frame = _frame(20)
    part = datasets.PartWriter(str(tmp_path / "p.parquet"))
    part.write(frame.iloc[10:])
    with pytest.raises(InputError, match="p.parquet are not in time order"):
        part.write(frame.iloc[:10])
    with pytest.raises(InputError, match="change columns"):
        part.write(frame[["a"]])
    part.abort()
    after = datasets.PartWriter(str(tmp_path / "q.parquet"), after_ns=int(frame.index[-1].value))
    with pytest.raises(InputError, match="not in time order"):
        after.write(frame.iloc[:1])
    with pytest.raises(InputError, match="nothing was written"):
        datasets.PartWriter(str(tmp_path / "r.parquet")).close()


def test_a_manifest_that_does_not_name_the_files_is_not_trusted(tmp_path: Path) -> None:
    write_dataset(str(tmp_path / "d"), _frame(10), part_rows=5)
    (tmp_path / "d" / "part-00001.parquet").unlink()
    assert [p.rows for p in datasets.parts(str(tmp_path / "d"))] == [5]


def _double(part_url: str, targets: list[str], factor: float) -> tuple[list[datasets.Part], int]:
    out = datasets.PartWriter(targets[0])
    for frame in datasets.iter_part(part_url):
        if frame["a"].lt(0).any():
            raise InputError(f"{part_url} holds a negative value")
        out.write(frame * factor)
    return [out.close()], out.rows


def test_map_parts_writes_part_for_part_and_replaces_the_output_whole(tmp_path: Path, thread_tasks) -> None:
    frame = _frame(95)
    write_dataset(str(tmp_path / "in"), frame, part_rows=20)
    write_dataset(str(tmp_path / "out"), _frame(500), part_rows=100)  # an earlier output
    rows = datasets.map_parts(thread_tasks, str(tmp_path / "in"), [str(tmp_path / "out")], _double, (2.0,))
    assert rows == [20, 20, 20, 20, 15]
    assert [p.rows for p in datasets.parts(str(tmp_path / "out"))] == rows
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out"), frame * 2.0, check_freq=False)
    # A failing task leaves the earlier output as it was, and no temporary folder behind.
    bad = frame.assign(a=-frame["a"])
    write_dataset(str(tmp_path / "bad"), bad, part_rows=20)
    with pytest.raises(InputError, match="holds a negative value"):
        datasets.map_parts(thread_tasks, str(tmp_path / "bad"), [str(tmp_path / "out")], _double, (2.0,))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out"), frame * 2.0, check_freq=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "in", "out"]


def test_map_parts_through_a_scratch_folder(tmp_path: Path, dask_tasks) -> None:
    frame = _frame(45)
    write_dataset(str(tmp_path / "in"), frame, part_rows=20)
    scratch = str(tmp_path / "scratch")
    datasets.map_parts(dask_tasks, str(tmp_path / "in"), [str(tmp_path / "out")], _double, (3.0,), scratch)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out"), frame * 3.0, check_freq=False)
    assert not Path(scratch).exists(), "the scratch folder is removed"


def test_unreadable_inputs_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="bad.parquet is not readable parquet"):
        datasets.parts(str(tmp_path / "bad.parquet"))
    with pytest.raises(InputError, match="does not exist"):
        datasets.parts(str(tmp_path / "missing"))
    storage.write_parquet(_frame(3), str(tmp_path / "ok.parquet"))
    with pytest.raises(InputError, match="ok.parquet lacks column.s. c"):
        next(datasets.iter_frames(str(tmp_path / "ok.parquet"), ["c"]))


def test_datasets_in_object_storage_replace_an_earlier_output_part_for_part(s3_bucket: str, dask_tasks) -> None:
    frame = _frame(45)
    write_dataset(f"{s3_bucket}/in", frame, part_rows=20)
    write_dataset(f"{s3_bucket}/out", _frame(90), part_rows=10)  # nine parts: none may linger
    datasets.map_parts(dask_tasks, f"{s3_bucket}/in", [f"{s3_bucket}/out"], _double, (2.0,))
    assert [p.rows for p in datasets.parts(f"{s3_bucket}/out")] == [20, 20, 5]
    back = pd.concat(datasets.iter_frames(f"{s3_bucket}/out"))
    pd.testing.assert_frame_equal(back, frame * 2.0, check_freq=False)
