import pandas as pd
import pytest
import torch

from container_component_src.model.data import RowBatches, TelemetryDataModule, batch_loader
from container_component_src.model.io import load_rows
from container_component_src.storage import InputError


def test_batches_are_slices_not_rows() -> None:
    rows = torch.arange(10.0).reshape(5, 2)
    batches = list(batch_loader(rows, 2, shuffle=False))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(batches), rows)
    shuffled = torch.cat(list(batch_loader(rows, 2, shuffle=True, seed=1)))
    assert sorted(shuffled[:, 0].tolist()) == rows[:, 0].tolist()
    assert RowBatches(rows)[[0, 3]].shape == (2, 2)


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


def test_bad_rows(tmp_path) -> None:
    pd.DataFrame({"a": [1.0, float("nan")]}).to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(InputError, match="nan.parquet has NaN or infinite values"):
        load_rows(str(tmp_path / "nan.parquet"), ["a"])
    with pytest.raises(InputError, match="nan.parquet lacks channel\\(s\\) b"):
        load_rows(str(tmp_path / "nan.parquet"), ["a", "b"])
