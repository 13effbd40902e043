"""Telemetry rows as tensors, served a whole batch per fetch (no per-row indexing)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class RowBatches(Dataset):
    """A tensor of rows indexed by a tensor of row indices: one gather per batch."""

    def __init__(self, rows: Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, indices: Tensor) -> Tensor:
        return self.rows[indices]


class IndexBatches(Sampler[Tensor]):
    """Batches of row indices: a fresh seeded permutation each epoch, or the rows in order."""

    def __init__(self, n_rows: int, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.n_rows, self.batch_size, self.shuffle = n_rows, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.n_rows // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n_rows, generator=self.generator) if self.shuffle else torch.arange(self.n_rows)
        yield from order.split(self.batch_size)


def batch_loader(rows: Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader that gathers `rows` one batch at a time (no per-row Python work)."""
    return DataLoader(RowBatches(rows), sampler=IndexBatches(rows.shape[0], batch_size, shuffle, seed), batch_size=None)


class TelemetryDataModule(pl.LightningDataModule):
    """Scaled train and validation rows of the channels, read once in `setup`.

    Args:
        train_url: Scaled training set (parquet).
        val_url: Scaled validation set (parquet).
        channels: Channel columns, in model order.
        batch_size: Rows per batch.
        seed: Seed of the shuffling.
    """

    def __init__(self, train_url: str, val_url: str, channels: list[str], batch_size: int = 512, seed: int = 0) -> None:
        super().__init__()
        self.train_url, self.val_url, self.channels = train_url, val_url, channels
        self.batch_size, self.seed = batch_size, seed
        self.train_rows: Tensor | None = None
        self.val_rows: Tensor | None = None

    @classmethod
    def from_rows(
        cls, train_rows: Tensor, val_rows: Tensor, batch_size: int = 512, seed: int = 0
    ) -> TelemetryDataModule:
        """A data module over rows already in memory (scaled, model channel order)."""
        module = cls("", "", [], batch_size, seed)
        module.train_rows, module.val_rows = train_rows, val_rows
        return module

    def setup(self, stage: str) -> None:
        from container_component_src.model.io import load_rows

        if self.train_rows is None:
            self.train_rows = load_rows(self.train_url, self.channels)
            self.val_rows = load_rows(self.val_url, self.channels)

    def train_dataloader(self) -> DataLoader:
        assert self.train_rows is not None
        return batch_loader(self.train_rows, self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader:
        assert self.val_rows is not None
        return batch_loader(self.val_rows, max(self.batch_size, 4096), shuffle=False)
