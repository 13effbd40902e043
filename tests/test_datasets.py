import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src import datasets, storage
from container_component_src.storage import InputError


def _frame(rows: int, start: str = "2021-01-01") -> pd.DataFrame:
    index = pd.date_range(start, periods=rows, freq="10s", tz="UTC", name="normalizedTime")
    return pd.DataFrame({"a": np.arange(rows, dtype=np.float32), "b": np.ones(rows, np.float32)}, index=index)


def test_parts_of_at_most_part_rows_in_time_order_with_a_manifest(tmp_path: Path) -> None:
    frame = _frame(250)
    with datasets.DatasetWriter(str(tmp_path / "d"), part_rows=100) as out:
        for chunk in (frame.iloc[:30], frame.iloc[30:30], frame.iloc[30:]):
            out.write(chunk)
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


def test_an_empty_dataset_keeps_its_columns(tmp_path: Path) -> None:
    with datasets.DatasetWriter(str(tmp_path / "d")) as out:
        out.write(_frame(0))
    frames = list(datasets.iter_frames(str(tmp_path / "d")))
    assert len(frames) == 1 and frames[0].empty and list(frames[0].columns) == ["a", "b"]


def test_a_file_or_a_folder_without_manifest_reads_as_a_dataset(tmp_path: Path) -> None:
    frame = _frame(10)
    storage.write_parquet(frame.iloc[5:], str(tmp_path / "f" / "part-1.parquet"))
    storage.write_parquet(frame.iloc[:5], str(tmp_path / "f" / "part-0.parquet"))
    assert [p.rows for p in datasets.parts(str(tmp_path / "f"))] == [5, 5]
    pd.testing.assert_frame_equal(pd.concat(datasets.iter_frames(str(tmp_path / "f"))), frame, check_freq=False)
    assert datasets.parts(str(tmp_path / "f" / "part-0.parquet"))[0].rows == 5


def test_rows_out_of_time_order_fail_and_leave_nothing(tmp_path: Path) -> None:
    frame = _frame(20)
    with pytest.raises(InputError, match="not in time order"), datasets.DatasetWriter(str(tmp_path / "d")) as out:
        out.write(frame.iloc[10:])
        out.write(frame.iloc[:10])
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []


def test_an_earlier_output_is_replaced_whole(tmp_path: Path) -> None:
    with datasets.DatasetWriter(str(tmp_path / "d"), part_rows=5) as out:
        out.write(_frame(20))
    with datasets.DatasetWriter(str(tmp_path / "d"), part_rows=5) as out:
        out.write(_frame(7))
    assert [p.rows for p in datasets.parts(str(tmp_path / "d"))] == [5, 2]


def test_a_manifest_that_does_not_name_the_files_is_not_trusted(tmp_path: Path) -> None:
    with datasets.DatasetWriter(str(tmp_path / "d"), part_rows=5) as out:
        out.write(_frame(10))
    (tmp_path / "d" / "part-00001.parquet").unlink()
    assert [p.rows for p in datasets.parts(str(tmp_path / "d"))] == [5]


def test_unreadable_inputs_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="bad.parquet is not readable parquet"):
        datasets.parts(str(tmp_path / "bad.parquet"))
    with pytest.raises(InputError, match="does not exist"):
        datasets.parts(str(tmp_path / "missing"))
    storage.write_parquet(_frame(3), str(tmp_path / "ok.parquet"))
    with pytest.raises(InputError, match="ok.parquet lacks column.s. c"):
        next(datasets.iter_frames(str(tmp_path / "ok.parquet"), ["c"]))
