"""Telemetry rows as tensors, served a whole batch per fetch (no per-row indexing).

A batch is a gather: the point model gets rows (batch, channels), the windowed model the
`context` rows before each row as well, as (batch, channels, window). A window never crosses a
gap in time: only rows with `context` rows before them in their segment end a window.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from container_component_src.model.rows import DatasetRows, MemoryRows, RowSource, Shard


class WindowBatches(Dataset):
    """Rows, or windows of rows, gathered by a tensor of the rows that end them: one gather per batch."""

    def __init__(self, rows: Tensor, context: int) -> None:
        self.rows, self.context = rows, context
        self.offsets = torch.arange(-context, 1, device=rows.device)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, ends: Tensor) -> Tensor:
        # index_select: a third of the time of indexing with a tensor, which goes through Python.
        if self.context == 0:
            return self.rows.index_select(0, ends)
        rows = self.rows.index_select(0, (ends[:, None] + self.offsets).flatten())
        return rows.view(ends.shape[0], self.context + 1, -1).transpose(1, 2)


class IndexBatches(Sampler[Tensor]):
    """Batches of window ends: a fresh seeded permutation each epoch, or in order. The epoch's
    order is made once and moved to `device` once, so a batch costs no index work of its own."""

    def __init__(
        self, ends: Tensor, batch_size: int, shuffle: bool, seed: int = 0, device: torch.device | None = None
    ) -> None:
        self.ends, self.batch_size, self.shuffle, self.device = ends, batch_size, shuffle, device
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.ends.shape[0] // self.batch_size)

    def __iter__(self):
        order = self.ends[torch.randperm(self.ends.shape[0], generator=self.generator)] if self.shuffle else self.ends
        yield from order.to(self.device, non_blocking=True).split(self.batch_size)


# Share of the GPU's free memory the rows may take to stay resident on it.
RESIDENT_SHARE = 0.25


def batch_loader(
    rows: Tensor,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    context: int = 0,
    ends: Tensor | None = None,
    device: torch.device | None = None,
) -> DataLoader:
    """A DataLoader of rows (or windows ending at `ends`, default every row with enough context).

    On a CUDA `device` the rows move there once when they take at most `RESIDENT_SHARE` of its
    free memory, and every batch is gathered there; otherwise batches come from pinned host
    memory (an asynchronous copy per batch).
    """
    if ends is None:
        ends = torch.arange(context, rows.shape[0])
    pin, on = False, None
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if rows.numel() * rows.element_size() <= RESIDENT_SHARE * free:
            rows, on = rows.to(device), device
        else:
            pin = True
    sampler = IndexBatches(ends, batch_size, shuffle, seed, on)
    return DataLoader(WindowBatches(rows, context), sampler=sampler, batch_size=None, pin_memory=pin)


class TelemetryDataModule(pl.LightningDataModule):
    """Scaled train and validation rows of the channels: in `setup`, each training process (DDP
    rank) reads its own shard of each set (see `rows.RowIndex.shard`), and shuffles within it.

    Args:
        train: The training rows (see `rows.RowSource`).
        val: The validation rows.
        batch_size: Inputs per batch.
        seed: Seed of the shuffling (each rank adds its rank).
        context: Rows each window needs before its newest row (0: the point model).
    """

    def __init__(
        self, train: RowSource, val: RowSource, batch_size: int = 512, seed: int = 0, context: int = 0
    ) -> None:
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed, self.context = batch_size, seed, context
        self.rank = 0
        self.train_shard: Shard | None = None
        self.val_shard: Shard | None = None
        self.train_rows: Tensor | None = None
        self.val_rows: Tensor | None = None

    @classmethod
    def from_urls(
        cls, train_url: str, val_url: str, channels: list[str], batch_size: int = 512, seed: int = 0
    ) -> TelemetryDataModule:
        """A data module over two scaled datasets, `channels` in model order."""
        return cls(DatasetRows(train_url, channels), DatasetRows(val_url, channels), batch_size, seed)

    @classmethod
    def from_rows(
        cls,
        train_rows: Tensor,
        val_rows: Tensor,
        batch_size: int = 512,
        seed: int = 0,
        train_segments: np.ndarray | None = None,
        val_segments: np.ndarray | None = None,
    ) -> TelemetryDataModule:
        """A data module over rows already in memory (scaled, model channel order); without
        segments, each set is one gapless series."""
        return cls(MemoryRows(train_rows, train_segments), MemoryRows(val_rows, val_segments), batch_size, seed)

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        self.rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        train = self.train.index.shard(self.rank, world, self.context, pad=True)
        val = self.val.index.shard(self.rank, world, self.context)
        # A shard already read (the next tuning trial, a second setup) is not read again.
        if self.train_shard is None or (train.first, train.stop) != (self.train_shard.first, self.train_shard.stop):
            self.train_rows = self.train.read(train.first, train.stop)
        if self.val_shard is None or (val.first, val.stop) != (self.val_shard.first, self.val_shard.stop):
            self.val_rows = self.val.read(val.first, val.stop)
        self.train_shard, self.val_shard = train, val

    def _device(self) -> torch.device | None:
        return self.trainer.strategy.root_device if self.trainer is not None else None

    def train_dataloader(self) -> DataLoader:
        assert self.train_rows is not None and self.train_shard is not None
        ends = torch.from_numpy(self.train_shard.ends)
        seed = self.seed + self.rank
        return batch_loader(self.train_rows, self.batch_size, True, seed, self.context, ends, self._device())

    def val_dataloader(self) -> DataLoader:
        assert self.val_rows is not None and self.val_shard is not None
        rows, ends, size = self.val_rows, torch.from_numpy(self.val_shard.ends), max(self.batch_size, 4096)
        return batch_loader(rows, size, False, 0, self.context, ends, self._device())
