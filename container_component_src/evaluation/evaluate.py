"""The evaluation stage: score validation and test rows, sweep thresholds, report, decide.

Label-free thresholds come from validation scores only (which hold no labelled anomaly): a
quantile, and one from extreme value theory (peaks over threshold, as SPOT). Both are reported;
`threshold_method` picks the one the deployed model uses and the deploy gate judges. Two more use
the test labels, to compare with published tables: the best-Fc1 threshold of a sweep, and the
top-k threshold (k = the number of anomalous test rows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from container_component_src import datasets, storage
from container_component_src.choices import ThresholdFollow, ThresholdMethod, choice
from container_component_src.data.scaling import describe_channels
from container_component_src.data.segments import SegmentNumbering, median_step_ns, segment_ids
from container_component_src.errors import OptionError
from container_component_src.evaluation import metrics, report, scoring
from container_component_src.evaluation.decision import (
    MODEL,
    PCA,
    RAW_SIGNAL,
    DeployDecision,
    gate_choice,
    gate_rank,
    keeps_promise,
    watch_block_rows,
)
from container_component_src.evaluation.follow import follow_of
from container_component_src.storage import InputError

if TYPE_CHECKING:
    from container_component_src.model.residual import ResidualDetector

CONFUSION_CATEGORIES = ["normal", "anomaly"]
ROC_POINTS = 200
SUMMARY_METRICS = (
    "threshold",
    "fc1",
    "f1",
    "precision",
    "recall",
    "event_recall",
    "pa_recall",
    "pa_f1",
    "false_alarm_rate",
)


@dataclass(frozen=True)
class EvaluateOptions:
    """How scores become decisions.

    Attributes:
        smoothing_window: Rows in the trailing rolling median of scores (1: no smoothing).
        val_quantile: Quantile of validation scores that gives the quantile threshold.
        threshold_method: "quantile" or "pot": the label-free threshold that is deployed.
        pot_risk: Probability that a normal score exceeds the peaks-over-threshold threshold.
        pot_level: Quantile of validation scores above which peaks are fitted.
        n_thresholds: Thresholds in the sweep.
        low_quantile: Lowest threshold of the sweep, as a quantile of test scores.
        high_quantile: Highest threshold of the sweep, as a quantile of test scores.
        worst_events: Highest-scoring events shown channel by channel in the report.
        label_column: Label column of the test set.
        seed: Seed of the random-score baseline.
        dataset: The data set's name, in the report's title.
        deploy_threshold: The deploy gate: the model is deployed when its Fc1 at the label-free
            threshold is above this (stated in the report).
        promise_tolerance: The gate prefers detectors whose false alarms on the test's normal rows
            are within this many times their threshold's promise (0: Fc1 alone decides).
        threshold_follow: "median": each label-free threshold follows its run's median score;
            "spread": its median and lower-quartile spread; "iqr": its median and interquartile
            range (`evaluation.follow`), in evaluation and in the server; "none": it stays as set;
            "auto": the rule the deploy gate finds best (`gate_follow`; `run_evaluate` resolves it
            before any flag is computed).
        follow_window: Rows of each run a following rule reads, the newest (0: the whole run);
            with "auto", the gate weighs each rule over whole runs and over this window.
    """

    smoothing_window: int = 1
    val_quantile: float = 0.99
    threshold_method: str = "quantile"
    pot_risk: float = 0.001
    pot_level: float = 0.98
    n_thresholds: int = 1000
    low_quantile: float = 0.0
    high_quantile: float = 1.0
    worst_events: int = 4
    label_column: str = "label"
    seed: int = 0
    dataset: str = "ECLSS"
    deploy_threshold: float = 0.5
    promise_tolerance: float = 2.0
    threshold_follow: str = "auto"
    follow_window: int = 30

    def __post_init__(self) -> None:
        if not self.promise_tolerance >= 0:
            raise OptionError(f"--promise-tolerance must be 0 (off) or more, got {self.promise_tolerance}")
        if self.follow_window < 0:
            raise OptionError(f"--follow-window must be 0 (the whole run) or more rows, got {self.follow_window}")
        choice(ThresholdFollow, self.threshold_follow, "--threshold-follow")

    @property
    def follows(self) -> bool:
        """Whether the label-free threshold follows each run (a resolved rule only)."""
        if self.threshold_follow == ThresholdFollow.auto:
            raise ValueError('threshold_follow "auto" is for the gate to resolve (gate_follow), not a rule to flag by')
        return self.threshold_follow != ThresholdFollow.none


def channel_weights(model: Any, count: int) -> np.ndarray:
    """Each channel's weight in the model's score (its `channel_weight` buffer; 1 where it has none)."""
    weight = getattr(model, "channel_weight", None)
    if weight is None:
        return np.ones(count)
    return weight.detach().cpu().numpy().astype(np.float64)


def input_bounds(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Each channel's input bounds in the model (`input_low`, `input_high`: the channels left out
    of its score are clamped to their training range); None when it bounds none."""
    if not getattr(model, "bounded_inputs", False):
        return None
    low, high = (getattr(model, name).detach().cpu().numpy().astype(np.float64) for name in ("input_low", "input_high"))
    return low, high


