import numpy as np
import pandas as pd
import pytest
import torch

from container_component_src.model.data import TelemetryDataModule, WindowBatches, batch_loader, window_ends
from container_component_src.model.io import load_rows
from container_component_src.storage import InputError


def test_batches_are_slices_not_rows() -> None:
    rows = torch.arange(10.0).reshape(5, 2)
    batches = list(batch_loader(rows, 2, shuffle=False))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(batches), rows)
    shuffled = torch.cat(list(batch_loader(rows, 2, shuffle=True, seed=1)))
    assert sorted(shuffled[:, 0].tolist()) == rows[:, 0].tolist()
    assert WindowBatches(rows, 0)[torch.tensor([0, 3])].shape == (2, 2)


def test_windows_end_at_each_row_with_context_and_never_cross_a_gap() -> None:
    segments = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    assert window_ends(segments, 0).tolist() == list(range(9))
    assert window_ends(segments, 2).tolist() == [2, 3, 8], "segment 1 is too short for a window of 3"
    rows = torch.arange(18.0).reshape(9, 2)
    windows = torch.cat(list(batch_loader(rows, 2, shuffle=False, context=2, ends=window_ends(segments, 2))))
    assert windows.shape == (3, 2, 3), "(windows, channels, rows)"
    torch.testing.assert_close(windows[2], rows[6:9].T, msg="the window ending at row 8 holds rows 6, 7, 8")


def test_datamodule_reads_once_in_channel_order(scaled_sets: dict[str, str]) -> None:
    channels = list(reversed(pd.read_json(scaled_sets["scaler"], typ="series")["channels"]))
    module = TelemetryDataModule(scaled_sets["train"], scaled_sets["val"], channels, batch_size=128)
    module.setup("fit")
    first = module.train_rows
    module.setup("fit")
    assert module.train_rows is first
    frame = pd.read_parquet(scaled_sets["train"])
    torch.testing.assert_close(first[:3], torch.tensor(frame[channels].to_numpy("float32")[:3].copy()))
    assert next(iter(module.train_dataloader())).shape == (128, len(channels))
    assert module.train_segments.max() > 0, "the training set is made of blocks: several segments"
    module.context = 7
    assert next(iter(module.train_dataloader())).shape == (128, len(channels), 8)


def test_bad_rows(tmp_path) -> None:
    index = pd.date_range("2024-01-01", periods=2, freq="1min")
    pd.DataFrame({"a": [1.0, float("nan")]}, index=index).to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(InputError, match="nan.parquet has NaN or infinite values"):
        load_rows(str(tmp_path / "nan.parquet"), ["a"])
    with pytest.raises(InputError, match="nan.parquet lacks channel\\(s\\) b"):
        load_rows(str(tmp_path / "nan.parquet"), ["a", "b"])
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "no_time.parquet")
    with pytest.raises(InputError, match="no_time.parquet is not indexed by time"):
        load_rows(str(tmp_path / "no_time.parquet"), ["a"])
