import numpy as np
import pandas as pd
import pytest

from container_component_src.errors import OptionError
from container_component_src.evaluation import metrics
from container_component_src.evaluation.metrics import (
    SWEEP_COLUMNS,
    average_precision,
    baselines,
    event_peaks,
    find_events,
    metrics_at,
    quantile_threshold,
    sweep_thresholds,
    threshold_grid,
)

SCORES = np.array([0.1, 0.9, 0.2, 0.8, 0.1, 0.7, 0.1])
LABELS = np.array([0, 1, 1, 0, 0, 1, 1])


def reference_sweep(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """The definitions written out row by row and event by event."""
    events, current = [], None
    for i, label in enumerate(labels):
        if label and current is None:
            current = i
        if not label and current is not None:
            events.append((current, i))
            current = None
    if current is not None:
        events.append((current, len(labels)))

    def harmonic(a: float, b: float) -> float:
        return 2 * a * b / (a + b) if a + b else 0.0

    n_normal = sum(1 for label in labels if not label)
    rows = []
    for t in thresholds:
        flagged = [s > t for s in scores]
        tp = sum(1 for f, y in zip(flagged, labels, strict=True) if f and y)
        fp = sum(1 for f, y in zip(flagged, labels, strict=True) if f and not y)
        fn = sum(1 for f, y in zip(flagged, labels, strict=True) if not f and y)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        found = [any(flagged[a:b]) for a, b in events]
        event_recall = sum(found) / len(events) if events else 0.0
        pa_tp = sum(b - a for (a, b), f in zip(events, found, strict=True) if f)
        pa_precision = pa_tp / (pa_tp + fp) if pa_tp + fp else 0.0
        pa_recall = pa_tp / (tp + fn) if tp + fn else 0.0
        rows.append(
            {
                "threshold": t,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "flagged_share": (tp + fp) / len(scores),
                "false_alarm_rate": fp / n_normal if n_normal else 0.0,
                "precision": precision,
                "recall": recall,
                "f1": harmonic(precision, recall),
                "events_found": sum(found),
                "event_recall": event_recall,
                "fc1": harmonic(precision, event_recall),
                "pa_precision": pa_precision,
                "pa_recall": pa_recall,
                "pa_f1": harmonic(pa_precision, pa_recall),
            }
        )
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def reference_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    total, previous_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        flagged = scores >= t
        tp = int((flagged & (labels == 1)).sum())
        precision, recall = tp / flagged.sum(), tp / labels.sum()
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


def test_events_are_runs_of_ones_including_one_at_the_end() -> None:
    starts, ends = find_events(np.array([1, 1, 0, 1, 0, 0, 1]))
    assert starts.tolist() == [0, 3, 6] and ends.tolist() == [2, 4, 7]
    assert [a.size for a in find_events(np.zeros(4))] == [0, 0]


def test_event_peaks_look_only_inside_each_event() -> None:
    peaks = event_peaks(np.array([5.0, 1.0, 2.0, 9.0, 3.0]), np.array([1, 4]), np.array([3, 5]))
    assert peaks.tolist() == [2.0, 3.0]


def test_hand_computed_case() -> None:
    m = metrics_at(SCORES, LABELS, 0.5)  # flags rows 1, 3 and 5
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 2)
    assert m["false_alarm_rate"] == pytest.approx(1 / 3)  # one of the three normal rows
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["events_found"] == 2 and m["event_recall"] == 1.0
    assert m["fc1"] == pytest.approx(0.8)
    assert m["pa_precision"] == pytest.approx(0.8) and m["pa_recall"] == 1.0 and m["pa_f1"] == pytest.approx(8 / 9)
    m = metrics_at(SCORES, LABELS, 0.85)  # flags row 1 only: one of two events
    assert m["precision"] == 1.0 and m["recall"] == 0.25 and m["event_recall"] == 0.5
    assert m["fc1"] == pytest.approx(2 / 3) and m["pa_recall"] == 0.5


def test_a_score_equal_to_the_threshold_is_not_flagged() -> None:
    assert metrics_at(SCORES, LABELS, 0.9)["tp"] == 0
    assert metrics_at(SCORES, LABELS, 0.8999)["tp"] == 1


def test_no_prediction_gives_zeros_not_nan() -> None:
    m = metrics_at(SCORES, LABELS, 5.0)
    assert m["flagged_share"] == 0 and m["precision"] == m["recall"] == m["fc1"] == m["pa_f1"] == 0.0


def test_no_anomaly_in_the_data_gives_zeros_not_nan() -> None:
    labels = np.zeros(7, dtype=int)
    sweep = sweep_thresholds(SCORES, labels, np.array([-1.0, 0.5, 2.0]))
    assert not sweep.isna().any().any()
    assert (sweep[["recall", "event_recall", "fc1", "pa_recall", "f1"]] == 0).all().all()
    assert sweep["fp"].tolist() == [7, 3, 0]
    assert average_precision(SCORES, labels) == 0.0


def test_an_event_that_runs_to_the_last_row_is_found() -> None:
    m = metrics_at(np.array([0.0, 0.0, 0.0, 5.0]), np.array([0, 0, 1, 1]), 1.0)
    assert m["events_found"] == 1 and m["event_recall"] == 1.0 and m["pa_recall"] == 1.0 and m["recall"] == 0.5


