"""Label-free thresholds that might keep their promise on new data, measured beside the pipeline's
own (the quantile of all validation scores): the issue "alarms an operator can trust" found the
deployed threshold flagging 10-30x the normal rows it promises on real telemetry, because the
rows after validation do not look like it.

Candidates, each a rule an operator could run without labels:
- `newest_quantile`: the same quantile of only the newest validation rows (the nearest in time
  to what comes next).
- `spot_replay`: SPOT, and DSPOT with a moving mean (Siffer et al., KDD 2017), initialised on the
  validation scores and then replayed causally over the test rows in time order: each row is
  judged by the threshold of the rows before it, and normal rows above the initial level refit the
  tail, so the threshold follows the score distribution as rows arrive.
- `block_conformal`: conformal over time blocks instead of rows. Rows next to each other are not
  exchangeable; contiguous blocks of them more nearly are, so the calibration unit is a block:
  each validation block's own quantile, and the rule the order statistic of those that a new
  block's quantile stays under with the stated confidence.
- `weighted_conformal`: conformal p-values with weights that halve every `half_life` rows into the
  past (Barber, Candes, Ramdas and Tibshirani, "Conformal prediction beyond exchangeability",
  2023): the newest validation rows count most, and the coverage gap is bounded by how far the
  weighted rows are from the new ones.
- `spread_follow`: each run's scores standardised by the run's own median and upper-quartile
  spread (rows so far, replayed causally), the threshold the validation's in those units and
  never below it: the product's spread rule (`evaluation.follow.SpreadFollow`, on the lower
  quartile) with the quartile that follows a run's spread best, and anomalies too.
"""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from container_component_src.evaluation.metrics import tail_threshold


def newest_quantile(val_scores: np.ndarray, quantile: float, share: float) -> float:
    """The `quantile` of the newest `share` of the validation scores (given in time order)."""
    scores = np.asarray(val_scores, dtype=np.float64)
    newest = scores[len(scores) - max(1, round(len(scores) * share)) :]
    return float(np.quantile(newest, quantile))


def spot_replay(
    val_scores: np.ndarray, test_scores: np.ndarray, risk: float, level: float = 0.98, depth: int = 0
) -> np.ndarray:
    """The rows SPOT (`depth` 0) or DSPOT (a moving mean over the last `depth` normal scores
    subtracted first) flags, replayed over `test_scores` in time order after initialising on
    `val_scores`: a row above the current threshold is an alarm (left out of the model); a row
    above the initial level adds a peak and refits the tail; every normal row counts.

    Returns:
        The flag of each test row.
    """
    val = np.asarray(val_scores, dtype=np.float64)
    recent = deque(val[len(val) - depth :], maxlen=depth) if depth else None
    if depth:
        # Each validation score less the mean of the `depth` before it.
        windows = np.lib.stride_tricks.sliding_window_view(val, depth + 1)
        val = windows[:, -1] - windows[:, :-1].mean(axis=1)
    initial = float(np.quantile(val, level))
    peaks = list(val[val > initial] - initial)
    seen = len(val)
    threshold = tail_threshold(initial, np.asarray(peaks), seen, risk) or float(np.quantile(val, 1.0 - risk))
    flags = np.zeros(len(test_scores), dtype=bool)
    for row, score in enumerate(np.asarray(test_scores, dtype=np.float64)):
        value = score - (sum(recent) / len(recent)) if recent else score
        if value > threshold:
            flags[row] = True
            continue
        seen += 1
        if value > initial:
            peaks.append(value - initial)
            threshold = tail_threshold(initial, np.asarray(peaks), seen, risk) or threshold
        if recent is not None:
            recent.append(score)
    return flags


def block_conformal(val_scores: np.ndarray, quantile: float, blocks: int = 10, confidence: float = 0.9) -> float:
    """The threshold a new time block's `quantile` stays under with probability `confidence`,
    when the blocks, not the rows, are exchangeable.

    The validation scores (in time order) are cut into `blocks` contiguous blocks; with K blocks'
    quantiles, a new block's quantile is at most the ceil((K + 1) x confidence)-th smallest of them
    with that probability (the largest when that rank passes K): so at most `1 - quantile` of its
    normal rows are flagged, in `confidence` of the blocks to come.
    """
    parts = np.array_split(np.asarray(val_scores, dtype=np.float64), blocks)
    per_block = np.sort([np.quantile(part, quantile) for part in parts if part.size])
    rank = min(int(np.ceil((per_block.size + 1) * confidence)), per_block.size)
    return float(per_block[rank - 1])


def weighted_conformal(val_scores: np.ndarray, risk: float, half_life: float) -> float:
    """The threshold of the weighted conformal p-value: a new score s is flagged when
    (sum of weights of validation scores >= s, plus 1 for s itself) / (all weights plus 1) <= `risk`,
    the newest validation score weighing 1 and each older one half as much every `half_life` rows.

    Returns:
        The score above which rows are flagged (infinite when the weights are too few for any
        p-value to reach `risk`).
    """
    scores = np.asarray(val_scores, dtype=np.float64)
    weights = 0.5 ** (np.arange(scores.size)[::-1] / half_life)
    budget = risk * (weights.sum() + 1.0) - 1.0
    if budget < 0:
        return float("inf")
    order = np.argsort(scores)[::-1]
    # The most validation scores, from the top, whose weights fit the budget; the next one down is
    # the threshold (a score equal to it counts itself, so is not flagged).
    within = int(np.searchsorted(np.cumsum(weights[order]), budget, side="right"))
    return float(scores[order[within]]) if within < scores.size else float("-inf")


def spread_follow(
    val_scores: np.ndarray,
    test_scores: np.ndarray,
    quantile: float,
    runs: np.ndarray | None = None,
) -> np.ndarray:
    """Flags of the test scores (in time order), each row judged by the rows of its run before it:
    above max(q, m + k x (c - m)), with q the validation's `quantile`, m and c the median and upper
    quartile of the run's rows so far (a run's first row: q), and k the validation's own
    (q - median) / (quartile - median), so that a run like the validation keeps q. The upper
    quartile follows a run's spread best and moves once anomalies are a quarter of its rows (the
    product's lower quartile, which high scores cannot widen, only once they are half). `runs`
    numbers each test row's run (None: one run)."""
    val = np.asarray(val_scores, dtype=np.float64)
    base, middle = float(np.quantile(val, quantile)), float(np.median(val))
    share = 0.75
    spread = float(np.quantile(val, share)) - middle
    scores = np.asarray(test_scores, dtype=np.float64)
    if not spread > 0:  # nothing to measure a run's spread in: the quantile as it is
        return scores > base
    k = (base - middle) / spread
    seen: dict[object, list[float]] = {}
    flags = np.empty(scores.size, dtype=bool)
    for row, (score, run) in enumerate(
        zip(scores.tolist(), [None] * scores.size if runs is None else runs.tolist(), strict=True)
    ):
        before = seen.setdefault(run, [])
        threshold = base
        if before:
            # The lower quantiles of the rows so far, by rank (sorted as they come: causal).
            m, c = (before[int(p * (len(before) - 1))] for p in (0.5, share))
            threshold = max(base, m + k * (c - m))
        flags[row] = score > threshold
        bisect.insort(before, score)
    return flags
