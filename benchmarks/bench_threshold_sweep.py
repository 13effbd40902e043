"""Threshold sweep: sort once + cumulative counts, against one sort and a per-threshold loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import best_of
from container_component_src.evaluation.metrics import find_events, sweep_thresholds, threshold_grid


def naive_sweep(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The baseline: flag, count and test every event again at each threshold; returns Fc1."""
    starts, ends = find_events(labels)
    positives = labels.astype(bool)
    fc1 = []
    for t in thresholds:
        flagged = scores > t
        tp, fp = np.count_nonzero(flagged & positives), np.count_nonzero(flagged & ~positives)
        precision = tp / (tp + fp) if tp + fp else 0.0
        event_recall = np.mean([flagged[a:b].any() for a, b in zip(starts, ends, strict=True)]) if len(starts) else 0.0
        fc1.append(2 * precision * event_recall / (precision + event_recall) if precision + event_recall else 0.0)
    return np.array(fc1)


def run(n_rows: int = 10_000_000, n_thresholds: int = 1_000, n_naive_thresholds: int = 10) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    labels = np.zeros(n_rows, dtype=np.int8)
    for start in rng.integers(0, n_rows - 500, n_rows // 10_000):
        labels[start : start + rng.integers(5, 500)] = 1
    scores = rng.gamma(2.0, size=n_rows) + 3.0 * labels * rng.random(n_rows)
    thresholds = threshold_grid(scores, n_thresholds)
    sort_s, _ = best_of(3, lambda: np.sort(scores))
    sweep_s, sweep = best_of(3, lambda: sweep_thresholds(scores, labels, thresholds))
    subset = thresholds[:: max(1, len(thresholds) // n_naive_thresholds)][:n_naive_thresholds]
    naive_s, naive = best_of(1, lambda: naive_sweep(scores, labels, subset))
    if not np.allclose(naive, sweep.set_index("threshold").loc[subset, "fc1"].to_numpy()):
        raise AssertionError("vectorised and naive Fc1 differ")
    naive_per_threshold = naive_s / len(subset)
    return [
        {
            "benchmark": "threshold sweep",
            "case": f"{len(thresholds):,} thresholds x {n_rows / 1e6:.0f} M scores",
            "seconds": round(sweep_s, 3),
            "rows_per_s": round(n_rows / sweep_s),
            "baseline": f"one np.sort ({sort_s:.2f} s); per-threshold loop ({naive_per_threshold:.3f} s each)",
            "ratio": round(sweep_s / sort_s, 2),
            "ratio_meaning": "sweep time / one sort",
            "speedup_vs_loop": round(naive_per_threshold * len(thresholds) / sweep_s, 1),
            "target": "about one sort (<= 2x)",
            "met": sweep_s <= 2.0 * sort_s,
        }
    ]