def test_all_flagged_is_the_all_positive_detector() -> None:
    m = metrics_at(SCORES, LABELS, -1.0)
    assert m["recall"] == m["event_recall"] == 1.0 and m["precision"] == pytest.approx(4 / 7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_matches_the_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(400) < 0.08).astype(int)
    labels = np.maximum(labels, np.roll(labels, 1))  # runs of 2+ rows, some at the ends
    scores = np.round(rng.normal(size=400) + 1.5 * labels, 1)  # rounding makes ties
    thresholds = np.concatenate(([scores.min() - 1], np.unique(scores), [scores.max() + 1]))
    pd.testing.assert_frame_equal(
        sweep_thresholds(scores, labels, thresholds), reference_sweep(scores, labels, thresholds), check_dtype=False
    )
    assert average_precision(scores, labels) == pytest.approx(reference_average_precision(scores, labels))


def test_perfect_and_inverted_rankings() -> None:
    assert average_precision(np.array([0.1, 0.9, 0.8, 0.2]), np.array([0, 1, 1, 0])) == pytest.approx(1.0)
    assert average_precision(np.array([0.9, 0.1, 0.2, 0.8]), np.array([0, 1, 1, 0])) == pytest.approx(5 / 12)


def test_threshold_grid() -> None:
    scores = np.arange(1000.0)
    grid = threshold_grid(scores, 11, 0.5, 1.0)
    assert grid[0] == 500 and grid[-1] == 999 and len(grid) == 11 and (np.diff(grid) > 0).all()
    assert len(threshold_grid(np.ones(50), 100)) == 1
    with pytest.raises(ValueError, match="n-thresholds"):
        threshold_grid(scores, 1)
    with pytest.raises(ValueError, match="quantiles"):
        threshold_grid(scores, 10, 0.9, 0.2)


def test_quantile_threshold() -> None:
    assert quantile_threshold(np.arange(101.0), 0.99) == pytest.approx(99.0)
    with pytest.raises(ValueError, match="val-quantile"):
        quantile_threshold(np.arange(3.0), 1.5)
    with pytest.raises(ValueError, match="no validation score"):
        quantile_threshold(np.array([]), 0.9)


def test_bad_scores_and_labels() -> None:
    with pytest.raises(ValueError, match="1 anomaly score"):
        metrics_at(np.array([0.1, np.nan]), np.array([0, 1]), 0.0)
    with pytest.raises(ValueError, match="0 or 1"):
        metrics_at(np.array([0.1, 0.2]), np.array([0, 2]), 0.0)
    with pytest.raises(ValueError, match="one length"):
        metrics_at(np.array([0.1, 0.2]), np.array([0]), 0.0)


def test_baselines() -> None:
    labels = np.zeros(1000, dtype=int)
    labels[100:200] = 1
    b = baselines(labels, flagged_share=0.1)
    assert b["all_positive_f1"] == pytest.approx(2 * 0.1 / 1.1)
    assert b["all_positive_fc1"] == pytest.approx(2 * 0.1 / 1.1)  # one event, found
    assert b["random_f1"] < 0.25


def test_top_k_flags_rows_strictly_above_the_kth_largest_score() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
    threshold = metrics.top_k_threshold(scores, 2)
    assert threshold == 0.9 and (scores > threshold).sum() == 0, "ties at the k-th score are not flagged"
    assert metrics.top_k_threshold(scores, 3) == 0.5
    assert (scores > metrics.top_k_threshold(scores, 3)).sum() == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.5])
def test_rate_threshold_is_the_lowest_that_keeps_the_rate(seed: int, rate: float) -> None:
    rng = np.random.default_rng(seed)
    # Rounded, so that many scores tie; a fifth of the rows anomalous and higher.
    labels = (rng.random(997) < 0.2).astype(int)
    scores = np.round(rng.normal(size=labels.size) + 2 * labels, 1)
    threshold = metrics.rate_threshold(scores, labels, rate)
    normal = scores[labels == 0]
    assert (normal > threshold).mean() <= rate
    lower = normal[normal < threshold]
    if lower.size:  # any lower threshold breaks it
        assert (normal > lower.max()).mean() > rate
    assert metrics_at(scores, labels, threshold)["false_alarm_rate"] == (normal > threshold).mean()


def test_rate_threshold_at_the_edges() -> None:
    scores = np.array([0.3, 0.9])
    assert metrics.rate_threshold(scores, np.array([1, 1]), 0.01) == 0.9
    # Two normal rows: half of them may be flagged at 0.5, none below it.
    assert metrics.rate_threshold(np.array([0.2, 0.5, 0.9]), np.array([0, 0, 1]), 0.5) == 0.2
    assert metrics.rate_threshold(np.array([0.2, 0.5, 0.9]), np.array([0, 0, 1]), 0.4) == 0.5


@pytest.mark.parametrize(
    ("sample", "exact"),
    [
        (lambda rng: rng.exponential(size=200_000), -np.log(1e-4)),
        (lambda rng: rng.pareto(3.0, size=200_000), 1e-4 ** (-1 / 3) - 1),
    ],
)
def test_peaks_over_threshold_extrapolates_the_tail(sample, exact: float) -> None:
    scores = sample(np.random.default_rng(0))
    threshold = metrics.pot_threshold(scores, risk=1e-4, level=0.98)
    assert threshold == pytest.approx(exact, rel=0.15)


def test_peaks_over_threshold_falls_back_to_the_quantile_with_few_peaks() -> None:
    scores = np.arange(100.0)
    assert metrics.pot_threshold(scores, risk=0.05, level=0.95) == pytest.approx(np.quantile(scores, 0.95))
    with pytest.raises(OptionError, match="--pot-risk"):
        metrics.pot_threshold(scores, risk=0.0)
