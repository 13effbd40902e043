import itertools
import pickle
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from container_component_src.model.data import TelemetryDataModule, WindowBatches, batch_loader
from container_component_src.model.rows import DatasetRows, MappedRows, RowIndex
from container_component_src.storage import InputError
from tests.dataset_files import write_dataset


def test_batches_are_slices_not_rows() -> None:
    rows = torch.arange(10.0).reshape(5, 2)
    batches = list(batch_loader(rows, 2, shuffle=False))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(batches), rows)
    shuffled = torch.cat(list(batch_loader(rows, 2, shuffle=True, seed=1)))
    assert sorted(shuffled[:, 0].tolist()) == rows[:, 0].tolist()
    assert WindowBatches(rows, 0)[torch.tensor([0, 3])].shape == (2, 2)


def test_windows_end_at_each_row_with_context_and_never_cross_a_gap() -> None:
    index = RowIndex.of_segments(np.array([0, 0, 0, 0, 1, 1, 2, 2, 2]))
    assert index.shard(0, 1, 0).ends.tolist() == list(range(9))
    assert index.shard(0, 1, 2).ends.tolist() == [2, 3, 8], "segment 1 is too short for a window of 3"
    rows = torch.arange(18.0).reshape(9, 2)
    ends = torch.from_numpy(index.shard(0, 1, 2).ends)
    windows = torch.cat(list(batch_loader(rows, 2, shuffle=False, context=2, ends=ends)))
    assert windows.shape == (3, 2, 3), "(windows, channels, rows)"
    torch.testing.assert_close(windows[2], rows[6:9].T, msg="the window ending at row 8 holds rows 6, 7, 8")


@pytest.mark.parametrize("seed", range(40))
def test_shards_split_the_windows_between_ranks_in_whole_time_blocks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, size=rng.integers(1, 12))
    segments = np.repeat(np.arange(len(lengths)), lengths)
    index = RowIndex.of_segments(segments)
    for context in (0, 1, 4, 15):
        every = [r for r in range(len(segments)) if r >= context and segments[r - context] == segments[r]]
        for world in (1, 2, 3, 4):
            if len(every) < world:
                with pytest.raises(InputError, match="cannot be shared by"):
                    index.shard(0, world, context)
                continue
            seen = []
            for rank in range(world):
                shard = index.shard(rank, world, context)
                ends = shard.first + shard.ends
                assert (shard.ends >= context).all() and ends.max() < shard.stop, "every window lies in its shard"
                assert (segments[ends - context] == segments[ends]).all(), "no window crosses a gap"
                seen.append(ends)
                padded = index.shard(rank, world, context, pad=True)
                assert len(padded.ends) == -(-len(every) // world), "as many steps on every rank"
                assert set(padded.ends) == set(shard.ends)
            together = np.concatenate(seen)
            assert sorted(together.tolist()) == every, "the ranks together see every window once"
            assert [s.max() < t.min() for s, t in itertools.pairwise(seen)] == [True] * (world - 1), (
                "each rank a block of time after the one before"
            )


def _time_frame(rows: int, channels: list[str]) -> pd.DataFrame:
    index = pd.date_range("2021-01-01", periods=rows, freq="10s", tz="UTC", name="normalizedTime")
    index = index.delete(slice(100, 110))  # a gap: two segments
    values = np.arange(len(index) * len(channels), dtype=np.float32).reshape(len(index), len(channels))
    return pd.DataFrame(values, columns=channels, index=index)


def test_a_shard_reads_only_its_rows_across_parts(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _time_frame(310, ["a", "b", "c"])
    write_dataset(str(tmp_path / "d"), frame, part_rows=70)
    source = DatasetRows(str(tmp_path / "d"), ["c", "a"])
    assert source.index.rows == 300 and source.index.starts.tolist() == [0, 100]
    np.testing.assert_array_equal(source.read(65, 212).numpy(), frame[["c", "a"]].to_numpy()[65:212])
    mapped = MappedRows.write(source, str(tmp_path / "rows.npy"))
    again = pickle.loads(pickle.dumps(mapped))  # as a spawned worker gets it
    np.testing.assert_array_equal(again.read(0, 300).numpy(), frame[["c", "a"]].to_numpy())
    assert again.index.starts.tolist() == [0, 100]
    monkeypatch.setattr("container_component_src.model.rows._free_bytes", lambda folder: 1000)
    with pytest.raises(InputError, match=r"needs 0\.0 GiB, .* free: point TMPDIR at a larger disk"):
        MappedRows.write(source, str(tmp_path / "again.npy"))


def test_each_rank_of_the_data_module_holds_its_shard(tmp_path) -> None:
    frame = _time_frame(400, ["a", "b"])
    write_dataset(str(tmp_path / "t"), frame, part_rows=90)
    write_dataset(str(tmp_path / "v"), frame.iloc[:50], part_rows=90)
    values, seen = frame.to_numpy(), []
    for rank in range(2):
        module = TelemetryDataModule.from_urls(str(tmp_path / "t"), str(tmp_path / "v"), ["a", "b"], batch_size=16)
        module.context = 3
        module.trainer = SimpleNamespace(
            global_rank=rank, world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu"))
        )
        module.setup("fit")
        assert len(module.train_rows) < len(frame) * 0.6, "a rank holds about half the rows"
        windows = torch.cat(list(module.train_dataloader()))
        assert windows.shape[1:] == (2, 4)
        for window in windows.numpy():
            row = int(np.flatnonzero((values == window[:, -1]).all(axis=1))[0])
            np.testing.assert_array_equal(window.T, values[row - 3 : row + 1])
            seen.append(row)
    assert len(seen) == len(set(seen)) == len(frame) - 2 * 3, "every window once, none across the gap"


def test_datamodule_reads_once_in_channel_order(scaled_sets: dict[str, str]) -> None:
    channels = list(reversed(pd.read_json(scaled_sets["scaler"], typ="series")["channels"]))
    module = TelemetryDataModule.from_urls(scaled_sets["train"], scaled_sets["val"], channels, batch_size=128)
    module.setup("fit")
    first = module.train_rows
    module.setup("fit")
    assert module.train_rows is first
    frame = pd.read_parquet(scaled_sets["train"])
    torch.testing.assert_close(first[:3], torch.tensor(frame[channels].to_numpy("float32")[:3].copy()))
    assert next(iter(module.train_dataloader())).shape == (128, len(channels))
    assert len(module.train.index.starts) > 1, "the training set is made of blocks: several segments"
    module.context = 7
    module.setup("fit")
    assert next(iter(module.train_dataloader())).shape == (128, len(channels), 8)


def test_bad_rows(tmp_path) -> None:
    index = pd.date_range("2024-01-01", periods=2, freq="1min")
    pd.DataFrame({"a": [1.0, float("nan")]}, index=index).to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(InputError, match="nan.parquet has NaN or infinite values in a"):
        DatasetRows(str(tmp_path / "nan.parquet"), ["a"]).read(0, 2)
    with pytest.raises(InputError, match="nan.parquet lacks channel\\(s\\) b"):
        _ = DatasetRows(str(tmp_path / "nan.parquet"), ["a", "b"]).index
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "no_time.parquet")
    with pytest.raises(InputError, match="no_time.parquet is not indexed by time"):
        _ = DatasetRows(str(tmp_path / "no_time.parquet"), ["a"]).index
