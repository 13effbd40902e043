"""Train/validation/test split by time.

By default the test set is cut around each anomaly, and train and validation are whole blocks of
the rest. A user with separate recordings names the test periods instead (`test_periods`): every
row in them is test, validation blocks are carved from the rest, and labelled rows outside them
are kept out of training and validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from container_component_src import datasets
from container_component_src.data.labels import label_rows, read_intervals, to_ns
from container_component_src.data.timestamps import parse_timestamp
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

if TYPE_CHECKING:
    from container_component_src.cluster.dask import Tasks

# Hours an option may span at most: a century (comparisons with NaN fail, so NaN is refused too).
MAX_HOURS = 876_600


@dataclass(frozen=True)
class SplitOptions:
    """How rows are assigned.

    Attributes:
        test_window_hours: Test takes this many hours before and after each anomaly interval.
        val_share: Share of the remaining time blocks that go to validation.
        block_hours: Length of the contiguous blocks that train and validation are made of.
        seed: Seed of the block assignment.
        test_periods: Empty, or the test set's time ranges: "start/end" ISO timestamps (UTC
            unless they carry a zone), comma-separated; `test_window_hours` is then unused.
    """

    test_window_hours: float = 3.0
    val_share: float = 0.2
    block_hours: float = 12.0
    seed: int = 42
    test_periods: str = ""

    def periods(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (inclusive) of each test period, in nanoseconds since the epoch.

        Raises:
            OptionError: A period is not "start/end" with two readable timestamps, start first.
        """
        starts, ends = [], []
        for text in filter(None, (part.strip() for part in self.test_periods.split(","))):
            bounds = re.split(r"/(?=\d{4}-)", text)  # not the slash of a zone name (Europe/Berlin)
            if len(bounds) != 2:
                raise OptionError(
                    f"--test-periods: {text!r} is not start/end: two ISO 8601 timestamps "
                    "(2021-03-01[ 01:00[:00][zone]]) and a slash"
                )
            start, end = (parse_timestamp(b.strip(), f"--test-periods {text!r}:") for b in bounds)
            if end < start:
                raise OptionError(f"--test-periods: {text!r} ends before it starts")
            starts.append(start.value)
            ends.append(end.value)
        return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)

    def validate(self) -> None:
        if not 0 <= self.test_window_hours <= MAX_HOURS:
            raise OptionError(
                f"--test-window-hours must be from 0 to {MAX_HOURS} (a century), got {self.test_window_hours}"
            )
        if not 0.0 < self.val_share < 1.0:
            raise OptionError(f"--val-share must be in (0, 1), got {self.val_share}")
        if not 0 < self.block_hours <= MAX_HOURS:
            raise OptionError(
                f"--block-hours must be above 0 and at most {MAX_HOURS} (a century), got {self.block_hours}"
            )
        self.periods()


def assign_splits(
    times_ns: np.ndarray, labels: np.ndarray, starts_ns: np.ndarray, ends_ns: np.ndarray, options: SplitOptions
) -> np.ndarray:
    """Return 0 (train), 1 (val), 2 (test) or -1 (left out) per row.

    Test: every labelled row and every row within `test_window_hours` of an anomaly interval,
    or, when `test_periods` is given, every row in those periods (then labelled rows outside them
    are left out). The other rows are cut into `block_hours` blocks from the first row; a seeded
    draw sends `val_share` of the blocks to validation.
    """
    split = held_out(times_ns, labels, starts_ns, ends_ns, options)
    first = int(times_ns.min()) if times_ns.size else 0
    blocks = time_blocks(times_ns, first, options)
    rest = split == 0
    split[rest & np.isin(blocks, validation_blocks(np.unique(blocks[rest]), options))] = 1
    return split


def held_out(
    times_ns: np.ndarray, labels: np.ndarray, starts_ns: np.ndarray, ends_ns: np.ndarray, options: SplitOptions
) -> np.ndarray:
    """2 (test), -1 (left out) or 0 (train or validation, decided by blocks) per row. A labelled
    row (label-series's rule) never goes to training or validation."""
    split = np.zeros(times_ns.size, dtype=np.int8)
    anomalous = np.asarray(labels) != 0
    period_starts, period_ends = options.periods()
    if period_starts.size:
        split[anomalous] = -1
        split[label_rows(times_ns, period_starts, period_ends).astype(bool)] = 2
    else:
        window = int(pd.Timedelta(hours=options.test_window_hours).value)
        split[label_rows(times_ns, starts_ns - window, ends_ns + window).astype(bool) | anomalous] = 2
    return split


def time_blocks(times_ns: np.ndarray, first_ns: int, options: SplitOptions) -> np.ndarray:
    """The number of each row's `block_hours` block, counted from the series' first time."""
    return (times_ns - first_ns) // int(pd.Timedelta(hours=options.block_hours).value)


