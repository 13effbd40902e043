"""Train/validation/test split by time.

By default the test set is cut around each anomaly, and train and validation are whole blocks of
the rest. A user with separate recordings names the test periods instead (`test_periods`): every
row in them is test, validation blocks are carved from the rest, and labelled rows outside them
are kept out of training and validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from container_component_src import storage
from container_component_src.data.labels import label_rows, to_ns
from container_component_src.errors import OptionError
from container_component_src.storage import InputError


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
            bounds = text.split("/")
            try:
                if len(bounds) != 2:
                    raise ValueError("expected start/end")
                start, end = (pd.Timestamp(b.strip()) for b in bounds)
                start, end = (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC") for t in (start, end))
            except ValueError as exc:
                raise OptionError(f"--test-periods: {text!r} is not start/end as ISO timestamps ({exc})") from None
            if end < start:
                raise OptionError(f"--test-periods: {text!r} ends before it starts")
            starts.append(start.value)
            ends.append(end.value)
        return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)

    def validate(self) -> None:
        if self.test_window_hours < 0:
            raise OptionError(f"--test-window-hours must be >= 0, got {self.test_window_hours}")
        if not 0.0 < self.val_share < 1.0:
            raise OptionError(f"--val-share must be in (0, 1), got {self.val_share}")
        if self.block_hours <= 0:
            raise OptionError(f"--block-hours must be > 0, got {self.block_hours}")
        self.periods()


def assign_splits(
    times_ns: np.ndarray, starts_ns: np.ndarray, ends_ns: np.ndarray, options: SplitOptions
) -> np.ndarray:
    """Return 0 (train), 1 (val), 2 (test) or -1 (left out) per row.

    Test: every row within `test_window_hours` of an anomaly interval, or, when `test_periods`
    is given, every row in those periods (then labelled rows outside them are left out). The
    other rows are cut into `block_hours` blocks; a seeded draw sends `val_share` of the blocks
    to validation.
    """
    split = np.zeros(times_ns.size, dtype=np.int8)
    period_starts, period_ends = options.periods()
    if period_starts.size:
        split[label_rows(times_ns, starts_ns, ends_ns).astype(bool)] = -1
        split[label_rows(times_ns, period_starts, period_ends).astype(bool)] = 2
    else:
        window = int(pd.Timedelta(hours=options.test_window_hours).value)
        split[label_rows(times_ns, starts_ns - window, ends_ns + window).astype(bool)] = 2
    rest = split == 0
    block_ns = int(pd.Timedelta(hours=options.block_hours).value)
    blocks = (times_ns[rest] - times_ns.min()) // block_ns if rest.any() else np.empty(0, dtype=np.int64)
    unique = np.unique(blocks)
    n_val = min(max(1, round(options.val_share * unique.size)), unique.size - 1)
    val_blocks = np.random.default_rng(options.seed).choice(unique, size=max(n_val, 0), replace=False)
    split[np.flatnonzero(rest)[np.isin(blocks, val_blocks)]] = 1
    return split


def run_split_dataset(
    labelled_url: str,
    intervals_url: str,
    train_url: str,
    val_url: str,
    test_url: str,
    options: SplitOptions,
    label_column: str = "label",
) -> dict[str, int]:
    """Write the train, validation and test sets; return their row counts.

    Raises:
        InputError: The labels are missing, no interval overlaps the telemetry (empty test
            set), or too little time is left for train and validation.
    """
    options.validate()
    frame = storage.read_parquet(labelled_url)
    if label_column not in frame.columns:
        raise InputError(f"telemetry {labelled_url} has no label column '{label_column}': run label-series first")
    intervals = storage.read_parquet(intervals_url)
    split = assign_splits(to_ns(frame.index), to_ns(intervals["start"]), to_ns(intervals["end"]), options)
    counts = {name: int((split == code).sum()) for code, name in enumerate(("train", "val", "test"))}
    if counts["test"] == 0 and options.test_periods:
        raise InputError(f"no row of {labelled_url} lies in --test-periods {options.test_periods}")
    if counts["test"] == 0:
        raise InputError(
            f"no anomaly interval in {intervals_url} overlaps the telemetry in {labelled_url}: "
            "the test set would be empty"
        )
    if (split == -1).any():
        counts["left_out"] = int((split == -1).sum())
        print(f"note: {counts['left_out']} labelled row(s) outside --test-periods are left out of training", flush=True)
    if counts["train"] == 0 or counts["val"] == 0:
        raise InputError(
            f"telemetry {labelled_url} leaves {counts['train']} train and {counts['val']} validation rows outside the "
            f"test windows: lower --test-window-hours or --block-hours (or widen the time outside --test-periods)"
        )
    if frame[label_column].to_numpy()[(split == 0) | (split == 1)].any():
        raise AssertionError("labelled rows outside the test windows")
    for code, url in enumerate((train_url, val_url, test_url)):
        storage.write_parquet(frame[split == code], url)
    return counts
