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
"""

from __future__ import annotations

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