def fit_pca(
    url: str,
    channels: list[str],
    weights: np.ndarray,
    explained: float = 0.9,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> ResidualDetector:
    """A classical detector beside the model: the weighted squared reconstruction error of a row
    from the principal components of a split's rows, streamed a batch at a time (memory:
    channels^2): the fewest that explain `explained` of the variance, at most channels - 1 (so
    that a row always has an error to show). Inputs within `bounds`, as the model's."""
    from container_component_src.model.residual import ResidualDetector

    count, total, products = 0, np.zeros(len(channels)), np.zeros((len(channels), len(channels)))
    for frame in datasets.iter_frames(url, channels):
        values = scoring.channel_matrix(frame, channels, url).astype(np.float64)
        if bounds is not None:
            values = np.clip(values, *bounds)
        count += len(values)
        total += values.sum(axis=0)
        products += values.T @ values
    return ResidualDetector.principal(count, total, products, weights, explained, bounds)


@dataclass
class ChannelSums:
    """Each detector's channel shares of its score (`channel_scores`) summed over the rows of a
    split, as `score_split` streams them: the reference the false alarms are set against, with
    no second read of the split."""

    rows: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    def scores(self, name: str, shares: Any) -> np.ndarray:
        """Each row's score from its channel shares (shape (rows, channels)), the shares added
        to `name`'s sums (the rows are counted by the caller, once for all detectors)."""
        row_scores, sums = scoring.split_shares(shares)
        self.sums[name] = self.sums[name] + sums if name in self.sums else sums
        return row_scores

    def means(self, name: str) -> np.ndarray:
        """The mean share of each channel in `name`'s score (MODEL, or a classical detector's name)."""
        return self.sums[name] / max(self.rows, 1)


def score_split(
    model: Any,
    url: str,
    channels: list[str],
    window: int,
    label_column: str,
    progress: bool = True,
    detectors: dict[str, ResidualDetector] | None = None,
    per_row: bool = True,
    channel_sums: ChannelSums | None = None,
) -> pd.DataFrame:
    """Raw and smoothed scores of one split (a dataset, streamed a batch at a time), with its time
    segments, the classical detectors' scores and (when it has one) label, indexed by time.

    Each of `detectors` (by name: the raw signal, PCA; see `model.residual`) scores the rows
    beside the model, smoothed the same way (`<name>`) and, with `per_row`, per row too
    (`<name>_row`: a served detector's threshold is fitted on them). They weigh each channel as
    the model weighs it in its score (`channel_weight`: a few-valued channel lighter, a drifting
    one left out), so the comparison is fair.

    Memory holds a batch of channels and the scores of every row, once (each column is filled in
    place, never concatenated): the windows and the smoothing carry the rows they need across batch
    edges, so every score is the one of the whole series. Every detector scores a row as the sum of
    its channel shares, and `channel_sums` (when given) adds up those shares per channel (the
    model's under MODEL).

    Raises:
        InputError: The split holds no row, is not indexed by time, lacks a channel or holds NaN.
    """
    import torch
    from tqdm.auto import tqdm

    listed = datasets.parts(url)
    rows = sum(p.rows for p in listed)
    first = next(datasets.iter_frames(url, [], dataset_parts=listed))
    if rows == 0:
        raise InputError(f"{url} holds no rows")
    if not isinstance(first.index, pd.DatetimeIndex):
        raise InputError(f"{url} is not indexed by time: use the output of apply-scaler")
    numbering = SegmentNumbering(
        median_step_ns(datasets.time_index_ns(f, url) for f in datasets.iter_frames(url, [], dataset_parts=listed))
    )
    columns = [*channels, *([label_column] if label_column in datasets.schema(url).names else [])]
    scorer, keep = scoring.ChunkScorer(model, "channel_scores", np.float32), max(window - 1, 0)
    channel_sums = channel_sums if channel_sums is not None else ChannelSums()
    detectors = detectors or {}
    tail = {"score": np.empty(0), "segment": np.empty(0, np.int64), **{name: np.empty(0) for name in detectors}}
    # The columns, in their order, each filled in place a batch at a time.
    filled: dict[str, np.ndarray] = {
        "score": np.empty(rows),
        "smoothed_score": np.empty(rows),
        "segment": np.empty(rows, np.int64),
        **{name: np.empty(rows) for name in detectors},
        **({f"{name}_row": np.empty(rows) for name in detectors} if per_row else {}),
    }
    indexes, done = [], 0
    with tqdm(
        total=rows, desc=f"scoring {url.rstrip('/').rsplit('/', 1)[-1]}", unit="row", disable=not progress
    ) as bar:
        for frame in datasets.iter_frames(url, columns, dataset_parts=listed):
            values = scoring.channel_matrix(frame, channels, url)
            segments = numbering(datasets.time_index_ns(frame, url))
            # One detector's (rows, channels) shares at a time, dropped once summed.
            scores = {"score": channel_sums.scores(MODEL, scorer(values, segments))}
            with torch.inference_mode():
                for name, detector in detectors.items():
                    scores[name] = channel_sums.scores(name, detector.channel_scores(torch.from_numpy(values)))
            channel_sums.rows += len(values)
            # Smoothing restarts per segment: the last `window - 1` rows before are all it looks back at.
            scored = {name: np.concatenate([tail[name], new]) for name, new in {**scores, "segment": segments}.items()}
            smoothed = {
                name: scoring.smooth_scores(scored[name], window, scored["segment"])[len(tail["score"]) :]
                for name in scores
            }
            tail = {
                name: column[max(len(column) - keep, 0) :] if keep else column[:0] for name, column in scored.items()
            }
            here = slice(done, done + len(frame))
            filled["score"][here], filled["smoothed_score"][here] = scores["score"], smoothed["score"]
            filled["segment"][here] = segments
            for name in detectors:
                filled[name][here] = smoothed[name]
                if per_row:
                    filled[f"{name}_row"][here] = scores[name]
            if label_column in frame.columns:
                label = frame[label_column].to_numpy()
                filled.setdefault("label", np.empty(rows, label.dtype))[here] = label
            indexes.append(frame.index)
            done += len(frame)
            bar.update(len(frame))
    if done != rows:
        raise InputError(f"{url} holds {done:,} rows where its manifest says {rows:,}")
    # No copy of the columns (a frame built with copy=False keeps each array as it is).
    return pd.DataFrame(filled, index=indexes[0].append(indexes[1:]), copy=False)


def rows_at(url: str, ranges: list[tuple[int, int]], columns: list[str]) -> list[pd.DataFrame]:
    """The rows [start, end) of the dataset at `url` for each range, in one streaming pass."""
    found: list[list[pd.DataFrame]] = [[] for _ in ranges]
    offset = 0
    for frame in datasets.iter_frames(url, columns):
        for number, (start, end) in enumerate(ranges):
            low, high = max(start - offset, 0), min(end - offset, len(frame))
            if low < high:
                # A copy: a slice would keep its whole batch (every channel of up to a batch of
                # rows) alive, and samples spread over the split would keep all of them.
                found[number].append(frame.iloc[low:high].copy())
        offset += len(frame)
    return [pd.concat(parts) if parts else pd.DataFrame(columns=columns) for parts in found]


# False-alarm rows scored again to explain them: the cost stays flat as the rows grow.
EXPLAIN_ROWS = 2000
EXPLAIN_CHANNELS = 8


def spread_positions(mask: np.ndarray, count: int) -> np.ndarray:
    """At most `count` of the positions where `mask` holds, spread evenly over them."""
    positions = np.flatnonzero(mask)
    if len(positions) <= count:
        return positions
    return positions[np.linspace(0, len(positions) - 1, count).round().astype(int)]


def window_ranges(positions: np.ndarray, context: int) -> list[tuple[int, int]]:
    """The row ranges [start, end) that hold each of `positions` (sorted) with the `context` rows
    its window reads before it, overlapping ranges merged."""
    ranges: list[list[int]] = []
    for position in positions.tolist():
        start = max(0, position - context)
        if ranges and start <= ranges[-1][1]:
            ranges[-1][1] = position + 1
        else:
            ranges.append([start, position + 1])
    return [(start, end) for start, end in ranges]


@dataclass(frozen=True)
class FalseAlarmSample:
    """The false-alarm rows scored again: at most `EXPLAIN_ROWS` of them, spread evenly.

    Attributes:
        rows: All false-alarm rows.
        positions: The sampled ones' positions in the test split, in order.
        ranges: The test rows to read for them (`window_ranges`).
    """

    rows: int
    positions: np.ndarray
    ranges: list[tuple[int, int]]

    @classmethod
    def of(cls, false_alarm: np.ndarray, context: int) -> FalseAlarmSample:
        """The sample of the rows where `false_alarm` holds, for a detector reading `context` rows back."""
        positions = spread_positions(false_alarm, EXPLAIN_ROWS)
        return cls(int(np.count_nonzero(false_alarm)), positions, window_ranges(positions, context))


def mean_channel_scores(
    detector: Any,
    sample: FalseAlarmSample,
    pieces: list[pd.DataFrame],
    channels: list[str],
    segments: np.ndarray,
    source: str = "test set",
) -> np.ndarray:
    """Each channel's mean share of `detector`'s score over the sampled rows, each scored as in
    the whole series (from the rows of its range, `pieces`; the split's `segments`, row by row,
    restart windows at gaps)."""
    total = np.zeros(len(channels))
    positions = sample.positions
    for (start, end), rows in zip(sample.ranges, pieces, strict=True):
        values = scoring.channel_matrix(rows, channels, source)
        shares = scoring.score_rows(detector, values, segments[start:end], method="channel_scores")
        total += shares[positions[(positions >= start) & (positions < end)] - start].sum(axis=0)
    return total / max(len(positions), 1)


def false_alarm_channels(
    false_means: np.ndarray, normal_means: np.ndarray, channels: list[str], weights: np.ndarray, scaler: dict[str, Any]
) -> dict[str, Any]:
    """The channels behind the false alarms: each one's share of the score the false-alarm rows
    carry above the rows the threshold was fitted on (channels that carry less there count 0).

    Returns:
        `channels`: the `EXPLAIN_CHANNELS` largest shares, most first, each with its means, weight
        in the score, kind and drift share (see `data.scaling`); `drifting_share`: the share of
        the channels that drift in training, still weigh in the score and `drift_weight` could
        leave out (not when every continuous channel drifts: see `model.train.channel_weights`).
    """
    excess = np.maximum(np.asarray(false_means) - np.asarray(normal_means), 0.0)
    total = float(excess.sum())
    kinds, drifting = scaler.get("channel_kinds", {}), scaler.get("drifting_channels", {})
    # As `model.train.channel_weights`: when every continuous channel drifts, none can be left out.
    continuous = [c for c in channels if kinds.get(c, "continuous") == "continuous"]
    leavable = {} if all(c in drifting for c in continuous) else drifting
    weighed_drifting = np.array([c in leavable and w > 0 for c, w in zip(channels, weights, strict=True)])
    return {
        "channels": [
            {
                "channel": channels[i],
                "share": float(excess[i]) / total,
                "false_alarm_mean": float(false_means[i]),
                "validation_mean": float(normal_means[i]),
                "weight": float(weights[i]),
                "kind": kinds.get(channels[i], "continuous"),
                "drift_share": drifting.get(channels[i]),
            }
            for i in np.argsort(-excess, kind="stable")[:EXPLAIN_CHANNELS]
            if excess[i] > 0
        ],
        "drifting_share": float(excess[weighed_drifting].sum()) / total if total > 0 else 0.0,
    }


def explain_false_alarms(
    detector: Any,
    channels: list[str],
    sample: FalseAlarmSample,
    pieces: list[pd.DataFrame],
    segments: np.ndarray,
    reference: np.ndarray,
    scaler: dict[str, Any],
) -> dict[str, Any]:
    """Where the served detector's false alarms come from, channel by channel: its channel shares
    on the sampled false-alarm rows against their means on the validation rows its threshold was
    fitted on (`reference`, from `ChannelSums`).

    Args:
        detector: The served detector (the model or a classical one: both give `channel_scores`).
        sample: The sampled false-alarm rows, and `pieces`, the test rows of its ranges.
        segments: The test rows' segments.
        scaler: The scaler (channel kinds, drifting channels).

    Returns:
        `rows` (false-alarm rows), `sampled` (how many were scored again), and `channels` and
        `drifting_share` (`false_alarm_channels`; none and 0 without false alarms).
    """
    if sample.rows == 0:
        return {"rows": 0, "sampled": 0, "channels": [], "drifting_share": 0.0}
    means = mean_channel_scores(detector, sample, pieces, channels, segments)
    weights = channel_weights(detector, len(channels))
    return {"rows": sample.rows, "sampled": len(sample.positions)} | false_alarm_channels(
        means, reference, channels, weights, scaler
    )


def event_table(labels: np.ndarray, times: pd.DatetimeIndex, scores: np.ndarray) -> pd.DataFrame:
    """One row per labelled event: first and last row, timestamps and peak score."""
    starts, ends = metrics.find_events(labels)
    peaks = metrics.event_peaks(scores, starts, ends)
    return pd.DataFrame(
        {
            "first_row": starts,
            "last_row": ends - 1,
            "start": times[starts],
            "end": times[ends - 1],
            "peak_score": peaks,
        }
    )


def worst_events(events: pd.DataFrame, count: int) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """The `count` events with the highest peak score, and the test rows to read for each: the
    event with as many rows (at least 30) on either side."""
    worst = events.nlargest(count, "peak_score")
    ranges = []
    for _, event in worst.iterrows():
        margin = max(30, int(event["last_row"] - event["first_row"] + 1))
        ranges.append((max(0, int(event["first_row"]) - margin), int(event["last_row"]) + margin + 1))
    return worst, ranges


def event_views(
    model: Any, channels: list[str], worst: pd.DataFrame, pieces: list[pd.DataFrame], flags: np.ndarray
) -> list[report.EventView]:
    """Per-channel views of the `worst_events`, from their rows (`pieces`): each cut to the runs
    of rows (segments) the event touches, since rows across a gap belong to another run and would
    be drawn joined to it. `flags`: the test rows the label-free threshold flags (found or missed)."""
    views = []
    for (number, event), piece in zip(worst.iterrows(), pieces, strict=True):
        segments = segment_ids(piece.index)
        first, last = segments[piece.index.searchsorted([event["start"], event["end"]])]
        rows = piece[(segments >= first) & (segments <= last)]
        length = int(event["last_row"] - event["first_row"] + 1)
        values = scoring.channel_matrix(rows, channels, "test set")
        found = "found" if flags[int(event["first_row"]) : int(event["last_row"]) + 1].any() else "missed"
        views.append(
            report.EventView(
                title=f"Event {number + 1}: {event['start']:%Y-%m-%d %H:%M} to {event['end']:%H:%M} UTC, "
                f"{length} rows, peak score {event['peak_score']:.4g} ({found} at the label-free threshold)",
                times=rows.index,
                channels=channels,
                contributions=scoring.score_rows(model, values, segment_ids(rows.index), method="channel_scores").T,
                values=values.T,
                start=event["start"],
                end=event["end"],
            )
        )
    return views


def _roc(sweep: pd.DataFrame, n_negative: int) -> dict[str, list[float]]:
    """ROC points (false-positive rate, recall, threshold) from the sweep, at most `ROC_POINTS`."""
    keep = np.unique(np.linspace(0, len(sweep) - 1, min(ROC_POINTS, len(sweep))).round().astype(int))
    rows = sweep.iloc[keep]
    fpr = rows["fp"].to_numpy() / n_negative if n_negative else np.zeros(len(rows))
    return {"fpr": fpr.tolist(), "tpr": rows["recall"].tolist(), "thresholds": rows["threshold"].tolist()}


def label_free_thresholds(val_scores: np.ndarray, options: EvaluateOptions) -> dict[str, float]:
    """Both label-free thresholds of validation scores, by method."""
    return {
        ThresholdMethod.quantile: metrics.quantile_threshold(val_scores, options.val_quantile),
        ThresholdMethod.pot: metrics.pot_threshold(val_scores, options.pot_risk, options.pot_level),
    }


def nominal_false_alarm_rates(n_val: int, options: EvaluateOptions) -> dict[str, float]:
    """The false-alarm rate each label-free threshold promises on normal rows like the `n_val`
    validation rows: 1 - `val_quantile` for the quantile (at least 1 / (n_val + 1), a new row's
    chance to exceed the largest of n), `pot_risk` for peaks over threshold."""
    return {
        ThresholdMethod.quantile: max(1.0 - options.val_quantile, 1.0 / (n_val + 1)),
        ThresholdMethod.pot: options.pot_risk,
    }


def label_free_flags(
    val_scores: np.ndarray,
    test_scores: np.ndarray,
    threshold: float,
    options: EvaluateOptions,
    runs: np.ndarray | None = None,
) -> np.ndarray:
    """The test rows a label-free threshold from `val_scores` flags, in time order: those above it,
    or above it as it follows each run's scores (`threshold_follow` "median", "spread" or "iqr"), the rule the
    server applies (`evaluation.follow`; `runs` numbers each test row's run, None: one run)."""
    if not options.follows:
        return np.asarray(test_scores) > threshold
    follow = follow_of(options.threshold_follow, val_scores, threshold, options.follow_window)
    return follow.replay(test_scores, threshold, runs)


def flag_metrics(flags: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """`metrics.metrics_at` of flagged rows (`threshold`: the label-free threshold they came from)."""
    return metrics.metrics_at(np.asarray(flags, dtype=np.float64), labels, 0.5) | {"threshold": float(threshold)}


def calibration(by_method: dict[str, dict[str, float]], nominal: dict[str, float], n_normal: int) -> dict[str, Any]:
    """How well each label-free threshold keeps its promise on the test's normal rows.

    Args:
        by_method: Test metrics at each label-free threshold, by method.
        nominal: Each method's promised false-alarm rate (`nominal_false_alarm_rates`).
        n_normal: Normal test rows.

    Returns:
        `methods`: per method its nominal and observed false-alarm rates and their ratio;
        `better_calibrated`: the method whose ratio is nearest 1 on a log scale (no false alarm
        counted as half of one, so that a threshold flagging nothing is not perfect), or None
        without normal test rows to judge on.
    """
    methods = {
        str(method): {
            "nominal_false_alarm_rate": float(rate),
            "false_alarm_rate": by_method[str(method)]["false_alarm_rate"],
            "ratio": by_method[str(method)]["false_alarm_rate"] / rate,
        }
        for method, rate in nominal.items()
    }
    if n_normal == 0:
        return {"methods": methods, "better_calibrated": None}

    def log_error(method: str) -> float:
        observed = max(methods[method]["false_alarm_rate"], 0.5 / n_normal)
        return abs(float(np.log(observed / methods[method]["nominal_false_alarm_rate"])))

    return {"methods": methods, "better_calibrated": min(methods, key=log_error)}


def evaluate_scores(
    val_scores: np.ndarray,
    test_scores: np.ndarray,
    labels: np.ndarray,
    options: EvaluateOptions,
    runs: np.ndarray | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    """Thresholds, metrics and baselines from (smoothed) scores; no I/O.

    Args:
        runs: Each test row's run, for a threshold that follows each run's median (None: one run).

    Returns:
        The summary (see `run_evaluate`) without model and counts, the test sweep, and the test
        rows the deployed label-free threshold flags.
    """
    method = choice(ThresholdMethod, options.threshold_method, "--threshold-method")
    thresholds = label_free_thresholds(val_scores, options)
    n_positive = int(np.asarray(labels).sum())
    top_k = metrics.top_k_threshold(test_scores, n_positive)
    grid = metrics.threshold_grid(test_scores, options.n_thresholds, options.low_quantile, options.high_quantile)
    sweep = metrics.sweep_thresholds(test_scores, labels, np.union1d(grid, [*thresholds.values(), top_k]))
    flags = {
        str(name): label_free_flags(val_scores, test_scores, value, options, runs) for name, value in thresholds.items()
    }
    by_method = {name: flag_metrics(flags[name], labels, thresholds[name]) for name in flags}
    label_free = by_method[method]
    promised = nominal_false_alarm_rates(len(val_scores), options)[method]
    best = {name: float(value) for name, value in sweep.loc[sweep["fc1"].idxmax()].items()}
    summary = {
        "label_free": label_free,
        "threshold_method": str(method),
        "label_free_by_method": by_method,
        "calibration": calibration(
            by_method, nominal_false_alarm_rates(len(val_scores), options), len(labels) - n_positive
        ),
        "best_fc1": best,
        "top_k": metrics.metrics_at(test_scores, labels, top_k),
        # What keeping the promise on these rows would take and cost (read off the test labels).
        "at_promise": metrics.metrics_at(test_scores, labels, metrics.rate_threshold(test_scores, labels, promised))
        | {"promised_false_alarm_rate": promised},
        "pr_auc": metrics.average_precision(test_scores, labels),
        "baselines": metrics.baselines(labels, label_free["flagged_share"], options.seed),
        "confusion_matrix": {
            "categories": CONFUSION_CATEGORIES,
            "matrix": [
                [int(len(labels) - n_positive - label_free["fp"]), int(label_free["fp"])],
                [int(label_free["fn"]), int(label_free["tp"])],
            ],
        },
        "roc": _roc(sweep, len(labels) - n_positive),
        "threshold_follow": str(choice(ThresholdFollow, options.threshold_follow, "--threshold-follow")),
        "follow_window": own_follow(options)[1],
    }
    return summary, sweep, flags[method]


def detector_baseline(
    name: str,
    val_signal: np.ndarray,
    test_signal: np.ndarray,
    labels: np.ndarray,
    options: EvaluateOptions,
    runs: np.ndarray | None = None,
) -> dict[str, float]:
    """The model's thresholds and metrics for another detector's scores (the raw signal, PCA),
    keyed `<name>_fc1`, `<name>_f1`, `<name>_false_alarm_rate` (at the label-free threshold),
    `<name>_best_fc1`, `<name>_top_k_fc1`, `<name>_pr_auc`, and `<name>_fc1_at_promise` (at the
    threshold that flags the promised share of the test's normal rows: `evaluate_scores`' `at_promise`)."""
    threshold = label_free_thresholds(val_signal, options)[options.threshold_method]
    label_free = flag_metrics(label_free_flags(val_signal, test_signal, threshold, options, runs), labels, threshold)
    promised = nominal_false_alarm_rates(len(val_signal), options)[options.threshold_method]
    at_promise = metrics.metrics_at(test_signal, labels, metrics.rate_threshold(test_signal, labels, promised))
    grid = metrics.threshold_grid(test_signal, options.n_thresholds, options.low_quantile, options.high_quantile)
    best = metrics.sweep_thresholds(test_signal, labels, grid)["fc1"].max()
    top_k = metrics.top_k_threshold(test_signal, int(np.asarray(labels).sum()))
    return {
        f"{name}_fc1": label_free["fc1"],
        f"{name}_f1": label_free["f1"],
        f"{name}_false_alarm_rate": label_free["false_alarm_rate"],
        f"{name}_best_fc1": float(best),
        f"{name}_top_k_fc1": metrics.metrics_at(test_signal, labels, top_k)["fc1"],
        f"{name}_pr_auc": metrics.average_precision(test_signal, labels),
        f"{name}_fc1_at_promise": at_promise["fc1"],
    }


def choose_detector(summary: dict[str, Any], val_scored: pd.DataFrame, options: EvaluateOptions) -> DeployDecision:
    """The detector the gate judges and the deploy step serves, of the model and the classical
    detectors (`decision.gate_choice`: the highest Fc1 at the label-free threshold among those whose
    false alarms keep the threshold's promise within `promise_tolerance`, else of all). Its served
    threshold is the same method's on per-row validation scores (served rows are not smoothed).

    Args:
        summary: `evaluate_scores`' summary, with the detectors' `baselines`.
        val_scored: `score_split` of the validation rows, with every detector's columns.
        options: The threshold rule and the gate.
    """
    label_free, baselines = summary["label_free"], summary["baselines"]
    # Each detector's Fc1 at the threshold rule the gate judges, its false alarms there, and its Fc1 at
    # the promised false-alarm rate (read off the test labels: the like-for-like comparison).
    detectors = {
        MODEL: {
            "fc1": label_free["fc1"],
            "false_alarm_rate": label_free["false_alarm_rate"],
            "fc1_at_promise": summary["at_promise"]["fc1"],
        }
    }
    detectors |= {
        name: {
            "fc1": baselines[f"{name}_fc1"],
            "false_alarm_rate": baselines[f"{name}_false_alarm_rate"],
            "fc1_at_promise": baselines[f"{name}_fc1_at_promise"],
        }
        for name in (RAW_SIGNAL, PCA)
        if f"{name}_fc1" in baselines
    }
    promised = nominal_false_alarm_rates(len(val_scored), options)[options.threshold_method]
    chosen = gate_choice(detectors, promised, options.promise_tolerance, options.deploy_threshold)
    row_scores = val_scored["score" if chosen == MODEL else f"{chosen}_row"].to_numpy()
    evaluated = val_scored["smoothed_score" if chosen == MODEL else chosen].to_numpy()
    threshold = label_free_thresholds(row_scores, options)[options.threshold_method]
    return DeployDecision(
        fc1=detectors[chosen]["fc1"],
        threshold=threshold,
        evaluated_threshold=label_free_thresholds(evaluated, options)[options.threshold_method],
        smoothing_window=options.smoothing_window,
        val_quantile=options.val_quantile,
        threshold_method=options.threshold_method,
        detector=chosen,
        model_fc1=detectors[MODEL]["fc1"],
        false_alarm_rate=detectors[chosen]["false_alarm_rate"],
        promised_false_alarm_rate=promised,
        promise_tolerance=options.promise_tolerance,
        detectors=detectors,
        # What the server follows each stream's scores by (its per-row validation scores').
        follow=(
            follow_of(options.threshold_follow, row_scores, threshold, options.follow_window).to_dict()
            if options.follows
            else None
        ),
    )


def compare_follows(
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    options: EvaluateOptions,
    runs: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """What each `threshold_follow` rule gives on the same scores, over whole runs and, with a
    `follow_window`, over each run's newest rows, so that the gate can choose the rule
    (`gate_follow`) and a user sees the others on their own data: each detector's Fc1, point F1 and
    false alarms at its label-free threshold under that rule, and the detector the gate would then
    serve (`decision.gate_choice`).

    Args:
        scores: Detector name -> its (validation, test) evaluated scores, in time order.
        labels: The test labels.
        options: The run's options (their `threshold_follow` aside).
        runs: Each test row's run (None: one run), as for `label_free_flags`.

    Returns:
        One entry a rule and window, simplest first (every rule over whole runs, then each
        following rule over the window): `threshold_follow` (the rule), `follow_window` (0: whole
        runs), `detectors` (name -> {"fc1", "f1", "false_alarm_rate"}) and `served`.
    """
    rules = ThresholdFollow.rules()
    candidates = [(rule, 0) for rule in rules]
    if options.follow_window:
        candidates += [(rule, options.follow_window) for rule in rules if rule != ThresholdFollow.none]
    found_by_rule = []
    for rule, window in candidates:
        other = replace(options, threshold_follow=str(rule), follow_window=window)
        detectors = {}
        for name, (val, test) in scores.items():
            threshold = label_free_thresholds(val, other)[other.threshold_method]
            found = flag_metrics(label_free_flags(val, test, threshold, other, runs), labels, threshold)
            detectors[name] = {key: found[key] for key in ("fc1", "f1", "false_alarm_rate")}
        promised = nominal_false_alarm_rates(len(scores[MODEL][0]), other)[other.threshold_method]
        served = gate_choice(detectors, promised, other.promise_tolerance, other.deploy_threshold)
        found_by_rule.append(
            {"threshold_follow": str(rule), "follow_window": window, "detectors": detectors, "served": served}
        )
    return found_by_rule


def gate_follow(compared: list[dict[str, Any]], promised: float, options: EvaluateOptions) -> tuple[str, int]:
    """The rule and window `threshold_follow = "auto"` resolves to: the gate's order
    (`decision.gate_choice`) over every rule's detectors at once. Of the rules whose served detector
    keeps its promise within `promise_tolerance` and passes `deploy_threshold`, the one it serves
    with the highest Fc1; when none does, the highest Fc1 of all; a tie goes to the model, then to
    the simpler rule (none, median, spread, iqr, then the same over a window): a rule that keeps
    state per stream has to earn it, and one that forgets its run's older rows too.

    Args:
        compared: `compare_follows`' entries, simplest rule first.
        promised: The false-alarm rate the threshold method promises.
        options: The gate's `promise_tolerance` and `deploy_threshold`.
    """

    def rank(entry: dict[str, Any]) -> tuple[bool, float, bool]:
        served = entry["served"]
        found = entry["detectors"][served]
        return gate_rank(served, found, promised, options.promise_tolerance, options.deploy_threshold)

    best = max(rank(entry) for entry in compared)
    return next((entry["threshold_follow"], entry["follow_window"]) for entry in compared if rank(entry) == best)


def own_follow(options: EvaluateOptions) -> tuple[str, int]:
    """The rule and window a run's (resolved) options flag by, as `compare_follows` names them."""
    return options.threshold_follow, options.follow_window if options.follows else 0


def replay_watch(flags: np.ndarray, promised: float, tolerance: float) -> dict[str, Any]:
    """The server's watch on its threshold's promise (`serving.metrics.PromiseWatch`, the same
    blocks and rule) replayed over the served detector's flags on the test rows in time order,
    anomalies included, as the server would meet them: what an operator should expect of it.

    Returns:
        `block_rows`; `blocks` judged (a last, partial block is not); `broken_blocks`, those
        flagging more than `tolerance` times the promise; `warnings`, the lines the server would
        have logged (one as each run of broken blocks starts); `largest_share` flagged in a block
        (None without a whole block).
    """
    block = watch_block_rows(promised)
    count = len(flags) // block
    shares = np.asarray(flags[: count * block], dtype=np.float64).reshape(count, block).mean(axis=1)
    broken = np.array([tolerance > 0 and not keeps_promise(float(s), promised, tolerance) for s in shares], dtype=int)
    return {
        "block_rows": block,
        "blocks": count,
        "broken_blocks": int(broken.sum()),
        "warnings": int((np.diff(broken, prepend=0) == 1).sum()),
        "largest_share": float(shares.max()) if count else None,
    }


def results_table(
    val_scored: pd.DataFrame, test_scored: pd.DataFrame, threshold: float, test_flags: np.ndarray
) -> pd.DataFrame:
    """The validation rows then the test rows, as the results parquet holds them: `split`, the
    scores (not the per-row `<name>_row` ones), `label` (0 where a set has none) and `prediction`:
    on validation, above `threshold`; on test, `test_flags` (the deployed label-free rule's).

    Built a column at a time, each column taken out of both splits' frames as it is joined (they
    are left empty), so that the rows are held once plus one column, never twice.
    """
    n_val, n_test = len(val_scored), len(test_scored)
    index = val_scored.index.append(test_scored.index)
    # A Series of strings, typed: a bare object array would be inferred, through temporary arrays
    # of ~40 bytes a row.
    split = pd.Series(np.repeat(np.array(["val", "test"], dtype=object), [n_val, n_test]), index, object, copy=False)
    columns: dict[str, Any] = {"split": split}
    for name in [c for c in test_scored.columns if not c.endswith("_row")]:
        # A validation set may have no labels: 0 there (the test set always has them).
        val = val_scored.pop(name).to_numpy() if name in val_scored else np.zeros(n_val)
        test = test_scored.pop(name).to_numpy()
        columns[name] = np.concatenate([val, test]).astype(np.int8 if name == "label" else test.dtype, copy=False)
    for name in list(val_scored.columns):
        del val_scored[name]
    columns["prediction"] = (columns["smoothed_score"] > threshold).astype(np.int8)
    columns["prediction"][n_val:] = test_flags
    order = ["split", *[c for c in columns if c not in ("split", "label", "prediction")], "label", "prediction"]
    return pd.DataFrame({name: columns[name] for name in order}, index=index, copy=False)


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The headline numbers as one flat name -> number map (for KFP Metrics and run comparison)."""
    flat = {name: summary["label_free"][name] for name in SUMMARY_METRICS}
    flat |= {f"best_{name}": summary["best_fc1"][name] for name in SUMMARY_METRICS}
    flat |= {"top_k_fc1": summary["top_k"]["fc1"], "top_k_f1": summary["top_k"]["f1"]}
    flat |= {"fc1_at_promise": summary["at_promise"]["fc1"]}
    for method, values in summary["label_free_by_method"].items():
        flat |= {f"{method}_fc1": values["fc1"], f"{method}_false_alarm_rate": values["false_alarm_rate"]}
    flat |= {"pr_auc": summary["pr_auc"], **{f"baseline_{k}": float(v) for k, v in summary["baselines"].items()}}
    # The served detector's (the model's or a classical one's, see `choose_detector`).
    flat |= {"served_fc1": summary["deploy"]["fc1"], "served_false_alarm_rate": summary["deploy"]["false_alarm_rate"]}

    # The same under each threshold rule, the run's own included (named, so that runs of any
    # setting compare, `auto` whichever rule it chose).
    def named(entry: dict[str, Any]) -> str:  # "iqr", over a window of 30 rows "iqr_30"
        window = entry.get("follow_window", 0)
        return entry.get("threshold_follow", "none") + (f"_{window}" if window else "")

    by_rule = {named(summary): summary["deploy"]}
    by_rule |= {named(other): other["detectors"][other["served"]] for other in summary.get("other_follows", [])}
    for rule, served in by_rule.items():
        flat |= {
            f"follow_{rule}_served_fc1": served["fc1"],
            f"follow_{rule}_served_false_alarm_rate": served["false_alarm_rate"],
        }
    return flat | {name: float(value) for name, value in summary["counts"].items()}


def run_evaluate(
    model_dir: str,
    val_url: str,
    test_url: str,
    results_url: str,
    summary_url: str,
    report_url: str,
    options: EvaluateOptions,
) -> dict[str, Any]:
    """Score the scaled validation and test sets with the Model artifact and write the results
    parquet (timestamp, split, score, smoothed score, label, prediction, and each classical
    detector's smoothed score), the JSON summary and the HTML report.

    Returns:
        The summary: metrics at both thresholds, PR-AUC, baselines, confusion matrix, ROC
        points, counts, and `deploy` (the label-free threshold and its Fc1).

    Raises:
        InputError: A set is empty, lacks a channel or the label, or holds NaN.
    """
    from container_component_src.model.io import load_scripted
    from container_component_src.model.residual import ResidualDetector

    model, scaler = load_scripted(model_dir)
    channels = scaler["channels"]
    if options.label_column not in datasets.schema(test_url).names:
        raise InputError(f"test set {test_url} has no label column '{options.label_column}'")
    weights = channel_weights(model, len(channels))
    # PCA is fitted on the validation rows it also takes its threshold from (as the quantile of
    # the model's validation scores is): k << rows, so the in-sample error is barely smaller.
    # The model's channel handling: its weights, and its bounds on the channels left out.
    bounds = input_bounds(model)
    detectors = {RAW_SIGNAL: ResidualDetector.raw_signal(weights, bounds)}
    if len(channels) > 1:
        detectors[PCA] = fit_pca(val_url, channels, weights, bounds=bounds)
    common = (channels, options.smoothing_window, options.label_column)
    val_sums = ChannelSums()
    val_scored = score_split(model, val_url, *common, detectors=detectors, channel_sums=val_sums)
    # Per-row scores are for a served detector's threshold, fitted on validation: not kept for test.
    test_scored = score_split(model, test_url, *common, detectors=detectors, per_row=False)
    labels = test_scored["label"].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise InputError(f"label column '{options.label_column}' of {test_url} holds values other than 0 and 1")

    # The runs a following threshold follows: each segment for a model scaled per run (the server
    # tells them apart by their reference), else the test rows as one run (as one server process).
    runs = test_scored["segment"].to_numpy() if scaler.get("reference_rows") else None
    compared = compare_follows(
        {
            name: (val_scored[column].to_numpy(), test_scored[column].to_numpy())
            for name, column in {MODEL: "smoothed_score", **{name: name for name in detectors}}.items()
        },
        labels,
        options,
        runs,
    )
    setting = choice(ThresholdFollow, options.threshold_follow, "--threshold-follow")
    follow_window = options.follow_window
    if setting == ThresholdFollow.auto:
        promised = nominal_false_alarm_rates(len(val_scored), options)[options.threshold_method]
        rule, window = gate_follow(compared, promised, options)
        options = replace(options, threshold_follow=rule, follow_window=window)
    summary, sweep, flags = evaluate_scores(
        val_scored["smoothed_score"].to_numpy(), test_scored["smoothed_score"].to_numpy(), labels, options, runs
    )
    for name in detectors:
        summary["baselines"] |= detector_baseline(
            name, val_scored[name].to_numpy(), test_scored[name].to_numpy(), labels, options, runs
        )
    if PCA in detectors:
        summary["baselines"]["pca_components"] = int(detectors[PCA].components.shape[1])
    # The settings as given ("auto": the gate chose `threshold_follow` and `follow_window`), and
    # what the other rules give.
    summary["threshold_follow_setting"], summary["follow_window_setting"] = str(setting), follow_window
    own = own_follow(options)
    summary["other_follows"] = [e for e in compared if (e["threshold_follow"], e["follow_window"]) != own]
    events = event_table(labels, test_scored.index, test_scored["smoothed_score"].to_numpy())
    threshold = summary["label_free"]["threshold"]
    decision = choose_detector(summary, val_scored, options)
    n_val = len(val_scored)
    summary |= {
        "model": model_dir,
        "options": asdict(options),
        "channel_notes": describe_channels(scaler),
        "counts": {
            "val_rows": n_val,
            "test_rows": len(labels),
            "test_events": len(events),
            "anomaly_share": float(labels.mean()),
        },
        "deploy": decision.to_dict(),
        # What the deploy step serves in the model's place when a classical detector wins.
        **({"served_detector": detectors[decision.detector].to_dict()} if decision.detector != MODEL else {}),
    }
    summary["metrics"] = flat_metrics(summary)

    # The served detector's validation scores, for its flags below when it is not the model.
    served_val = None if decision.detector == MODEL else val_scored[decision.detector].to_numpy()
    results = results_table(val_scored, test_scored, threshold, flags)
    del val_scored, test_scored  # every row is in `results` once; memory grows with the rows
    test_rows = results.iloc[n_val:]
    # What an operator lives with: the alarms of the detector that is served.
    if decision.detector == MODEL:
        served_rows, served_events = test_rows, events
    else:
        served_scores = test_rows[decision.detector].to_numpy()
        served_flags = label_free_flags(served_val, served_scores, decision.evaluated_threshold, options, runs)
        # The columns the alarm counts read, the served detector's in the model's place (no copy of the rest).
        served_rows = pd.DataFrame(
            {
                "smoothed_score": served_scores,
                "prediction": served_flags.astype(np.int8),
                "label": test_rows["label"].to_numpy(),
                "segment": test_rows["segment"].to_numpy(),
            },
            index=test_rows.index,
            copy=False,
        )
        served_events = event_table(labels, test_rows.index, served_scores)
    outcomes = report.event_outcomes(served_events, served_rows)
    summary["operations"] = report.operations(served_rows, outcomes)
    summary["watch"] = replay_watch(
        served_rows["prediction"].to_numpy(), decision.promised_false_alarm_rate, options.promise_tolerance
    )
    summary["metrics"]["watch_warnings"] = float(summary["watch"]["warnings"])
    served = model if decision.detector == MODEL else detectors[decision.detector]
    sample = FalseAlarmSample.of((served_rows["prediction"].to_numpy() == 1) & (labels == 0), int(served.context))
    worst, view_ranges = worst_events(events, options.worst_events)
    # One more pass over the test rows reads both the worst events' rows and the false alarms'.
    pieces = rows_at(test_url, [*view_ranges, *sample.ranges], channels)
    views = event_views(model, channels, worst, pieces[: len(view_ranges)], flags)
    summary["false_alarms"] = {"detector": decision.detector} | explain_false_alarms(
        served,
        channels,
        sample,
        pieces[len(view_ranges) :],
        test_rows["segment"].to_numpy(),
        val_sums.means(decision.detector),
        scaler,
    )
    del pieces
    # Beside the other run-comparison figures: how much of the false alarms drifting channels carry.
    summary["metrics"]["false_alarm_drifting_share"] = summary["false_alarms"]["drifting_share"]
    summary["decision"] = {
        "gate": options.deploy_threshold,
        "deploy": bool(summary["deploy"]["fc1"] > options.deploy_threshold),
    }
    page = report.render_report(results, sweep, summary, events, views, options.dataset)

    # The classical detectors' (smoothed) scores beside the model's, row by row.
    storage.write_parquet(results, results_url, ["split", "score", "smoothed_score", "label", "prediction", *detectors])
    storage.write_json(summary, summary_url)
    with storage.atomic_write(report_url, "w") as handle:
        handle.write(page)
    return {"metrics": summary["metrics"], "deploy": summary["deploy"]}
