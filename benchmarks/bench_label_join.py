"""Label join: the vectorised interval join against a per-row Python loop over all reports."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import best_of
from container_component_src.data.labels import label_rows

SECOND = 1_000_000_000


def naive_label_rows(times: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The baseline: for every row, test it against every report."""
    return np.array([((starts <= t) & (t <= ends)).any() for t in times], dtype=np.int8)


def run(n_rows: int = 10_000_000, n_intervals: int = 1_000, n_naive_rows: int = 20_000) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    times = np.arange(n_rows, dtype=np.int64) * SECOND
    starts = rng.integers(0, n_rows, n_intervals) * SECOND
    ends = starts + rng.integers(60, 4 * 3600, n_intervals) * SECOND
    vectorised_s, labels = best_of(3, lambda: label_rows(times, starts, ends))
    naive_s, naive = best_of(1, lambda: naive_label_rows(times[:n_naive_rows], starts, ends))
    if not np.array_equal(naive, labels[:n_naive_rows]):
        raise AssertionError("vectorised and naive labels differ")
    speedup = (naive_s / n_naive_rows) / (vectorised_s / n_rows)
    return [
        {
            "benchmark": "label join",
            "case": f"{n_rows / 1e6:.0f} M rows x {n_intervals} intervals",
            "seconds": round(vectorised_s, 3),
            "rows_per_s": round(n_rows / vectorised_s),
            "baseline": f"per-row loop ({n_naive_rows:,} rows, {naive_s:.2f} s)",
            "ratio": round(speedup, 1),
            "ratio_meaning": "speed-up per row over the per-row loop",
            "target": "10 M x 1,000 in < 2 s",
            "met": vectorised_s < 2.0,
        }
    ]
