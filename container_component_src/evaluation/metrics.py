"""Detection metrics over anomaly scores: point-wise, event-wise (Fc1) and point-adjusted.

A row is flagged when its score is strictly above the threshold. An event is a run of
consecutive rows labelled 1. Every ratio whose denominator is zero is 0 (as scikit-learn's
`zero_division=0`): no prediction gives precision 0, no anomaly gives recall 0.

The sweep sorts the scores once and answers every threshold with binary searches over
cumulative counts, so a thousand thresholds cost about one sort.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from container_component_src.errors import OptionError

SWEEP_COLUMNS = (
    "threshold",
    "tp",
    "fp",
    "fn",
    "flagged_share",
    "false_alarm_rate",
    "precision",
    "recall",
    "f1",
    "events_found",
    "event_recall",
    "fc1",
    "pa_precision",
    "pa_recall",
    "pa_f1",
)


def find_events(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) row indices of each run of consecutive 1s in `labels`."""
    labels = np.asarray(labels).astype(bool, copy=False)
    if len(labels) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    changes = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    edges = np.concatenate(([0] if labels[0] else [], changes, [len(labels)] if labels[-1] else [])).astype(np.int64)
    return edges[::2], edges[1::2]


def event_peaks(scores: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The highest score within each event [start, end) of `find_events` (disjoint, non-empty)."""
    if len(starts) == 0:
        return np.empty(0)
    bounds = np.column_stack((starts, ends)).ravel()
    if bounds[-1] == len(scores):  # The last event reaches the end: reduceat runs to the end anyway.
        bounds = bounds[:-1]
    return np.maximum.reduceat(scores, bounds)[::2]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _harmonic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _ratio(2 * a * b, a + b)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-D and of one length")
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} anomaly score(s) are NaN")
    if labels.dtype != bool and len(labels):
        fractional = labels.dtype.kind == "f" and not np.isin(labels, (0, 1)).all()
        if fractional or labels.min() < 0 or labels.max() > 1:
            raise ValueError("labels must be 0 or 1")
    return scores, labels.astype(bool)


def sweep_thresholds(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Every metric at every threshold, one row per threshold (columns: `SWEEP_COLUMNS`).

    Args:
        scores: Anomaly score per row (higher is more anomalous), in time order.
        labels: 1 where the row is anomalous, in the same order.
        thresholds: Thresholds to evaluate; a row is flagged when its score is above one.

    Returns:
        Point-wise tp/fp/fn, the share of rows flagged, the false-alarm rate (flagged normal
        rows / normal rows), precision, recall and F1; events found and event-wise recall;
        Fc1 (Garg et al. 2021: harmonic mean of point-wise precision and event-wise recall);
        point-adjusted precision, recall and F1 (a found event counts all its rows as found).
    """
    scores, labels = _check(scores, labels)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    positives, negatives = np.sort(scores[labels]), np.sort(scores[~labels])
    # Rows above t: total minus those at or below it.
    tp = len(positives) - np.searchsorted(positives, thresholds, side="right")
    fp = len(negatives) - np.searchsorted(negatives, thresholds, side="right")
    fn = len(positives) - tp

    starts, ends = find_events(labels)
    event_max = event_peaks(scores, starts, ends)
    order = np.argsort(event_max, kind="stable")
    event_max, lengths = event_max[order], (ends - starts)[order]
    below = np.searchsorted(event_max, thresholds, side="right")
    events_found = len(event_max) - below
    # Point adjustment: every row of a found event counts as a true positive.
    cumulative_lengths = np.concatenate(([0], np.cumsum(lengths)))
    pa_tp = cumulative_lengths[-1] - cumulative_lengths[below]

    precision, recall = _ratio(tp, tp + fp), _ratio(tp, len(positives))
    event_recall = _ratio(events_found, len(event_max))
    pa_precision, pa_recall = _ratio(pa_tp, pa_tp + fp), _ratio(pa_tp, len(positives))
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "flagged_share": _ratio(tp + fp, np.full(len(thresholds), len(scores))),
            "false_alarm_rate": _ratio(fp, np.full(len(thresholds), len(negatives))),
            "precision": precision,
            "recall": recall,
            "f1": _harmonic(precision, recall),
            "events_found": events_found,
            "event_recall": event_recall,
            "fc1": _harmonic(precision, event_recall),
            "pa_precision": pa_precision,
            "pa_recall": pa_recall,
            "pa_f1": _harmonic(pa_precision, pa_recall),
        },
        columns=list(SWEEP_COLUMNS),
    )


def metrics_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """All sweep metrics at one threshold, as plain numbers."""
    row = sweep_thresholds(scores, labels, np.array([threshold])).iloc[0]
    return {name: float(value) for name, value in row.items()}


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve, as the step sum over distinct score values
    (scikit-learn's `average_precision_score`); 0 when there is no anomaly."""
    scores, labels = _check(scores, labels)
    n_positive = int(labels.sum())
    if n_positive == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    # Ties share one threshold: take the cumulative counts at the last row of each score value.
    last_of_value = np.concatenate((np.flatnonzero(np.diff(ranked)), [len(ranked) - 1]))
    tp = np.cumsum(labels[order])[last_of_value]
    precision = tp / (last_of_value + 1)
    recall = tp / n_positive
    return float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))