def validation_blocks(blocks: np.ndarray, options: SplitOptions) -> np.ndarray:
    """The seeded draw of `val_share` of the (sorted, distinct) blocks that go to validation."""
    n_val = min(max(1, round(options.val_share * blocks.size)), blocks.size - 1)
    return np.random.default_rng(options.seed).choice(blocks, size=max(n_val, 0), replace=False)


def run_split_dataset(
    labelled_url: str,
    intervals_url: str,
    train_url: str,
    val_url: str,
    test_url: str,
    options: SplitOptions,
    tasks: Tasks,
    label_column: str = "label",
    scratch_url: str = "",
) -> dict[str, int]:
    """Write the train, validation and test sets (datasets, see `datasets`); return their row counts.

    Two passes over the labelled telemetry: this process reads its times and labels, a batch at a
    time, and draws the validation blocks; then one Dask task per part writes that part's rows to
    the three sets. Memory holds a batch per worker thread and a count per block, whatever the rows.

    Args:
        tasks: Where the tasks run (`cluster.dask.step_tasks`).
        scratch_url: See `datasets.map_parts` (workers in pods of their own).

    Raises:
        InputError: The labels are missing, no interval overlaps the telemetry (empty test
            set), or too little time is left for train and validation.
    """
    from tqdm.auto import tqdm

    options.validate()
    labelled = datasets.parts(labelled_url)
    if label_column not in datasets.schema(labelled_url).names:
        raise InputError(f"telemetry {labelled_url} has no label column '{label_column}': run label-series first")
    intervals = read_intervals(intervals_url)
    starts, ends = to_ns(intervals["start"]), to_ns(intervals["end"])
    first: int | None = None
    rows_per_block: dict[int, int] = {}
    counts = {"test": 0, "left_out": 0}
    with tqdm(total=sum(p.rows for p in labelled), desc="split: draw blocks", unit="row") as bar:
        for frame in datasets.iter_frames(labelled_url, [label_column], dataset_parts=labelled):
            times = datasets.time_index_ns(frame, labelled_url)
            first = int(times[0]) if first is None and times.size else first
            split = held_out(times, frame[label_column].to_numpy(), starts, ends, options)
            rest = split == 0
            blocks, sizes = np.unique(time_blocks(times[rest], first or 0, options), return_counts=True)
            for block, size in zip(blocks.tolist(), sizes.tolist(), strict=True):
                rows_per_block[block] = rows_per_block.get(block, 0) + size
            counts["test"] += int((split == 2).sum())
            counts["left_out"] += int((split == -1).sum())
            bar.update(len(frame))
    val_blocks = validation_blocks(np.array(sorted(rows_per_block), dtype=np.int64), options)
    counts["val"] = sum(rows_per_block[int(b)] for b in val_blocks)
    counts["train"] = sum(rows_per_block.values()) - counts["val"]
    if counts["test"] == 0 and options.test_periods:
        raise InputError(f"no row of {labelled_url} lies in --test-periods {options.test_periods}")
    if counts["test"] == 0:
        raise InputError(
            f"no anomaly interval in {intervals_url} overlaps the telemetry in {labelled_url}: "
            "the test set would be empty"
        )
    if counts["train"] == 0 or counts["val"] == 0:
        raise InputError(
            f"telemetry {labelled_url} leaves {counts['train']} train and {counts['val']} validation rows outside the "
            f"test windows: lower --test-window-hours or --block-hours (or widen the time outside --test-periods)"
        )
    if counts["left_out"]:
        print(f"note: {counts['left_out']} labelled row(s) outside --test-periods are left out of training", flush=True)
    else:
        del counts["left_out"]
    args = (starts, ends, options, first or 0, val_blocks, labelled_url, label_column)
    datasets.map_parts(
        tasks, labelled_url, [train_url, val_url, test_url], _split_part, args, scratch_url, "split: write"
    )
    return {name: counts[name] for name in ("train", "val", "test", "left_out") if name in counts}


def _split_part(
    part_url: str,
    targets: list[str],
    starts: np.ndarray,
    ends: np.ndarray,
    options: SplitOptions,
    first_ns: int,
    val_blocks: np.ndarray,
    labelled_url: str,
    label_column: str,
) -> tuple[list[datasets.Part], None]:
    """One Dask task of `run_split_dataset`: send each row of one part to its set."""
    writers = [datasets.PartWriter(target) for target in targets]
    try:
        for table in datasets.iter_part_tables(part_url):
            times = datasets.times_ns(table)
            if times is None:
                raise InputError(f"{labelled_url} is not indexed by time (preprocess writes a time index)")
            split = held_out(times, table.column(label_column).to_numpy(), starts, ends, options)
            split[(split == 0) & np.isin(time_blocks(times, first_ns, options), val_blocks)] = 1
            for code, out in enumerate(writers):
                out.write(table.filter(split == code))
    except BaseException:
        for out in writers:
            out.abort()
        raise
    return [out.close() for out in writers], None
