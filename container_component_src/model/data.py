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

from container_component_src.data.segments import segment_starts


def window_ends(segments: np.ndarray, context: int) -> Tensor:
    """Indices of the rows that have `context` rows before them in their segment (in order).

    Args:
        segments: Segment number of each row, non-decreasing (see `data.segments.segment_ids`).
        context: Rows each window needs before its newest row.
    """
    segments = np.asarray(segments)
    if segments.size == 0:
        return torch.empty(0, dtype=torch.int64)
    firsts = segment_starts(segments)
    position = np.arange(segments.size) - np.repeat(firsts, np.diff(np.concatenate((firsts, [segments.size]))))
    return torch.from_numpy(np.flatnonzero(position >= context))


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
    """Scaled train and validation rows of the channels, read once in `setup`.

    Args:
        train_url: Scaled training set (parquet).
        val_url: Scaled validation set (parquet).
        channels: Channel columns, in model order.
        batch_size: Inputs per batch.
        seed: Seed of the shuffling.
        context: Rows each window needs before its newest row (0: the point model).
    """

    def __init__(
        self, train_url: str, val_url: str, channels: list[str], batch_size: int = 512, seed: int = 0, context: int = 0
    ) -> None:
        super().__init__()
        self.train_url, self.val_url, self.channels = train_url, val_url, channels
        self.batch_size, self.seed, self.context = batch_size, seed, context
        self.train_rows: Tensor | None = None
        self.val_rows: Tensor | None = None
        self.train_segments: np.ndarray | None = None
        self.val_segments: np.ndarray | None = None

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
        module = cls("", "", [], batch_size, seed)
        module.train_rows, module.val_rows = train_rows, val_rows
        module.train_segments = np.zeros(len(train_rows), np.int64) if train_segments is None else train_segments
        module.val_segments = np.zeros(len(val_rows), np.int64) if val_segments is None else val_segments
        return module

    def setup(self, stage: str) -> None:
        from container_component_src.model.io import load_rows

        if self.train_rows is None:
            self.train_rows, self.train_segments = load_rows(self.train_url, self.channels)
            self.val_rows, self.val_segments = load_rows(self.val_url, self.channels)

    def train_ends(self) -> Tensor:
        assert self.train_segments is not None
        return window_ends(self.train_segments, self.context)

    def val_ends(self) -> Tensor:
        assert self.val_segments is not None
        return window_ends(self.val_segments, self.context)

    def _device(self) -> torch.device | None:
        return self.trainer.strategy.root_device if self.trainer is not None else None

    def train_dataloader(self) -> DataLoader:
        assert self.train_rows is not None
        rows, ends = self.train_rows, self.train_ends()
        return batch_loader(rows, self.batch_size, True, self.seed, self.context, ends, self._device())

    def val_dataloader(self) -> DataLoader:
        assert self.val_rows is not None
        rows, ends, size = self.val_rows, self.val_ends(), max(self.batch_size, 4096)
        return batch_loader(rows, size, False, 0, self.context, ends, self._device())