def threshold_grid(scores: np.ndarray, count: int, low_quantile: float = 0.0, high_quantile: float = 1.0) -> np.ndarray:
    """Up to `count` distinct thresholds at evenly spaced quantiles of `scores` (dense where scores are).

    Raises:
        ValueError: `count` below 2 or quantiles outside 0 <= low < high <= 1.
    """
    if count < 2:
        raise OptionError(f"--n-thresholds must be at least 2, got {count}")
    if not 0.0 <= low_quantile < high_quantile <= 1.0:
        raise OptionError(f"threshold quantiles must satisfy 0 <= low < high <= 1, got {low_quantile}, {high_quantile}")
    ranked = np.sort(np.asarray(scores, dtype=np.float64))
    positions = np.linspace(low_quantile, high_quantile, count) * (len(ranked) - 1)
    return np.unique(ranked[np.round(positions).astype(np.int64)])


def quantile_threshold(scores: np.ndarray, quantile: float) -> float:
    """The label-free threshold: the `quantile` of (anomaly-free) validation scores.

    Raises:
        ValueError: No score, or `quantile` outside (0, 1].
    """
    if not 0.0 < quantile <= 1.0:
        raise OptionError(f"--val-quantile must be in (0, 1], got {quantile}")
    if len(scores) == 0:
        raise ValueError("no validation score to take the threshold from")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), quantile))


def baselines(labels: np.ndarray, flagged_share: float, seed: int = 0) -> dict[str, float]:
    """Fc1 and point F1 of trivial detectors on the same labels: every row flagged, and random
    scores flagging the same share of rows as the detector under test."""
    labels = np.asarray(labels).astype(bool)
    everything = metrics_at(np.ones(len(labels)), labels, 0.0)
    random_scores = np.random.default_rng(seed).random(len(labels))
    random = metrics_at(random_scores, labels, float(np.quantile(random_scores, 1.0 - flagged_share)))
    return {
        "all_positive_fc1": everything["fc1"],
        "all_positive_f1": everything["f1"],
        "random_fc1": random["fc1"],
        "random_f1": random["f1"],
    }


def top_k_threshold(scores: np.ndarray, k: int) -> float:
    """The threshold of the literature's top-k protocol: the k-th largest score (k = the number
    of anomalous rows), so that only rows strictly above it are flagged (ties are not)."""
    ranked = np.sort(np.asarray(scores, dtype=np.float64))
    if k <= 0 or len(ranked) == 0:
        return float(np.inf) if len(ranked) == 0 else float(ranked[-1])
    return float(ranked[-min(k, len(ranked))])


def rate_threshold(scores: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """The lowest threshold that flags at most `rate` of the normal rows (label 0): what keeping a
    false-alarm promise on these rows would take, read off their labels (a diagnostic, not a
    rule an operator can apply). Ties at the threshold are not flagged; with no normal row, the
    largest score (nothing is promised about rows that are not there)."""
    scores, labels = _check(scores, labels)
    normal = np.sort(scores[labels == 0])
    if normal.size == 0:
        return float(scores.max()) if scores.size else float(np.inf)
    allowed = int(np.floor(max(rate, 0.0) * normal.size + 1e-9))
    return float(normal[normal.size - 1 - min(allowed, normal.size - 1)])


def _gpd_moments(excesses: np.ndarray) -> tuple[float, float]:
    """Shape and scale of a generalised Pareto distribution fitted to `excesses` (> 0) by
    probability-weighted moments (Hosking and Wallis 1987): closed form, no optimiser to fail."""
    y = np.sort(excesses)
    n = y.size
    a0 = y.mean()
    a1 = np.mean(y * (1.0 - (np.arange(1, n + 1) - 0.35) / n))
    k = a0 / (a0 - 2.0 * a1) - 2.0
    sigma = 2.0 * a0 * a1 / (a0 - 2.0 * a1)
    return -k, sigma  # Hosking's k is minus the usual shape xi


def pot_threshold(scores: np.ndarray, risk: float, level: float = 0.98, min_excesses: int = 10) -> float:
    """The label-free threshold from extreme value theory (peaks over threshold, as SPOT's
    initialisation: Siffer et al., KDD 2017): fit a generalised Pareto distribution to the
    excesses of validation scores over their `level` quantile, and return the score exceeded
    with probability `risk`.

    With fewer than `min_excesses` peaks, or a fit that is not a proper tail, the `1 - risk`
    quantile of the scores is returned instead.

    Raises:
        OptionError: `risk` outside (0, 1) or `level` outside (0, 1).
    """
    if not 0.0 < risk < 1.0:
        raise OptionError(f"--pot-risk must be in (0, 1), got {risk}")
    if not 0.0 < level < 1.0:
        raise OptionError(f"--pot-level must be in (0, 1), got {level}")
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no validation score to take the threshold from")
    initial = float(np.quantile(scores, level))
    threshold = tail_threshold(initial, scores[scores > initial] - initial, len(scores), risk, min_excesses)
    return float(np.quantile(scores, 1.0 - risk)) if threshold is None else threshold


def tail_threshold(
    initial: float, excesses: np.ndarray, n_scores: int, risk: float, min_excesses: int = 10
) -> float | None:
    """The score exceeded with probability `risk`, from a generalised Pareto tail fitted to the
    `excesses` over `initial` of `n_scores` scores; None with fewer than `min_excesses` excesses
    or a fit that is not a proper tail."""
    if excesses.size < min_excesses or not np.isfinite(excesses).all() or np.ptp(excesses) == 0:
        return None
    xi, sigma = _gpd_moments(excesses)
    ratio = risk * n_scores / excesses.size
    if not np.isfinite(sigma) or sigma <= 0 or not np.isfinite(xi):
        return None
    if abs(xi) < 1e-9:
        return initial - sigma * float(np.log(ratio))
    return float(initial + sigma / xi * (ratio ** (-xi) - 1.0))
